"""Make ryu 4.34 importable with eventlet 0.33 on Python 3.11.

ryu imports ``eventlet.wsgi.ALREADY_HANDLED``, which eventlet removed in
0.30.3; any sentinel object will do. Import this before anything of ryu.
"""
import eventlet.wsgi

if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
    eventlet.wsgi.ALREADY_HANDLED = object()
