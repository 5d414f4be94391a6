"""The real-world peer of the Python nodes: kernel firewall nodes.

A kernel node is the same bump in the wire as a Python node (eth0 outside,
eth1 inside, eth2 sync), but the Linux kernel does the work: a bridge of eth0
and eth1 inside the node's namespace, bridged IPv4 through netfilter's forward
hook (``bridge-nf-call-iptables``), an nftables ruleset in the inet family made
from the same rule file (``nft.py``), conntrack with the FTP helper attached
explicitly, and conntrackd replicating the conntrack table on the sync network
(``conntrackd.py``). ``agent.py`` is the node's process: it sets this up, runs
conntrackd, beacons to the steering controller and commits the external cache
when the controller asks. nft.py and conntrackd.py are pure (text in, text out).
"""
