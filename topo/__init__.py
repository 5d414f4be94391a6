"""Mininet topologies of the firewall cluster, and the code that runs them."""
