"""fwcluster-controller: ryu-manager running the steering app, on Python 3.11."""
from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    import controller.compat  # noqa: F401  (before ryu)
    from ryu.cmd import manager
    app = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app.py")
    sys.argv = ["ryu-manager", *(argv if argv is not None else sys.argv[1:]), app]
    return manager.main() or 0


if __name__ == "__main__":
    sys.exit(main())
