"""The firewall node's I/O shell: packet sockets, the sync socket, the control socket.

Nothing here decides: frames go to the gateway engine (nodes/engine.py),
sync messages to the sync engine (nodes/sync/), and what they return goes
out. ``node.py`` is the process (``fw-node``), ``ports.py`` the packet
sockets, ``control.py`` the answers of the control socket, ``config.py``
the cluster's sync config file.
"""
