"""conntrackd's configuration for a kernel node, and what its outputs say. Pure.

Which conntrackd mode stands for which of the seed's sync modes (README,
"Kernel nodes"):

- ``none``: no conntrackd; each node has its own conntrack table only.
- ``ondemand`` -> FT-FW with two nodes: every state change is sent when the kernel
  reports it (ctnetlink events), reliably (sequence numbers, acks, resend); the
  seed's on-demand sync with every trigger on. With three or more nodes ->
  NOTRACK: the same events, best effort. FT-FW tracks one sequence per link, and
  on one multicast group with three nodes updates went missing here (2 of 8
  sequential passive FTP sessions failed, their control connection on one node
  only; NOTRACK: 8 of 8, on every node). ``conntrackd = "ftfw"`` asks for it anyway.
- ``combined`` -> ALARM: changes are sent at once and every entry again each
  ``RefreshTime`` (the seed's combined mode with full periodic rounds), best effort.
- ``periodic`` -> ALARM too, the nearest conntrackd has: it is *not* the seed's
  pure periodic mode (ALARM also sends each change at once; conntrackd has no
  mode that only sends at intervals).
- ``notrack`` (the ``conntrackd`` setting) -> NOTRACK: every change sent once,
  best effort, no sequence tracking.

Every mode replicates every entry to every node (one multicast group on the sync
link: conntrackd has no backup groups) and there is no hold: what a setting
would need of these is refused with one line (``SettingsError``).
"""
from __future__ import annotations

import re

from nodes.settings import SettingsError, SyncSettings

MODES = ("ftfw", "alarm", "notrack")
MODE_OF = {"ondemand": "ftfw", "combined": "alarm", "periodic": "alarm"}
GROUP, GROUP_PORT = "225.0.0.50", 3781  # conntrackd's own group (not the project's 3780)
# settings a kernel node takes from the spec; any other one given is refused
MEANINGFUL = {"mode", "interval", "heartbeat", "dead_after", "startup_grace", "replication",
              "periodic", "window_sync"}
# window_sync -> conntrackd's TCPWindowTracking: "scale" sends the window scales and lets
# the kernel learn the rest from the next segments of a committed entry; "off" commits
# entries with the liberal flag (conntrackd's default). It never sends the window itself.
WINDOW_TRACKING = {"scale": "On", "off": "Off"}


def given(full: dict) -> dict:
    """Of a full set of sync settings (a spec's, every field filled in), the mode and
    those that differ from their defaults: what ``conntrackd_mode`` judges."""
    defaults = SyncSettings().as_dict()
    return {k: v for k, v in full.items()
            if k == "mode" or (k in defaults and v != defaults[k])}


def conntrackd_mode(sync: dict, n: int, explicit: str | None = None) -> str | None:
    """The conntrackd mode for these sync settings (as given, not defaulted), or None
    for no conntrackd; SettingsError (one line) for what conntrackd cannot mean."""
    mode = sync.get("mode", "ondemand")
    if explicit is not None and explicit not in MODES:
        raise SettingsError(f"conntrackd {explicit!r}: use one of {', '.join(MODES)}")
    if mode == "none":
        if explicit:
            raise SettingsError(f"conntrackd {explicit!r} with sync mode none: "
                                "set a sync mode or leave conntrackd out")
        return None
    if mode not in MODE_OF:
        raise SettingsError(f"sync mode {mode!r} has no conntrackd counterpart on kernel nodes "
                            "(use none, ondemand, periodic or combined)")
    extra = sorted(set(sync) - MEANINGFUL)
    if extra:
        name = extra[0]
        raise SettingsError(f"sync {name} = {sync[name]!r}: conntrackd has no such setting "
                            f"(kernel nodes replicate every entry to every node, no hold); "
                            f"leave it out for node = \"kernel\"")
    if sync.get("replication", "full") != "full":
        raise SettingsError(f"sync replication {sync['replication']!r}: conntrackd sends every "
                            f"entry to every node (k = {n - 1}); use replication \"full\" or "
                            "leave it out for node = \"kernel\"")
    if sync.get("periodic", "full") != "full":
        raise SettingsError("sync periodic \"differential\": conntrackd's ALARM re-sends every "
                            "entry; use \"full\" or leave it out for node = \"kernel\"")
    window = sync.get("window_sync", "off")
    if window not in WINDOW_TRACKING:
        raise SettingsError(f"sync window_sync {window!r}: conntrackd never sends a TCP "
                            "window, only its scales (\"scale\", TCPWindowTracking on) or "
                            "nothing (\"off\"); use one of those for node = \"kernel\"")
    interval = sync.get("interval", 1)
    if (explicit or MODE_OF[mode]) == "alarm" and (interval < 1 or interval != int(interval)):
        raise SettingsError(f"sync interval {interval}: conntrackd's RefreshTime is whole "
                            "seconds (1 or more)")
    if explicit:
        return explicit
    if mode == "ondemand" and n > 2:
        return "notrack"  # FT-FW is a two-node protocol on one group (see above)
    return MODE_OF[mode]


