"""fwcluster-controller: the steering app under Ryu's ryu-manager, or os-ken's app
manager where os-ken is installed instead (controller/compat.py)."""
from __future__ import annotations

import os
import sys

APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app.py")


def main(argv: list[str] | None = None) -> int:
    from controller.compat import FRAMEWORK
    args = list(argv if argv is not None else sys.argv[1:])
    if FRAMEWORK == "ryu":
        from ryu.cmd import manager
        sys.argv = ["ryu-manager", *args, APP]
        return manager.main() or 0
    # os-ken 4 has no manager command: what ryu-manager does, for our options
    from os_ken import cfg, log
    from os_ken.base.app_manager import AppManager
    import os_ken.controller.controller  # noqa: F401  (registers the ofp_* options)
    log.early_init_log()
    cfg.CONF(args=args, project="os_ken")
    log.init_log()
    AppManager.run_apps([APP])
    return 0


if __name__ == "__main__":
    sys.exit(main())
