"""Firewall node: the pure engine, and the node's I/O shell apart from it.

Pure (time comes in as an argument; no socket, clock, Mininet or Ryu):
``packet`` (parsing), ``rules``, ``conntrack`` (the connection table),
``ftp`` (protocol-specific code), ``engine`` (the gateway engine),
``groups`` (backup groups), ``syncproto`` (the wire format), ``sync/`` (the
sync engine: channel, replication, membership, hold), ``failure`` (failure
detection, shared with the controller), ``home`` (forwarding to the home
node), ``settings`` (every sync setting, one schema), ``delayline``,
``samples``. I/O: ``shell/`` (the ``fw-node`` process). Looking in:
``observe/`` (fw-inspect, metrics, the consistency check).
"""
