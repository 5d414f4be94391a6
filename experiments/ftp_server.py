"""An FTP server (pyftpdlib) for the inside hosts: anonymous, read-only."""
from __future__ import annotations

import argparse
import logging
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import ThreadedFTPServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True, help="folder to serve")
    parser.add_argument("--address", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=21)
    parser.add_argument("--passive-ports", default="50000-59999")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    authorizer = DummyAuthorizer()
    authorizer.add_anonymous(args.root, perm="elr")
    handler = type("Handler", (FTPHandler,), {})
    handler.authorizer = authorizer
    lo, hi = (int(x) for x in args.passive_ports.split("-"))
    handler.passive_ports = range(lo, hi + 1)
    handler.timeout = 30
    server = ThreadedFTPServer((args.address, args.port), handler)
    print(f"ftp server ready on {args.address}:{args.port} serving {args.root}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