def check_window_check(enabled: bool) -> None:
    """Mainline Linux always tracks TCP windows: a kernel node cannot be told not to."""
    if not enabled:
        raise SettingsError("tcp_window_check false: Linux has no switch to stop tracking "
                            "TCP windows (OpenWrt patches one in); use tcp_liberal for "
                            "node = \"kernel\"")


def check_cache(mode: str | None, external_cache: bool) -> None:
    """ALARM keeps what it hears in its external cache; only FT-FW and NOTRACK can
    write it into the kernel table at once (DisableExternalCache on)."""
    if mode == "alarm" and not external_cache:
        raise SettingsError("external_cache false: conntrackd's ALARM mode always keeps the "
                            "others' entries in its external cache (use sync ondemand, or "
                            "external_cache true)")


def config(mode: str, name: str, address: str, interface: str, lock: str, socket: str,
           log: str, interval: int = 1, external_cache: bool = True,
           window_sync: str = "off") -> str:
    """conntrackd.conf for one node: its own lock file and UNIX socket (one daemon per
    network namespace), no systemd, multicast on the sync link, FTP expectations.

    ``external_cache``: the others' entries wait in conntrackd's external cache until
    a commit puts them into the kernel (keepalived's primary-backup setup); False:
    they go into the kernel table as they arrive (conntrackd's multiprimary setup,
    where any node may see any connection's packets)."""
    check_cache(mode, external_cache)
    cache = f"DisableExternalCache {'off' if external_cache else 'on'}"
    body = {"ftfw": [cache],
            "alarm": [f"RefreshTime {int(interval)}", f"CacheTimeout {max(180, 3 * int(interval))}"],
            "notrack": ["DisableInternalCache off", cache]}[mode]
    return "\n".join([
        f"# conntrackd for {name} ({mode}), written by the testbed (nodes/kernel/conntrackd.py)",
        "Sync {",
        f"    Mode {mode.upper()} {{",
        *(f"        {line}" for line in body),
        "    }",
        "    Multicast {",
        f"        IPv4_address {GROUP}",
        f"        Group {GROUP_PORT}",
        f"        IPv4_interface {address}",
        f"        Interface {interface}",
        "        SndSocketBuffer 1249280",
        "        RcvSocketBuffer 1249280",
        "        Checksum on",
        "    }",
        "    Options {",
        f"        TCPWindowTracking {WINDOW_TRACKING.get(window_sync, 'Off')}",
        "        ExpectationSync {",
        "            ftp",
        "        }",
        "    }",
        "}",
        "General {",
        "    Systemd off",
        "    HashSize 8192",
        "    HashLimit 131072",
        f"    LogFile {log}",
        "    Syslog off",
        f"    LockFile {lock}",
        "    UNIX {",
        f"        Path {socket}",
        "    }",
        "    NetlinkBufferSize 2097152",
        "    NetlinkBufferSizeMaxGrowth 8388608",
        "    Filter From Userspace {",
        "        Protocol Accept {",
        "            TCP",
        "            UDP",
        "            ICMP",
        "        }",
        "        Address Ignore {",
        "            IPv4_address 127.0.0.1",
        f"            IPv4_address {address.rsplit('.', 1)[0]}.0/24",
        "        }",
        "    }",
        "}",
    ]) + "\n"


