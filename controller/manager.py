"""fwcluster-controller: ryu-manager running the steering app, on Python 3.11.

ryu 4.34 imports ``eventlet.wsgi.ALREADY_HANDLED``, which eventlet 0.33
no longer has; define it before ryu's manager is imported.
"""
from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    import eventlet.wsgi
    if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
        eventlet.wsgi.ALREADY_HANDLED = object()
    from ryu.cmd import manager
    app = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app.py")
    sys.argv = ["ryu-manager", *(argv if argv is not None else sys.argv[1:]), app]
    return manager.main() or 0


if __name__ == "__main__":
    sys.exit(main())
