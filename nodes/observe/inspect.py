"""fw-inspect: a node's connection table, expectations and counters.

Prints them the way ``conntrack -L``, ``conntrack -L expect`` and
``conntrackd -s`` do, from the node's control socket.
"""
from __future__ import annotations

import argparse
import json
import sys

from nodes.observe.client import ask, current_run, socket_path

from nodes.packet import ECHO_REPLY, ECHO_REQUEST, PROTO_NAMES


def _fields(key: str) -> dict:
    """The key=value fields of a key as nodes.packet.key_str prints it."""
    return dict(part.split("=", 1) for part in key.split()[1:])


def _direction(proto: str, key: str, packets: int, l3_bytes: int, reply: bool) -> str:
    f = _fields(key)
    if proto in ("icmp", "icmpv6"):  # type, code and id, as conntrack shows an echo
        ident = f["sport"] if f["sport"] != "0" else f["dport"]
        number = 1 if proto == "icmp" else 58
        l4 = f"type={(ECHO_REPLY if reply else ECHO_REQUEST)[number]} code=0 id={ident}"
    else:
        l4 = f"sport={f['sport']} dport={f['dport']}"
    return f"src={f['src']} dst={f['dst']} {l4} packets={packets} bytes={l3_bytes}"


def format_entry(e: dict) -> str:
    """One line per connection in ``conntrack -L``'s format (with accounting on): its
    fields, flags and order, IP bytes. After conntrack's own fields, the two it has
    not: ``owner=`` (the node that owns the entry) and, for a related connection,
    ``master=`` (its master connection, as ``src:sport->dst:dport``)."""
    proto = PROTO_NAMES.get(e["proto"], str(e["proto"]))
    l3 = e.get("l3_bytes", e["bytes"])
    parts = [f"{proto:<8} {e['proto']} {int(e['timeout'])}"]
    if proto == "tcp":
        parts.append(e["state"])
    parts.append(_direction(proto, e["orig"], e["packets"][0], l3[0], False))
    if e["packets"][1] == 0:
        parts.append("[UNREPLIED]")
    parts.append(_direction(proto, e["reply"], e["packets"][1], l3[1], True))
    if e.get("assured"):
        parts.append("[ASSURED]")
    parts.append("mark=0")
    if e["helper"]:
        parts.append(f"helper={e['helper']}")
    parts += ["use=1", f"owner={e['owner']}"]
    if e["related_to"]:
        m = _fields(e["related_to"])
        parts.append(f"master={m['src']}:{m['sport']}->{m['dst']}:{m['dport']}")
    return " ".join(parts)


def format_expectation(x: dict) -> str:
    """One line per expectation in ``conntrack -L expect``'s format (the expected
    tuple, its mask, the master's tuple, class and helper), then ``owner=``."""
    proto = x["proto"]
    m = _fields(x["master"]) if x.get("master") else {}
    ipv6 = ":" in x["dst"]
    full, none = ("ffff:" * 7 + "ffff", "::") if ipv6 else ("255.255.255.255", "0.0.0.0")
    src, mask = (x["src"], full) if x["src"] not in (None, "any") else (none, none)
    return (f"{int(x['timeout'])} proto={proto} src={src} dst={x['dst']} sport=0 "
            f"dport={x['dport']} mask-src={mask} mask-dst={full} sport=0 "
            f"dport=65535 master-src={m.get('src')} master-dst={m.get('dst')} "
            f"sport={m.get('sport')} dport={m.get('dport')} class=0 "
            + (f"helper={x['helper']} " if x.get("helper") else "") + f"owner={x['owner']}")


# What a dump lists, how one item prints, and what the items are called.
LISTINGS = {"entries": (format_entry, "connections"),
            "expectations": (format_expectation, "expectations")}


def listing(dump: dict, what: str) -> tuple[list[str], str]:
    """The lines of a dump's connections or expectations, and the line that counts them."""
    fmt, noun = LISTINGS[what]
    items = dump[what]
    return [fmt(x) for x in items], f"{len(items)} {noun} on {dump['node']}"