_FIELD = re.compile(r"(\w+(?:-\w+)?)=(\S+)")
_PROTO = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
_TUPLE = ("src", "dst", "sport", "dport", "type", "code", "id")


def _tuples(line: str) -> list[dict]:
    """The key=value fields of one line, split into tuples where a tuple field repeats."""
    tuples, current = [], {}
    for key, value in _FIELD.findall(line):
        if key in current and key in _TUPLE:
            tuples.append(current)
            current = {}
        current[key] = value
    return tuples + [current]


def _key(name: str, t: dict) -> str:
    """One direction as the Python node's dump prints it (nodes/packet.py key_str;
    ICMP keyed as parse_ipv4 keys it: see _fields)."""
    f = _fields(_PROTO.get(name, 0), t)
    return f"{name} src={f['src']} dst={f['dst']} sport={f['sport']} dport={f['dport']}"


def parse_conntrack(listing: str, node: str | None = None) -> list[dict]:
    """``conntrack -L`` lines as entries shaped like the Python node's dump (state,
    orig, reply, timeout, packets and bytes per direction with nf_conntrack_acct,
    helper; owner: the node whose kernel holds it)."""
    out = []
    for line in listing.splitlines():
        words = line.split()
        if len(words) < 4 or words[0] not in _PROTO:
            continue
        proto = _PROTO[words[0]]
        rest = words[2:4]  # the timeout and TCP's state; an event of a destroy has neither
        timeout = int(rest[0]) if rest[0].isdigit() else 0
        named = [w for w in rest if "=" not in w and not w.isdigit()]
        state = named[0] if proto == 6 and named else \
            ("UNREPLIED" if "[UNREPLIED]" in words else "REPLIED")
        orig, reply, *_ = _tuples(line) + [{}, {}]
        helper = reply.get("helper") or orig.get("helper")
        since = re.search(r"\[active since (\d+)s\]", line)
        out.append({"proto": proto, "state": state, "timeout": timeout,
                    "orig": _key(words[0], orig), "reply": _key(words[0], reply),
                    "tuple": _fields(proto, orig),
                    "packets": [int(orig.get("packets", 0)), int(reply.get("packets", 0))],
                    "bytes": [int(orig.get("bytes", 0)), int(reply.get("bytes", 0))],
                    "l3_bytes": [int(orig.get("bytes", 0)), int(reply.get("bytes", 0))],
                    "assured": "[ASSURED]" in words, "helper": helper, "related_to": None,
                    "owner": node, **({"age": int(since[1])} if since else {})})
    return out


def _fields(proto: int, t: dict) -> dict:
    """One direction as nodes.packet.key_fields gives it (ICMP keyed as parse_ipv4)."""
    if proto in (1, 58):
        ident, kind = int(t.get("id", 0)), t.get("type")
        request, reply = ("8", "0") if proto == 1 else ("128", "129")
        sport, dport = (ident, 0) if kind == request else (0, ident) if kind == reply else (0, 0)
    else:
        sport, dport = int(t.get("sport", 0)), int(t.get("dport", 0))
    return {"proto": proto, "src": t.get("src"), "sport": sport, "dst": t.get("dst"),
            "dport": dport}


_EVENT = re.compile(r"^\[(\d+\.\d+)\]\s+\[(NEW|UPDATE|DESTROY)\]\s+(.*)$")


def parse_event(line: str, node: str | None = None) -> tuple[float, str, dict, bool] | None:
    """One ``conntrack -E -o timestamp`` line: (time, NEW/UPDATE/DESTROY, the entry as
    parse_conntrack gives it, whether conntrackd put it there); None for other lines."""
    m = _EVENT.match(line.strip())
    if not m:
        return None
    entries = parse_conntrack(m.group(3), node)
    if not entries:
        return None
    return float(m.group(1)), m.group(2), entries[0], "progname=conntrackd" in line


