"""The OpenFlow framework the controller app runs on: Ryu where it runs, os-ken where not.

Ryu 4.34, the last release, runs only on Python 3.11 and older (its eventlet
0.33 fails on 3.12); os-ken, the fork OpenStack maintains, has the same API under
``os_ken`` and runs on newer Pythons. ``make setup`` installs one of the two
(pyproject.toml's markers choose by Python version); this module imports what
is installed, Ryu first, and names it in ``FRAMEWORK`` (the run's manifest
records it). ``FWCLUSTER_FRAMEWORK=ryu`` or ``os_ken`` asks for one.

Ryu imports ``eventlet.wsgi.ALREADY_HANDLED``, which eventlet removed in 0.30.3;
any sentinel object will do, so it is set before Ryu is imported.
"""
from __future__ import annotations

import importlib
import importlib.util
import os

FRAMEWORKS = ("ryu", "os_ken")


def _choose() -> str:
    asked = os.environ.get("FWCLUSTER_FRAMEWORK")
    if asked and asked not in FRAMEWORKS:
        raise SystemExit(f"FWCLUSTER_FRAMEWORK={asked!r} is not one of {', '.join(FRAMEWORKS)}")
    for name in (asked,) if asked else FRAMEWORKS:
        if importlib.util.find_spec(name) is None:
            continue
        if name == "ryu":
            import eventlet.wsgi
            if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
                eventlet.wsgi.ALREADY_HANDLED = object()
        try:
            importlib.import_module(f"{name}.base.app_manager")
            return name
        except ImportError:
            continue
    raise SystemExit("the controller needs Ryu (Python 3.11) or os-ken: run make setup")


FRAMEWORK = _choose()
app_manager = importlib.import_module(f"{FRAMEWORK}.base.app_manager")
App = getattr(app_manager, "RyuApp", None) or app_manager.OSKenApp  # os-ken renamed it
ofp_event = importlib.import_module(f"{FRAMEWORK}.controller.ofp_event")
_handler = importlib.import_module(f"{FRAMEWORK}.controller.handler")
CONFIG_DISPATCHER, MAIN_DISPATCHER = _handler.CONFIG_DISPATCHER, _handler.MAIN_DISPATCHER
set_ev_cls = _handler.set_ev_cls
hub = importlib.import_module(f"{FRAMEWORK}.lib.hub")
nicira_ext = importlib.import_module(f"{FRAMEWORK}.ofproto.nicira_ext")
ofproto_v1_3 = importlib.import_module(f"{FRAMEWORK}.ofproto.ofproto_v1_3")
