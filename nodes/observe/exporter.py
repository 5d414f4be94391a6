"""A Prometheus exporter for the firewall nodes: GET /metrics asks every node.

The nodes live in Mininet's network namespaces; their control sockets are
files, which the root namespace can reach. So the exporter runs beside the
Cluster (a thread with an HTTP server on 127.0.0.1) and, on each scrape, asks
every node for its counters and answers in the text format (nodes/observe/metrics.py).
A node that does not answer within a short deadline (hung or down) shows as
``fwcluster_node_up{node="fwN"} 0``.
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from nodes.observe.client import ask, socket_path
from nodes.observe.metrics import CONTENT_TYPE, exposition, node_families

ASK_TIMEOUT = 0.5  # seconds a scrape waits for one node


def serve_metrics(port: int, render, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """An HTTP server in a daemon thread answering /metrics with ``render()``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server name)
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics here")
                return
            body = render().encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # scrapes every few seconds: no log line each
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"metrics:{port}", daemon=True).start()
    return server


class NodeExporter:
    """Serves the nodes' counters of one running cluster."""

    def __init__(self, cluster, port: int):
        self.cluster = cluster
        try:
            self.server = serve_metrics(port, self.render)
        except OSError as err:
            raise RuntimeError(f"metrics port {port}: {err.strerror} (choose another with "
                               "--metrics-port)") from None
        self.url = f"http://127.0.0.1:{port}/metrics"

    def render(self) -> str:
        stats = {}
        for node in self.cluster.node_names():
            try:
                stats[node] = ask(socket_path(self.cluster.run_id, node), "stats", ASK_TIMEOUT)
            except (OSError, ValueError):
                stats[node] = None
        return exposition(node_families(stats))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
