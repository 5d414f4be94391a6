"""A node's data ports: packet sockets, with an mmap'ed TX ring where possible.

``RingPort`` queues frames to send in a PACKET_MMAP (TPACKET_V2) TX ring and
hands a whole batch to the kernel with one ``send``; it receives with one
``recv`` a frame. (A TPACKET_V2 RX ring was tried and dropped: after the ring
overflowed under a flood, the reader here lost step with the kernel and
stalled; tests/integration/test_ports.py floods a node and checks it forwards again.) ``SocketPort`` is the plain
socket: one ``recv`` and one ``send`` a frame. Both offer ``recv_batch(limit)``,
``send(frame)``, ``flush()`` and ``fileno()``.
"""
from __future__ import annotations

import mmap
import socket
import struct

ETH_P_ALL = 0x0003
ETH_P_IP, ETH_P_ARP, ETH_P_IPV6 = 0x0800, 0x0806, 0x86DD
SO_ATTACH_FILTER = 26
SOL_PACKET = 263
PACKET_VERSION, PACKET_TX_RING = 10, 13
PACKET_IGNORE_OUTGOING = 23
PACKET_STATISTICS = 6  # struct tpacket_stats {tp_packets, tp_drops}; reading resets it
TPACKET_V2 = 1
TP_STATUS_AVAILABLE, TP_STATUS_SEND_REQUEST, TP_STATUS_WRONG_FORMAT = 0, 1, 4
TX_DATA_OFFSET = 32  # TPACKET2_HDRLEN - sizeof(struct sockaddr_ll)
_U32 = struct.Struct("I")


