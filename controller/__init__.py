"""Steering: a pure policy (steering.py) and the Ryu app that installs it (app.py)."""
