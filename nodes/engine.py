"""The gateway engine (the seed's first software entity, Figure 9).

It processes packets (stateful screening: rules for a connection's opening
packet, the connection table for the rest), stores state, and offers the
protocol-specific code three interfaces: ``modify_state``, ``request_sync``
and ``request_delay``. Synchronization itself is a pluggable ``SyncPort``;
``NoSync`` is a cluster whose nodes share nothing.

Pure: ``process(frame, ingress, now)`` returns a verdict; nothing here does I/O.
"""
from __future__ import annotations

from collections import Counter, deque
from typing import Protocol

from nodes.conntrack import (CLOSE, ESTABLISHED, ORIGINAL, REPLIED, REPLY, SYN_SENT,
                             TIME_WAIT, UNREPLIED, CommonState, ConnectionTable, Entry,
                             Expectation, Timeouts, tcp_next)
from nodes.defrag import Reassembly
from nodes.fastpath import FastPath
from nodes.ftp import FtpHelper
from nodes.packet import (ECHO_REPLY, ECHO_REQUEST, ERRORS, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6,
                          ICMPV6_MLD, ICMPV6_ND, KEY4, KEY6, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP,
                          TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Packet, checksums_ok, key_fields,
                          key_str, key_tuple, parse, parse_ipv4, parse_ipv6, quoted_key)
from nodes.rules import RuleSet
from nodes.samples import percentiles
from nodes.settings import DEFAULT
from nodes.tcpwindow import INVALID, new_window, options
from nodes.tcpwindow import check as check_window

# Verdicts of ``process``: ACCEPT (send it on), DROP (counted by reason), HOLD (kept until
# a synchronization completes; ``release`` gives it back), ASK (mode home: no state here,
# the frame went to the home port, which finds the flow's home node and forwards it).
ACCEPT, DROP, HOLD, ASK = 0, 1, 2, 3
OUTSIDE, INSIDE = 0, 1
_NOT_SIMPLE = TCP_SYN | TCP_FIN | TCP_RST
# Drop reasons of frames that are neither IP nor ARP: a fixed set, so outside frames
# cannot make new reasons (and metric series) up.
_ETHERTYPE_DROPS = {-1: "truncated_eth", 0x8100: "ethertype_vlan"}


class SyncPort(Protocol):
    """What the gateway engine needs of a synchronization mechanism."""

    def state_changed(self, kind: str, obj: object, now: float) -> None:
        """State was modified on this node (a predetermined action)."""

    def request_sync(self, reason: str, objs: list, now: float) -> object:
        """Start synchronizing ``objs``; return a ticket for ``done``."""

    def done(self, ticket: object, now: float) -> bool:
        """True once the synchronization behind ``ticket`` is complete."""

    wants_windows: bool  # window changes of my connections are to be replicated

    def window_changed(self, entry: Entry) -> None:
        """The TCP window of my connection ``entry`` moved (sent as the sync's policy says)."""


class HomePort(Protocol):
    """Where a frame without state here goes in mode home (nodes/home.py)."""

    def unknown(self, frame: bytes, ingress: int, key: bytes, now: float) -> None:
        """Forward ``frame`` to its home node, asking the cluster for it if unknown."""


class NoSync:
    """No synchronization: every request is complete at once, nothing is sent."""

    wants_windows = False

    def state_changed(self, kind: str, obj: object, now: float) -> None:
        return None

    def request_sync(self, reason: str, objs: list, now: float) -> object:
        return None

    def done(self, ticket: object, now: float) -> bool:
        return True


class _Held:
    """Packets of one connection waiting for a synchronization to complete."""

    __slots__ = ("ticket", "start", "deadline", "frames")

    def __init__(self, ticket: object, start: float, deadline: float):
        self.ticket, self.start, self.deadline, self.frames = ticket, start, deadline, deque()