def _raw_socket() -> socket.socket:
    """A packet socket that hears nothing until ``_bind`` names its interface.

    Made with ETH_P_ALL, a packet socket hears every interface of the namespace
    from its creation until bind(); what it queues in between is read as the
    port's own (the sync heartbeats of eth2 reached a restarted node's data port
    so, and were carried in HOME_QUERYs). With protocol 0 it hears nothing, and
    bind() with ETH_P_ALL starts it on one interface (packet(7))."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    return sock


def _bind(sock: socket.socket, ifname: str, protocol: int = ETH_P_ALL) -> None:
    sock.bind((ifname, protocol))


def _other_ethertypes_only(sock: socket.socket) -> None:
    """A classic BPF filter on ``sock``: every frame but IPv4, IPv6 and ARP (those
    have sockets of their own, ``by_ethertype``)."""
    import ctypes
    code = [(0x28, 0, 0, 12),            # ldh [12]: the ethertype
            (0x15, 3, 0, ETH_P_IP),      # jeq: refuse
            (0x15, 2, 0, ETH_P_IPV6),
            (0x15, 1, 0, ETH_P_ARP),
            (0x06, 0, 0, 0x40000),       # ret: the whole frame
            (0x06, 0, 0, 0)]             # ret 0: not for this socket
    prog = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                    struct.pack("HL", len(code), ctypes.addressof(prog)))


def by_ethertype(port: "SocketPort") -> None:
    """Hear ``port``'s IPv4, IPv6 and ARP frames on sockets bound to each, its socket
    keeping the rest. The kernel hands a frame to sockets bound to one protocol only
    after its ingress hooks, so a frame the node's kernel fast path forwards
    (nodes/shell/fastpath.py) never reaches them; one bound to every protocol hears
    it before (packet(7), __netif_receive_skb_core)."""
    _other_ethertypes_only(port.sock)
    for protocol in (ETH_P_IP, ETH_P_IPV6, ETH_P_ARP):
        sock = _raw_socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        _bind(sock, port.ifname, protocol)
        sock.setblocking(False)
        port.rx.insert(0, sock)


class SocketPort:
    """A non-blocking packet socket on one interface; one system call a frame.

    Both kinds of port queue what ``send`` is given and hand it to the kernel at
    ``flush``: the node lets a batch's frames out only after the sync records of the
    state they changed (nodes/shell/node.py, ``pump``)."""

    kind = "socket"

    def __init__(self, ifname: str):
        self.ifname = ifname
        self.sock = _raw_socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        _bind(self.sock, ifname)
        self.sock.setblocking(False)
        self.rx = [self.sock]  # the sockets frames are read from (by_ethertype adds some)
        self.tx_errors = 0
        self.rx_errors = 0
        self._rx_dropped = 0
        self.rx_truncated = 0
        self.queued: list[bytes] = []

    def rx_dropped(self) -> int:
        """Frames the kernel dropped before this socket read them (its receive queue was
        full), since the port opened: PACKET_STATISTICS, accumulated (each read resets it)."""
        for sock in self.rx:
            try:
                _, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
            except OSError:
                continue
            self._rx_dropped += drops
        return self._rx_dropped

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_batch(self, limit: int, sock: socket.socket | None = None) -> list[bytes]:
        """Up to ``limit`` frames waiting in ``sock`` (one of ``rx``; default the first)."""
        out = []
        recv = (sock or self.rx[0]).recv
        for _ in range(limit):
            try:
                out.append(recv(65536))
            except BlockingIOError:
                break
            except OSError:  # ENETDOWN while the link is down
                self.rx_errors += 1
                break
        return out

    def send(self, frame: bytes) -> bool:
        """Queue a frame for the next ``flush``."""
        self.queued.append(frame)
        return True

    def flush(self) -> int:
        """Send the queued frames; the number that the kernel refused."""
        if not self.queued:
            return 0
        frames, self.queued = self.queued, []
        send, failed = self.sock.send, 0
        for frame in frames:
            try:
                send(frame)
            except OSError:  # ENOBUFS when the queue drops, ENETDOWN when the link is down
                failed += 1
        self.tx_errors += failed
        return failed

    def describe(self) -> dict:
        return {"kind": self.kind, "tx_errors": self.tx_errors}

    def close(self) -> None:
        for sock in self.rx:
            sock.close()


class RingPort(SocketPort):
    """A packet socket whose sends go through a TPACKET_V2 TX ring."""

    kind = "txring"

    def __init__(self, ifname: str, frames: int = 4096, frame_size: int = 2048):
        self.ifname = ifname
        self.sock = _raw_socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        block = max(mmap.PAGESIZE, frame_size)
        req = struct.pack("IIII", block, frames * frame_size // block, frame_size, frames)
        self.sock.setsockopt(SOL_PACKET, PACKET_TX_RING, req)
        _bind(self.sock, ifname)
        self.sock.setblocking(False)
        self.rx = [self.sock]
        self.frames, self.frame_size = frames, frame_size
        self.ring = mmap.mmap(self.sock.fileno(), frames * frame_size)
        self.tx_base = 0
        self.tx_next = 0
        self.tx_pending = 0
        self.tx_errors = 0
        self.rx_errors = 0
        self._rx_dropped = 0
        self.rx_truncated = 0

    def send(self, frame: bytes) -> bool:
        size = len(frame)
        if size > self.frame_size - TX_DATA_OFFSET:
            self.tx_errors += 1
            return False
        off = self.tx_base + self.tx_next * self.frame_size
        status = _U32.unpack_from(self.ring, off)[0]
        if status not in (TP_STATUS_AVAILABLE, TP_STATUS_WRONG_FORMAT):
            self.flush()  # the kernel still holds this frame: the ring is full
            status = _U32.unpack_from(self.ring, off)[0]
            if status not in (TP_STATUS_AVAILABLE, TP_STATUS_WRONG_FORMAT):
                self.tx_errors += 1
                return False
        self.ring[off + TX_DATA_OFFSET:off + TX_DATA_OFFSET + size] = frame
        _U32.pack_into(self.ring, off + 4, size)  # tp_len
        _U32.pack_into(self.ring, off, TP_STATUS_SEND_REQUEST)
        self.tx_next = self.tx_next + 1 if self.tx_next + 1 < self.frames else 0
        self.tx_pending += 1
        return True

    def flush(self) -> int:
        """Ask the kernel to send every queued frame (one system call); 0: the ring does
        not say which of them the kernel refused."""
        if not self.tx_pending:
            return 0
        self.tx_pending = 0
        try:
            self.sock.send(b"")
        except OSError:  # as in SocketPort.flush: counted, never fatal
            self.tx_errors += 1
        return 0

    def describe(self) -> dict:
        """Ring position and a histogram of TX frame status words."""
        counts: dict = {}
        for i in range(self.frames):
            st = _U32.unpack_from(self.ring, self.tx_base + i * self.frame_size)[0]
            counts[st] = counts.get(st, 0) + 1
        return {"kind": self.kind, "tx_errors": self.tx_errors, "tx_next": self.tx_next,
                "tx_status": counts}

    def close(self) -> None:
        self.ring.close()
        for sock in self.rx:
            sock.close()


IFF_UP, IFF_RUNNING = 0x1, 0x40
SIOCGIFFLAGS = 0x8913


def link_up(sock: socket.socket, ifname: str) -> bool:
    """True when ``ifname`` (in this network namespace) is up and has carrier."""
    import fcntl
    try:
        raw = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, struct.pack("16sH", ifname.encode(), 0))
    except OSError:
        return False
    flags = struct.unpack_from("16sH", raw)[1]
    return bool(flags & IFF_UP and flags & IFF_RUNNING)


def open_port(ifname: str, ring: bool = True) -> SocketPort:
    """A RingPort where the kernel allows one, else a SocketPort."""
    if ring:
        try:
            return RingPort(ifname)
        except OSError:
            pass
    return SocketPort(ifname)
