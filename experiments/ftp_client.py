"""FTP sessions from an outside host: download, verify, record.

Each session opens a control connection, announces the data connection in
one of the four ways (PASV, EPSV, PORT, EPRT), downloads one file and checks
its SHA-256. One JSON line a session goes to --out: mode, outcome, the
control connection's ports, the announced data address, timings (data_setup:
seconds from announcing the data connection to the server's answer to RETR,
the connection's handshake among them), the longest
silence during the download (max_gap, s) and bytes per 0.1 s of wall time
(bins: {int(t / 0.1): bytes}).

A throttled client (--throttle) reads slowly and keeps its data socket's
receive buffer to about BUFFERED seconds of reading, so the sender's bytes
cross the firewall at the reading pace (not in one burst into a large
buffer) and a stall in the network shows as a silence in the reading.
"""
from __future__ import annotations

import argparse
import ftplib
import hashlib
import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

MODES = ("PASV", "EPSV", "PORT", "EPRT")
BIN = 0.1  # seconds: the resolution of goodput over time
BUFFERED = 0.05  # seconds of reading a throttled client's receive buffer holds
MIN_RCVBUF = 4096  # bytes (the kernel doubles it for its own bookkeeping)


class AnnouncingFTP(ftplib.FTP):
    """ftplib with the data connection announced by a chosen command."""

    def __init__(self, mode: str, timeout: float, rcvbuf: int = 0, pause: float = 0.0):
        super().__init__(timeout=timeout)
        self.mode, self.rcvbuf, self.pause = mode, rcvbuf, pause
        self.announced: tuple[str, int] | None = None
        self.data_conn: tuple | None = None
        self.data_setup: float | None = None
        self.t_announced: float | None = None
        self.set_pasv(mode in ("PASV", "EPSV"))

    def makepasv(self):
        if self.mode == "EPSV":
            host, port = ftplib.parse229(self.sendcmd("EPSV"), self.sock.getpeername())
        else:
            host, port = ftplib.parse227(self.sendcmd("PASV"))
        self.announced = (host, port)
        self._announced()
        return host, port

    def _announced(self) -> None:
        """The data connection is announced; wait before it opens (a fault can come now)."""
        self.t_announced = time.time()
        if self.pause:
            time.sleep(self.pause)

    def makeport(self):
        sock = socket.socket(self.af)  # the control connection's family
        if self.rcvbuf:  # set before the handshake: the window scale is chosen then
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.bind((self.sock.getsockname()[0], 0))
        sock.listen(1)
        host, port = sock.getsockname()[:2]
        self.announced = (host, port)
        if self.mode == "EPRT":
            self.sendeprt(host, port)
        else:
            self.sendport(host, port)
        sock.settimeout(self.timeout)
        self._announced()
        return sock

    def ntransfercmd(self, cmd, rest=None):
        start = time.time()
        conn, size = super().ntransfercmd(cmd, rest)
        self.data_setup = time.time() - start - self.pause  # announce, connect, RETR answered
        if self.rcvbuf:  # the window stops growing past it: the sender keeps our pace
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        self.data_conn = (*conn.getsockname()[:2], *conn.getpeername()[:2])
        return conn, size


def session(sid: int, server: str, path: str, sha256: str, mode: str,
            timeout: float, throttle: float = 0.0, pause: float = 0.0) -> dict:
    """Run one FTP session; return its record."""
    rec = {"session": sid, "mode": mode, "server": server, "file": path, "outcome": "fail",
           "error": None, "t_start": time.time()}
    rcvbuf = max(MIN_RCVBUF, int(throttle * BUFFERED)) if throttle else 0
    ftp = AnnouncingFTP(mode, timeout, rcvbuf, pause)
    digest = hashlib.sha256()
    try:
        ftp.connect(server, 21)
        rec["control"] = [*ftp.sock.getsockname()[:2], server, 21]
        rec["t_connected"] = time.time()
        ftp.login()
        ftp.voidcmd("TYPE I")
        size = [0]

        bins: dict[int, int] = {}  # bytes received per BIN seconds of wall time
        last = [None]

        def feed(chunk):
            now = time.time()
            digest.update(chunk)
            size[0] += len(chunk)
            slot = int(now / BIN)
            bins[slot] = bins.get(slot, 0) + len(chunk)
            if last[0] is not None:  # the longest silence while downloading: a stall
                rec["max_gap"] = max(rec.get("max_gap", 0.0), now - last[0])
            last[0] = now
            if "t_first_byte" not in rec:
                rec["t_first_byte"] = now
                print(f"session {sid} transferring {ftp.data_conn}", flush=True)
            if throttle:  # a slow reader: TCP flow control slows the sender down
                time.sleep(len(chunk) / throttle)
                last[0] = time.time()  # a stall is time spent waiting, not reading slowly

        rec["bins"] = bins  # filled in as the download goes, also if it fails
        ftp.retrbinary(f"RETR {path}", feed)
        rec["bytes"] = size[0]
        ok = digest.hexdigest() == sha256
        rec["outcome"] = "ok" if ok else "checksum_mismatch"
        ftp.quit()
    except (OSError, EOFError, ftplib.Error) as err:
        rec["error"] = f"{type(err).__name__}: {err}"
        ftp.close()
    rec["announced"] = list(ftp.announced) if ftp.announced else None
    rec["data"] = list(ftp.data_conn) if ftp.data_conn else None
    rec["data_setup"] = ftp.data_setup
    rec["t_announced"] = ftp.t_announced
    rec["t_end"] = time.time()
    rec.setdefault("bytes", sum(rec.get("bins", {}).values()))
    return rec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", required=True,
                        help="JSON file: a list of {session, server, file, sha256, mode}")
    parser.add_argument("--out", required=True, help="append one JSON line a session here")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--throttle", type=float, default=0.0,
                        help="read at most this many bytes a second (long downloads)")
    parser.add_argument("--pause-before-data", type=float, default=0.0,
                        help="seconds between announcing the data connection and opening it")
    args = parser.parse_args(argv)
    with open(args.plan, encoding="utf-8") as fh:
        plan = json.load(fh)
    lock = threading.Lock()
    start = time.monotonic()
    plan.sort(key=lambda item: item.get("at", 0.0))  # a ramp's sessions in their order
    with open(args.out, "a", encoding="utf-8") as out, \
            ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        def run(item):
            wait = start + item.get("at", 0.0) - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # its start time on the ramp (late if every worker was busy)
            rec = session(item["session"], item["server"], item["file"], item["sha256"],
                          item["mode"], args.timeout, args.throttle, args.pause_before_data)
            with lock:
                out.write(json.dumps(rec) + "\n")
                out.flush()
                print(f"session {rec['session']} {rec['mode']} {rec['outcome']}", flush=True)
        list(pool.map(run, plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