def parse_expectations(listing: str, node: str | None = None) -> list[dict]:
    """``conntrack -L expect`` lines shaped like the Python node's expectations."""
    out = []
    for line in listing.splitlines():
        words = line.split()
        if not words or not words[0].isdigit():
            continue
        fields: dict = {}
        for key, value in _FIELD.findall(line):
            fields.setdefault(key, value)  # the first of each name: the expected tuple
        master = re.search(r"master-src=(\S+) master-dst=(\S+) sport=(\d+) dport=(\d+)", line)
        out.append({"timeout": int(words[0]), "proto": int(fields.get("proto", 6)),
                    "src": fields.get("src"), "dst": fields.get("dst"),
                    "dport": int(fields.get("dport", 0)), "helper": fields.get("helper"),
                    "master": (f"tcp src={master[1]} dst={master[2]} sport={master[3]} "
                               f"dport={master[4]}") if master else None, "owner": node})
    return out


def parse_stats(text: str) -> dict:
    """``conntrackd -s`` as {section: {counter: value}} (its numbers, as it names them)."""
    out: dict[str, dict[str, int]] = {}
    section = "general"
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" ") and line.rstrip().endswith(":"):
            section = line.strip().rstrip(":")
            if section.startswith("multicast traffic"):  # "(active device=...)"
                section = "multicast traffic"
            continue
        for name, value in re.findall(r"([A-Za-z][\w \-]*?):\s+(\d+)", line):
            out.setdefault(section, {})[name.strip().replace(" ", "_")] = int(value)
        for value, name in re.findall(r"(\d+) ((?:Bytes|Pckts|Error) (?:sent|recv|send))", line):
            out.setdefault(section, {})[name.replace(" ", "_").lower()] = int(value)
    return out


def sync_counters(stats: dict) -> dict:
    """The sync traffic of parsed ``conntrackd -s``, named as the Python node's sync
    counters (a "message" here is a datagram: conntrackd packs several in one)."""
    mc = stats.get("multicast traffic", {})
    return {"messages_sent": mc.get("pckts_sent", 0), "bytes_sent": mc.get("bytes_sent", 0),
            "messages_received": mc.get("pckts_recv", 0),
            "bytes_received": mc.get("bytes_recv", 0)}


RESYNC_POLL, RESYNC_STEADY, RESYNC_MIN, RESYNC_MAX = 0.05, 4, 0.3, 3.0


def resync_settled(counts: list[int], elapsed: float) -> bool:
    """Whether a bulk resync (``conntrackd -n``) has arrived, from the external cache's
    entry counts polled every RESYNC_POLL s since the request: conntrackd signals no
    end, so it is taken as done when the count has not moved for RESYNC_STEADY polls
    (and RESYNC_MIN s have passed), or RESYNC_MAX s after the request whatever came."""
    if elapsed >= RESYNC_MAX:
        return True
    tail = counts[-RESYNC_STEADY:]
    return elapsed >= RESYNC_MIN and len(tail) == RESYNC_STEADY and len(set(tail)) == 1


def internal_entries(stats: dict) -> int:
    """The internal cache's entry count (this node's own connections) in parsed
    ``conntrackd -s`` output."""
    return stats.get("cache internal", {}).get("current_active_connections", 0)


def interface_packets(text: str, names: tuple[str, ...]) -> dict[str, int]:
    """Frames received per interface in /proc/net/dev (the reader's namespace's),
    for ``names``; 0 for one that is not there."""
    rx = {}
    for line in text.splitlines()[2:]:
        name, _, fields = line.partition(":")
        values = fields.split()
        if len(values) >= 2:
            rx[name.strip()] = int(values[1])
    return {n: rx.get(n, 0) for n in names}


def external_entries(stats: dict) -> int:
    """The external cache's entry count in parsed ``conntrackd -s`` output."""
    return stats.get("cache external", {}).get("current_active_connections", 0)
