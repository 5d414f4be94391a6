"""Looking into a running cluster: the control-socket client, fw-inspect, metrics.

``client.py`` finds and asks a node's control socket; ``inspect.py`` is
``fw-inspect`` (like ``conntrack -L`` and ``conntrackd -s``); ``metrics.py``
formats counters in the Prometheus text format (pure); ``exporter.py`` serves
them over HTTP for the nodes (asked at scrape time) and the controller.
"""