def format_stats(s: dict) -> str:
    """Counters, as conntrackd -s prints them."""
    lines = [f"node {s['node']} (pid {s.get('pid', '?')})",
             f"  connections: {s['entries']:>12}",
             f"  expectations: {s['expectations']:>11}",
             f"  held connections: {s['held_connections']:>7}",
             f"  hold time ms: {s.get('hold_ms') or '(none held)'}"]
    for field in ("packets_in", "bytes_in", "packets_out", "tx_errors"):
        if field in s:
            lines.append(f"  {field:<14} outside={s[field]['outside']} inside={s[field]['inside']}")
    lines.append("  drops by reason:")
    lines += [f"    {k:<26}{v:>10}" for k, v in sorted(s["drops"].items())] or ["    (none)"]
    lines.append("  counters:")
    lines += [f"    {k:<26}{v:>10}" for k, v in sorted(s["counters"].items())]
    sync = s.get("sync")
    if sync and s.get("kind") == "kernel":  # conntrackd -s, as it names its numbers
        lines.append(f"  sync: conntrackd {sync['mode']}")
        for section, numbers in sync.get("conntrackd", {}).items():
            lines.append(f"    {section}:")
            lines += [f"      {k:<34}{v:>10}" for k, v in numbers.items()]
    elif sync:
        backups = ", ".join(f"fw{b}" for b in sync["backups"]) or "none"
        lines += [f"  sync: mode {sync['mode']}, alive {sync['alive']}, backed up by {backups}",
                  f"    entries owned / backup / common: {sync['entries_owned']} / "
                  f"{sync['entries_backup']} / {sync['common']}",
                  f"    replication lag ms p50 / p99: {sync['lag_ms_p50']} / {sync['lag_ms_p99']}",
                  f"    unacknowledged messages: {sync['unacked']}"]
        lines += [f"    {k:<24}{v:>12}" for k, v in sorted(sync["counters"].items())]
        lines.append("    rejected by reason:")
        lines += [f"      {k:<22}{v:>12}" for k, v in sorted(sync["rejected"].items())] or \
            ["      (none)"]
    home = s.get("home")
    if home:
        lines += [f"  home-node forwarding: forward table {home['forward_table']} entries, "
                  f"{home['pending_queries']} queries pending",
                  f"    discovery ms: {home['discovery_ms'] or '(none yet)'}"]
        lines += [f"    {k:<24}{v:>12}" for k, v in sorted(home["counters"].items())]
    return "\n".join(lines)


def _short(e: dict) -> str:
    """A connection in a few words: protocol, endpoints, state, owner."""
    proto = PROTO_NAMES.get(e["proto"], str(e["proto"]))
    fields = dict(kv.split("=", 1) for kv in e["orig"].split()[1:])
    ends = f"{fields['src']}:{fields['sport']} -> {fields['dst']}:{fields['dport']}"
    extra = f" (data connection of {e['related_to'].split(' ', 1)[1]})" if e["related_to"] else ""
    return f"{proto} {ends} {e['state']} owner={e['owner']}{extra}"


def changes(before: dict, after: dict) -> list[str]:
    """What changed between two dumps of one node: connections and expectations that
    appeared, changed state or went. A copy held for another owner says so."""
    node = after["node"]
    out = []

    def copy(owner: str) -> str:
        return "" if owner == node else "  [a copy: another node owns it]"

    old = {e["orig"]: e for e in before["entries"]}
    new = {e["orig"]: e for e in after["entries"]}
    for key, e in new.items():
        if key not in old:
            out.append(f"+ connection  {_short(e)}{copy(e['owner'])}")
        elif old[key]["state"] != e["state"] or old[key]["owner"] != e["owner"]:
            out.append(f"~ connection  {_short(e)}{copy(e['owner'])}")
    out += [f"- connection  {_short(e)}" for key, e in old.items() if key not in new]

    def ident(x: dict) -> tuple:
        return (x["proto"], x["src"], x["dst"], x["dport"], x["master"])

    old_x = {ident(x): x for x in before["expectations"]}
    new_x = {ident(x): x for x in after["expectations"]}
    for key, x in new_x.items():
        if key not in old_x:
            out.append(f"+ expectation {x['src']} -> {x['dst']}:{x['dport']} "
                       f"owner={x['owner']}{copy(x['owner'])}")
    out += [f"- expectation {x['src']} -> {x['dst']}:{x['dport']} owner={x['owner']}"
            for key, x in old_x.items() if key not in new_x]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fw-inspect", description=__doc__.splitlines()[0])
    parser.add_argument("node", help="node name (fw1, fw2, ...)")
    parser.add_argument("-L", "--list", action="store_true", help="connections (default)")
    parser.add_argument("-X", "--expect", action="store_true", help="expectations")
    parser.add_argument("-s", "--stats", action="store_true", help="counters")
    parser.add_argument("--json", action="store_true", help="print raw JSON")
    parser.add_argument("--run-id", help="which run (default: the newest on this machine)")
    parser.add_argument("--socket", help="control socket path (overrides node and run)")
    args = parser.parse_args(argv)
    run_id = args.run_id or current_run()
    path = args.socket or (socket_path(run_id, args.node) if run_id else None)
    if path is None:
        print("fw-inspect: no cluster is running here (start one with 'make demo', or "
              "give --socket)", file=sys.stderr)
        return 2
    try:
        if args.stats:
            data = ask(path, "stats")
        else:
            data = ask(path, "dump")
    except (OSError, ValueError) as err:
        print(f"fw-inspect: cannot reach node {args.node} at {path}: {err} "
              "(is the node running? list nodes with 'ls' on that folder)", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(data, indent=2))
    elif args.stats:
        print(format_stats(data))
    else:
        lines, count = listing(data, "expectations" if args.expect else "entries")
        for line in lines:
            print(line)
        print(f"fw-inspect: {count}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
