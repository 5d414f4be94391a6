"""Firewall node: the gateway engine (pure) and the node's packet I/O shell."""