class GatewayEngine:
    """Stateful screening for one firewall node."""

    def __init__(self, node: str, rules: RuleSet, timeouts: Timeouts | None = None,
                 sync: SyncPort | None = None, hold_timeout: float = DEFAULT.hold_timeout,
                 max_entries: int = 1_000_000, max_events: int = 100_000,
                 checksum: bool = True, drop_log_rate: int = 1000, max_expected: int = 1,
                 early_drop: bool = True, tcp_liberal: bool = False, tcp_loose: bool = False,
                 tcp_window_check: bool = True, fastpath: bool = False):
        """``checksum``: verify checksums of packets that create or change state (as
        ``nf_conntrack_checksum``); ``drop_log_rate``: refused openings logged a second; ``max_expected``:
        pending expectations per master connection (the FTP helper's 1 in Linux);
        ``early_drop``: a full table evicts its oldest unassured entry (False: refuse);
        ``tcp_liberal``: pass out-of-window segments (``nf_conntrack_tcp_be_liberal``);
        ``tcp_loose``: a bare ACK the rules allow picks a connection up mid-stream
        (``nf_conntrack_tcp_loose``; Linux's default is on, the testbed's off: the seeds'
        problem is a node without state refusing a connection's packets);
        ``tcp_window_check``: track TCP windows (False: new connections are not
        window-checked, as OpenWrt's ``nf_conntrack_tcp_no_window_check``, which costs
        nothing per segment); ``fastpath``: the node's kernel forwards established
        connections (nodes/fastpath.py; the shell puts them into the kernel)."""
        self.node = node
        self.rules = rules
        self.table = ConnectionTable(timeouts, max_entries)
        # Timeouts.for_state(), as a dict and a default: this is looked up for every packet
        self.expiry, self.icmp_timeout = self.table.timeouts.by_state, self.table.timeouts.icmp
        self.sync = sync or NoSync()
        self.hold_timeout = hold_timeout
        self.helpers = {"ftp": FtpHelper()}
        self.counters: Counter = Counter()
        self.drops: Counter = Counter()
        self.packets_in = [0, 0]
        self.bytes_in = [0, 0]
        self.events: list[tuple] = []  # (time, kind, fields); drained by the shell
        self.max_events = max_events
        self.checksum = checksum
        self.max_expected = max_expected
        self.early_drop_on = early_drop
        self.tcp_liberal, self.tcp_loose = tcp_liberal, tcp_loose
        self.tcp_window_check = tcp_window_check
        self.drop_log_rate = drop_log_rate
        self._drop_log = [float("-inf"), 0]  # start of this second, refused openings logged
        self.held: dict[Entry, _Held] = {}
        self.defrag = Reassembly()  # fragments wait here until their datagram is whole
        self.fragments_out: list[tuple[bytes, int]] = []  # accepted fragments, to send
        self.home: HomePort | None = None  # mode home: frames without state go here (ASK)
        self.hold_times: deque = deque(maxlen=100_000)  # seconds each hold lasted
        self.offload = FastPath(node)
        self._offloading = False
        self.fastpath = fastpath

    @property
    def fastpath(self) -> bool:
        """Offload established connections to the kernel (``set fastpath=on|off``);
        switched off, every offloaded connection is withdrawn."""
        return self._offloading

    @fastpath.setter
    def fastpath(self, on: bool) -> None:
        self._offloading = self.offload.on = bool(on)
        if not on:
            self.offload.withdraw_all("switched_off")

    # -- packet processing --------------------------------------------------
    def process(self, frame: bytes, ingress: int, now: float, forwarded: bool = False) -> int:
        """Decide one frame that arrived on ``ingress``: ACCEPT, DROP, HOLD or ASK.

        ``forwarded``: another node sent it here as the flow's home node; with no
        state for it here it is dropped, never asked about again."""
        self.packets_in[ingress] += 1
        self.bytes_in[ingress] += len(frame)
        et = (frame[12] << 8) | frame[13] if len(frame) >= 14 else -1  # ethertype(), inlined
        if et == ETH_P_IP:
            pkt = parse_ipv4(frame)
        elif et == ETH_P_IPV6:
            pkt = parse_ipv6(frame)
        elif et == ETH_P_ARP:
            self.counters["arp_passed"] += 1
            return ACCEPT
        else:
            return self._drop(_ETHERTYPE_DROPS.get(et, "ethertype_other"))
        if pkt.__class__ is str:
            if pkt == "fragment":
                return self._fragment(frame, ingress, now, forwarded)
            return self._drop(pkt)
        key, proto, by_key = pkt.key, pkt.proto, self.table.by_key
        entry, direction = by_key.get(key), ORIGINAL  # table.lookup, inlined
        if entry is None:  # a reply, or a new connection
            entry, direction = by_key.get((KEY4 if len(key) == 13 else KEY6).pack(
                proto, pkt.dst, pkt.dport, pkt.src, pkt.sport)), REPLY
        if entry is not None and entry.expires <= now and entry.owner == self.node:
            self._destroy(entry, now, "timeout")  # a backup copy goes when its owner says
            entry = None
        if entry is None:
            return self._open(pkt, frame, ingress, now, forwarded)
        if entry.more is not None and entry.extra is not None and "adopted_at" in entry.extra:
            extra = entry.extra  # its first packet here since failover; the mark may be
            adopted = extra["adopted_at"]  # shared (read-only): replaced, not changed
            entry.extra = {k: v for k, v in extra.items() if k != "adopted_at"} or None
            self._event(now, "failover_first_packet", key=key_str(entry.orig),
                        after_adoption_ms=round((now - adopted) * 1000, 3))
        verified = not self.checksum  # each frame's checksums are computed once at most
        ignored = False  # in the window's slack: passed, but it changes no state (Linux's IGNORE)
        if proto == PROTO_TCP:
            step = None
            if entry.state != ESTABLISHED or pkt.flags & _NOT_SIMPLE:
                if not verified and not checksums_ok(frame):
                    return self._drop("bad_checksum")  # it must not change the state
                verified = True
                if entry.fast:  # SYN, FIN or RST of an offloaded connection: back here,
                    self.offload.withdraw(entry, "flags")  # its window learnt anew
                if (pkt.flags & (TCP_SYN | TCP_ACK) == TCP_SYN and direction == ORIGINAL
                        and entry.state in (TIME_WAIT, CLOSE)):
                    self._destroy(entry, now, "reopened")  # port reuse: a new connection
                    return self._open(pkt, frame, ingress, now, forwarded)
                step = tcp_next(entry.state, entry.fin_seen, direction, pkt.flags)
                if step.__class__ is str:
                    return self._drop(step)
            window = entry.window
            if window is not None:  # the TCP window (nodes/tcpwindow.py); of a connection
                # of mine, a move goes to the sync (window_sync "change" or "schedule")
                verdict = check_window(window, direction, pkt, frame, entry.state,
                                       self.tcp_liberal)
                if not verdict and self.sync.wants_windows and entry.owner == self.node:
                    self.sync.window_changed(entry)
                if verdict == INVALID:
                    if not verified and not checksums_ok(frame):
                        return self._drop("bad_checksum")  # damaged, not out of window
                    return self._drop("tcp_out_of_window")
                if verdict:
                    ignored = True
                    self.counters["tcp_window_ignored"] += 1
            if step is not None and not ignored:
                if step[0] != entry.state:
                    entry.state, entry.fin_seen = step
                    self.table.state_changed(entry, now)
                    self.sync.state_changed("update", entry, now)
                else:
                    entry.fin_seen = step[1]
        elif direction != ORIGINAL and entry.state == UNREPLIED:
            if not verified and not checksums_ok(frame):
                return self._drop("bad_checksum")  # nor may the reply that assures it
            verified = True
            entry.state = REPLIED
            self.table.state_changed(entry, now)
            self.sync.state_changed("update", entry, now)
        if entry.owner != self.node and not entry.seen_here:
            entry.seen_here = True  # one session, packets on two nodes
            self.sync.state_changed("multi_node", entry, now)
        if direction == ORIGINAL:
            entry.packets_orig += 1
            entry.bytes_orig += pkt.length
        else:
            entry.packets_reply += 1
            entry.bytes_reply += pkt.length
        if not ignored:
            entry.expires = now + self.expiry.get((proto, entry.state), self.icmp_timeout)
        if entry.helper is not None and pkt.payload_end > pkt.payload_off:
            if not verified and not checksums_ok(frame):
                return self._drop("bad_checksum")  # the helper reads only what arrived intact
            reason = self.helpers[entry.helper].inspect(self, entry, direction, pkt, frame, now)
            if reason:
                return self._drop(reason)
        held = self.held.get(entry)
        if held is not None:
            held.frames.append((frame, ingress))
            self.counters["packets_held"] += 1
            return HOLD
        if self._offloading and not entry.fast:
            self.offload.consider(entry, False, self.sync, now)
        return ACCEPT

    def _fragment(self, frame: bytes, ingress: int, now: float, forwarded: bool) -> int:
        """A fragment waits for its datagram (HOLD); the whole datagram is judged as one
        packet, and if it is accepted its fragments go out as they came, from
        ``fragments_out`` (nodes/defrag.py: reassembly with Linux's bounds)."""
        done = self.defrag.add(frame, ingress, now)
        self._count_lost_fragments()
        if done is None:
            return HOLD
        if done.__class__ is str:
            return self._drop(done)
        before = dict(self.drops)
        verdict = self.process(done.frame, ingress, now, forwarded)
        self.packets_in[ingress] -= 1  # counted once, as the fragment it arrived as
        self.bytes_in[ingress] -= len(done.frame) - len(frame)
        if verdict == ACCEPT:
            self.fragments_out.extend(done.fragments)
            self.counters["fragments_forwarded"] += len(done.fragments)
            return HOLD
        for reason, n in list(self.drops.items()):  # the datagram's drop: every fragment's
            if n != before.get(reason, 0):
                self.drops[reason] += len(done.fragments) - 1
        return verdict

    def _count_lost_fragments(self) -> None:
        """Fragments queued earlier and dropped with their datagram, as drops."""
        if self.defrag.lost:
            self.drops.update(self.defrag.lost)
            self.defrag.lost.clear()

    def take_fragments(self) -> list[tuple[bytes, int]]:
        """The fragments of accepted datagrams, with the port each came in on."""
        out, self.fragments_out = self.fragments_out, []
        return out

    def _icmp_error(self, pkt: Packet, frame: bytes, now: float) -> int:
        """An ICMP error is admitted as related to the connection whose packet it
        quotes, and only then, as Linux conntrack's RELATED: whatever the rules say
        of ICMP, and addressed to that packet's sender (the error goes back to it;
        Linux checks the same). Its checksum is verified: it is judged by what it
        quotes. The connection's entry is not refreshed by it."""
        quoted = quoted_key(frame, pkt.payload_off, pkt.payload_end,
                            6 if pkt.proto == PROTO_ICMPV6 else 4)
        if quoted is None:
            return self._drop("icmp_error_truncated", pkt, now)
        if self.checksum and not checksums_ok(frame):
            return self._drop("bad_checksum")
        entry, _ = self.table.lookup(quoted)
        if entry is None or entry.expires <= now:
            return self._drop("icmp_error_no_entry", pkt, now)
        if pkt.dst != key_tuple(quoted)[1]:  # the quoted packet's source
            return self._drop("icmp_error_misdirected", pkt, now)
        self.counters["icmp_errors_related"] += 1
        return ACCEPT

    def _unknown(self, reason: str, pkt: Packet, frame: bytes, ingress: int, now: float,
                 forwarded: bool) -> int:
        """No state here: drop, or in mode home hand it to the home port."""
        if forwarded:
            return self._drop("home_forwarded_no_state", pkt, now)
        if self.home is not None:
            self.counters[f"home_asked_{reason}"] += 1  # counted, as a drop would be
            self.home.unknown(frame, ingress, pkt.key, now)
            return ASK
        return self._drop(reason, pkt, now)

    def _open(self, pkt: Packet, frame: bytes, ingress: int, now: float,
              forwarded: bool = False) -> int:
        """A packet with no entry: admit it by expectation or rule, or drop it."""
        proto = pkt.proto
        mid_stream = False  # a TCP connection picked up without its handshake (tcp_loose)
        if proto == PROTO_TCP and pkt.flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) != TCP_SYN:
            if not (self.tcp_loose and pkt.flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN)
                    == TCP_ACK):
                return self._unknown("tcp_no_entry", pkt, frame, ingress, now, forwarded)
            mid_stream = True
        if proto in (PROTO_ICMP, PROTO_ICMPV6) and pkt.icmp_type != ECHO_REQUEST[proto]:
            if pkt.icmp_type == ECHO_REPLY[proto]:
                return self._unknown("icmp_no_entry", pkt, frame, ingress, now, forwarded)
            if pkt.icmp_type in ERRORS[proto]:
                return self._icmp_error(pkt, frame, now)
            if proto == PROTO_ICMPV6 and pkt.icmp_type in ICMPV6_ND:
                self.counters["nd_passed"] += 1  # the link's own, as ARP
                return ACCEPT
            if proto == PROTO_ICMPV6 and pkt.icmp_type in ICMPV6_MLD:
                self.counters["mld_passed"] += 1
                return ACCEPT
            rule = self.rules.match(proto, pkt.src, pkt.dst, 0)  # stateless
            return ACCEPT if rule and rule.action == "accept" else self._drop("policy", pkt, now)
        if self.checksum and not checksums_ok(frame):
            return self._drop("bad_checksum")  # no state for what did not arrive intact
        if self.table.full() and not self.early_drop(now):
            return self._drop("table_full", pkt, now)
        exp = None if mid_stream else self.table.take_expectation(proto, pkt.src, pkt.dst,
                                                                   pkt.dport, now)
        if exp is not None:
            rule_no, helper, related = 0, exp.helper, exp.master
            self.sync.state_changed("unexpect", exp, now)  # admitted once, cluster-wide
        else:
            rule = self.rules.match(proto, pkt.src, pkt.dst, pkt.dport)
            if rule is None or rule.action != "accept":
                return self._unknown("policy", pkt, frame, ingress, now, forwarded)
            rule_no, helper, related = rule.lineno, rule.helper, None
        state = (ESTABLISHED if mid_stream else SYN_SENT) if proto == PROTO_TCP else UNREPLIED
        entry = self.table.new_entry(pkt.key, state, now, self.node, rule=rule_no,
                                     helper=helper, related_to=related)
        entry.packets_orig, entry.bytes_orig = 1, pkt.length
        if proto == PROTO_TCP and self.tcp_window_check:
            self._new_window(entry, pkt, frame, mid_stream)
        self.counters["entries_created"] += 1
        self._event(now, "new", entry=entry.as_dict(now),
                    via="expectation" if exp else f"rule {rule_no}")
        self.sync.state_changed("new", entry, now)
        return ACCEPT

    def _new_window(self, entry: Entry, pkt: Packet, frame: bytes, mid_stream: bool) -> None:
        """The window state of a new connection, from its first segment (Linux's
        ``tcp_new``, then ``tcp_in_window`` on the same segment)."""
        opts = pkt.l4 + 20
        scale, flags = (0, 0) if mid_stream else options(frame, opts, pkt.payload_off)
        end = (pkt.seq + pkt.payload_end - pkt.payload_off + (not mid_stream)) & 0xFFFFFFFF
        entry.window = new_window(end, pkt.window, scale, flags, mid_stream)
        if mid_stream:
            self.counters["tcp_picked_up"] += 1
        # the first segment is checked too (no window notice: the entry goes out as "new")
        check_window(entry.window, ORIGINAL, pkt, frame, entry.state, self.tcp_liberal)

    def early_drop(self, now: float) -> bool:
        """The table is full: evict its oldest unassured entry (Linux's early drop)."""
        victim = self.table.early_drop() if self.early_drop_on else None
        if victim is None:
            return False
        self.counters["early_drops"] += 1
        if victim.owner == self.node:  # a copy goes silently; my own, cluster-wide
            self._event(now, "destroy", entry=victim.as_dict(now), why="early_drop")
            self.sync.state_changed("destroy", victim, now)
        return True

    def _drop(self, reason: str, pkt: Packet | None = None, now: float = 0.0) -> int:
        """Count a drop by reason; log it (at most ``drop_log_rate`` a second) when it
        refused a connection's opening."""
        self.drops[reason] += 1
        if pkt is not None:
            start, logged = self._drop_log
            if now - start >= 1.0:
                self._drop_log = [now, 0]
            elif logged >= self.drop_log_rate:
                self.counters["drop_events_suppressed"] += 1
                return DROP
            self._drop_log[1] += 1
            self._event(now, "drop", reason=reason, key=key_str(pkt.key),
                        tuple=key_fields(pkt.key))
        return DROP

    def _event(self, now: float, kind: str, **fields) -> None:
        if len(self.events) < self.max_events:
            self.events.append((now, kind, fields))
        else:
            self.counters["events_suppressed"] += 1

    def _destroy(self, entry: Entry, now: float, why: str) -> None:
        self.table.remove(entry)
        if entry.fast:
            self.offload.withdraw(entry, "destroyed")
        self._event(now, "destroy", entry=entry.as_dict(now), why=why)
        self.sync.state_changed("destroy", entry, now)

    def is_home(self, frame: bytes, now: float) -> tuple | None:
        """The key of ``frame`` if this node is its home: it holds the connection,
        or the expectation that admits it (a related connection announced here)."""
        pkt = parse(frame)
        if pkt is None or pkt.__class__ is str:
            return None
        entry, _ = self.table.lookup(pkt.key)
        if entry is not None and entry.owner == self.node:
            return entry.orig
        if self.table.find_expectation(pkt.proto, pkt.src, pkt.dst, pkt.dport, now):
            return pkt.key
        return None

    # -- the Figure 9 interfaces for protocol-specific code ---------------
    def modify_state(self, kind: str, obj: object, now: float) -> None:
        """Store state on behalf of protocol code: ``expect`` or ``common``."""
        if kind == "expect" and isinstance(obj, Expectation):
            master, _ = self.table.lookup(obj.master)
            while master is not None and len(master.expectations or ()) >= self.max_expected:
                old = master.expectations.pop(0)  # the oldest gives way, as in Linux
                self.table.unexpect(old)
                self.counters["expectations_evicted"] += 1
                self.sync.state_changed("unexpect", old, now)
            self.table.expect(obj)
            self._event(now, "expect", expectation=obj.as_dict(now))
        elif kind == "common" and isinstance(obj, CommonState):
            self.table.common[obj.name] = obj
            self._event(now, "common", name=obj.name, owner=obj.owner, size=len(obj.value))
        else:
            raise ValueError(f"unknown state modification {kind!r}")
        self.sync.state_changed(kind, obj, now)

    def request_sync(self, reason: str, objs: list, now: float) -> object:
        """Ask the synchronization mechanism to send ``objs`` now."""
        self.counters["sync_requests"] += 1
        return self.sync.request_sync(reason, objs, now)

    def request_delay(self, entry: Entry, ticket: object, now: float) -> None:
        """Hold this and later packets of ``entry`` until ``ticket`` is done."""
        if ticket is None or self.sync.done(ticket, now) or entry in self.held:
            return
        self.held[entry] = _Held(ticket, now, now + self.hold_timeout)

    def release(self, now: float) -> list[tuple[bytes, int]]:
        """Held frames whose synchronization completed or timed out, in order."""
        out: list[tuple[bytes, int]] = []
        for entry, held in list(self.held.items()):
            if self.sync.done(held.ticket, now):
                self.counters["holds_completed"] += 1
            elif now >= held.deadline:
                self.counters["holds_timed_out"] += 1
            else:
                continue
            self.hold_times.append(now - held.start)
            out.extend(held.frames)
            del self.held[entry]
        return out

    # -- housekeeping --------------------------------------------------------
    def expire(self, now: float, incremental: bool = False) -> int:
        """Remove idle entries and expectations; return how many went. ``incremental``:
        of the entries, only the sweep's next slice (ConnectionTable.expire)."""
        self.defrag.expire(now)
        self._count_lost_fragments()
        dead, gone = self.table.expire(now, self.node, incremental)
        for entry in dead:
            if entry.fast:
                self.offload.withdraw(entry, "expired")
            self._event(now, "destroy", entry=entry.as_dict(now), why="timeout")
            self.sync.state_changed("destroy", entry, now)
        self.counters["entries_expired"] += len(dead)
        self.counters["expectations_expired"] += len(gone)
        return len(dead) + len(gone)

    def idle_timeout(self, entry: Entry) -> float:
        """Seconds ``entry`` may stay idle in its state."""
        return self.expiry.get((entry.orig[0], entry.state), self.icmp_timeout)

    def drain_events(self) -> list[tuple]:
        """Hand the pending events to the caller and forget them."""
        events, self.events = self.events, []
        return events

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def stats(self, now: float) -> dict:
        """Counters as the inspection command shows them (conntrackd -s)."""
        return {
            "node": self.node,
            "entries": len(self.table),
            "expectations": self.table.n_expectations,
            "packets_in": {"outside": self.packets_in[OUTSIDE], "inside": self.packets_in[INSIDE]},
            "bytes_in": {"outside": self.bytes_in[OUTSIDE], "inside": self.bytes_in[INSIDE]},
            "drops": dict(self.drops),
            "counters": dict(self.counters),
            "held_connections": len(self.held),
            "hold_ms": percentiles(self.hold_times),
            "fragments_queued": self.defrag.queued(),
            "reassembly": dict(self.defrag.counters),
            "fastpath": self.offload.stats(),
        }

    def dump(self, now: float, entries: bool = True) -> dict:
        """The connection table and expectations (conntrack -L, -L expect); without
        ``entries`` all but the connections (a long dump writes them in slices)."""
        return {
            "node": self.node,
            "entries": [e.as_dict(now) for e in self.table.entries()] if entries else [],
            "expectations": [x.as_dict(now) for xs in self.table.expectations.values()
                             for x in xs],
            "common": [{"name": c.name, "owner": c.owner, "bytes": len(c.value)}
                       for c in self.table.common.values()],
        }
