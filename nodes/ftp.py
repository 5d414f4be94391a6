"""Protocol-specific program code for FTP (the seed's second software entity).

It reads the control connection in both directions, reassembling lines that
span TCP segments, and finds the four ways a data connection is announced:
the client's PORT and EPRT commands, the server's 227 (PASV) and 229 (EPSV)
replies. For each it asks the gateway engine, through the Figure 9
interfaces, to modify state (an expectation), to synchronize it, and to
delay the announcing packet until that synchronization is done.

Over IPv6 (RFC 2428) only EPRT ``|2|`` and EPSV announce: PORT and 227 carry IPv4
addresses, so on an IPv6 control connection they create no expectation (counted
``ftp_ipv4_over_ipv6``; the line passes, as in Linux's nf_conntrack_ftp, which
looks for them on IPv4 only), and the data connection they announce is refused by
the rules; an EPRT whose family is not the control connection's is dropped
(``ftp_family_mismatch``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from nodes.conntrack import ORIGINAL, Entry, Expectation
from nodes.packet import PROTO_TCP, Packet, ip_bytes, key_tuple

MAX_LINE = 2048  # longer control lines are not commands we act on
_SEQ_MOD = 1 << 32
_227 = re.compile(rb"(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})")
_229 = re.compile(rb"\((.)\1\1(\d{1,5})\1\)")


class FtpSyntaxError(ValueError):
    """A PORT, EPRT, 227 or 229 line that does not parse."""


def _host_port(numbers: list[int]) -> tuple[bytes, int]:
    if len(numbers) != 6 or any(not 0 <= n <= 255 for n in numbers):
        raise FtpSyntaxError("need six numbers 0..255")
    port = numbers[4] * 256 + numbers[5]
    if port == 0:
        raise FtpSyntaxError("port 0")
    return bytes(numbers[:4]), port


def parse_port(args: bytes) -> tuple[bytes, int]:
    """``h1,h2,h3,h4,p1,p2`` of a PORT command: (address, port)."""
    try:
        return _host_port([int(x) for x in args.strip().split(b",")])
    except ValueError as err:
        raise FtpSyntaxError(f"bad PORT argument: {err}") from None


def parse_eprt(args: bytes) -> tuple[bytes, int]:
    """``|1|a.b.c.d|port|`` or ``|2|IPv6 address|port|`` of an EPRT command (RFC
    2428): (address, port); the address's length says its family."""
    args = args.strip()
    if len(args) < 7 or args[:1] != args[-1:]:
        raise FtpSyntaxError("bad EPRT delimiters")
    parts = args[1:-1].split(args[:1])
    if len(parts) != 3 or parts[0] not in (b"1", b"2"):
        raise FtpSyntaxError("EPRT needs |1|IPv4 address|port| or |2|IPv6 address|port|")
    try:
        addr = ip_bytes(parts[1].decode("ascii"))
        port = int(parts[2])
    except (ValueError, UnicodeDecodeError):
        raise FtpSyntaxError("bad EPRT address or port") from None
    if len(addr) != (4 if parts[0] == b"1" else 16):
        raise FtpSyntaxError("EPRT's address is not of the family it names")
    if not 0 < port < 65536:
        raise FtpSyntaxError("EPRT port out of range")
    return addr, port


def parse_227(line: bytes) -> tuple[bytes, int]:
    """The address and port of a ``227 Entering Passive Mode`` reply."""
    m = _227.search(line, 4)
    if not m:
        raise FtpSyntaxError("227 reply without h1,h2,h3,h4,p1,p2")
    return _host_port([int(x) for x in m.groups()])


def parse_229(line: bytes) -> int:
    """The port of a ``229 Entering Extended Passive Mode (|||port|)`` reply."""
    m = _229.search(line, 4)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise FtpSyntaxError("229 reply without (|||port|)")
    return int(m.group(2))


@dataclass
class FtpState:
    """Per control connection: next expected sequence number and line buffer."""

    next_seq: list = field(default_factory=lambda: [None, None])
    buf: list = field(default_factory=lambda: [b"", b""])


class FtpHelper:
    """Watches one control connection's packets; talks to the gateway engine."""

    name = "ftp"

    def inspect(self, engine, entry: Entry, direction: int, pkt: Packet, frame: bytes,
                now: float) -> str | None:
        """Process a segment's payload; return a drop reason or None."""
        st: FtpState = entry.helper_state or FtpState()
        entry.helper_state = st
        data = frame[pkt.payload_off:pkt.payload_end]
        nxt = st.next_seq[direction]
        start = pkt.seq
        if nxt is not None and start != nxt:
            behind = (nxt - start) % _SEQ_MOD
            if behind < _SEQ_MOD // 2:  # retransmission, maybe with new data after
                if behind >= len(data):
                    return None
                data, start = data[behind:], nxt
            else:  # a gap: what we buffered can no longer be completed
                engine.count("ftp_gap")
                st.buf[direction] = b""
        buf = st.buf[direction] + data
        lines = buf.split(b"\n")
        rest = lines.pop()
        if len(rest) > MAX_LINE:
            engine.count("ftp_line_too_long")
            rest = b""
        for line in lines:
            reason = self._line(engine, entry, direction, line.rstrip(b"\r"), now)
            if reason:
                return reason  # state not advanced: a retransmission is judged again
        st.buf[direction] = rest
        st.next_seq[direction] = (start + len(data)) % _SEQ_MOD
        return None

    def _line(self, engine, entry: Entry, direction: int, line: bytes,
              now: float) -> str | None:
        _, client, _, server, _ = key_tuple(entry.orig)
        ipv6 = len(client) == 16
        try:
            if direction == ORIGINAL:
                verb = line[:5].upper()
                if verb == b"PORT ":
                    if ipv6:
                        engine.count("ftp_ipv4_over_ipv6")
                        return None
                    addr, port = parse_port(line[5:])
                elif verb == b"EPRT ":
                    addr, port = parse_eprt(line[5:])
                else:
                    return None
                if len(addr) != len(client):
                    return "ftp_family_mismatch"
                if addr != client:
                    return "ftp_address_mismatch"
                src, dst = server, client  # active mode: the server connects back
            elif line.startswith(b"227 "):
                if ipv6:
                    engine.count("ftp_ipv4_over_ipv6")
                    return None
                addr, port = parse_227(line)
                if addr != server:
                    return "ftp_address_mismatch"
                src, dst = client, server
            elif line.startswith(b"229 "):
                port = parse_229(line)
                src, dst = client, server
            else:
                return None
        except FtpSyntaxError:
            return "ftp_malformed"
        if engine.table.expectations_full():
            return "expectation_table_full"
        exp = Expectation(PROTO_TCP, src, dst, port, entry.orig, now,
                          now + engine.table.timeouts.expectation, engine.node)
        engine.modify_state("expect", exp, now)
        ticket = engine.request_sync("ftp_data_announced", [exp], now)
        engine.request_delay(entry, ticket, now)
        engine.count("ftp_expectations")
        return None
