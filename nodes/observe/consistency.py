"""The cluster consistency check: does every node hold what the sync mode promises?

As Jepsen checks a database's invariants under faults, this compares the
tables of the live nodes with the promises of their sync settings:

- every connection a node owns is on each of its backup nodes (or on every
  node with ``replication = "full"``), in the same state;
- no node keeps a copy of an owner that is gone, or of an owner it does not
  back up;
- no connection is owned by two nodes;
- expectations and common state are on every live node.

It reads each node's ``dump`` (its table) and ``stats`` (its membership and
settings) as the control socket answers them. The dumps are taken one after
the other, not at one instant, so an entry that changed less than ``settle``
seconds before its dump is left out (its copies may still be on the way);
where the mode promises nothing (no sync, mode home, periodic between
rounds), what differs is reported as a finding, never as a violation. Pure:
dicts in, a report out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from nodes.groups import connection_backups, node_backups
from nodes.packet import ip_bytes, make_key

SETTLE = 0.2  # seconds: an entry unchanged this long has reached its backups (lag p99 is ms)


@dataclass
class Report:
    """What the check found: violations of a promise, and findings where none was made."""

    mode: str
    promised: bool
    checked: int = 0  # owned, settled connections checked
    violations: list = field(default_factory=list)  # (kind, node, connection, detail)
    findings: list = field(default_factory=list)  # the same, where nothing was promised

    @property
    def ok(self) -> bool:
        return not self.violations

    def lines(self) -> list[str]:
        head = (f"consistency ({self.mode}): {self.checked} settled connection(s) checked, "
                f"{len(self.violations)} violation(s)")
        if not self.promised:
            head += f"; mode {self.mode} promises nothing, {len(self.findings)} finding(s)"
        return [head] + [f"  {'VIOLATION' if v in self.violations else 'finding'} {kind} on "
                         f"{node}: {conn}{' (' + detail + ')' if detail else ''}"
                         for v in self.violations + self.findings
                         for kind, node, conn, detail in [v]]

    def as_dict(self) -> dict:
        return {"mode": self.mode, "promised": self.promised, "checked": self.checked,
                "violations": [dict(zip(("kind", "node", "connection", "detail"), v))
                               for v in self.violations],
                "findings": [dict(zip(("kind", "node", "connection", "detail"), v))
                             for v in self.findings]}


def _key_bytes(t: dict) -> bytes:
    """The connection key (nodes/packet.py) that connection-specific backups hash."""
    return make_key(t["proto"], ip_bytes(t["src"]), t["sport"], ip_bytes(t["dst"]), t["dport"])


def _conn(t: dict) -> str:
    return f"{t['proto']} {t['src']}:{t['sport']} -> {t['dst']}:{t['dport']}"


def check(nodes: dict[str, dict], settle: float = SETTLE) -> Report:
    """``nodes``: name -> {"dump": ..., "stats": ...} of every node that answered.

    Only nodes that count themselves alive and ready are judged; membership
    is the first such node's view (all live nodes agree once quiet)."""
    live = {n: v for n, v in nodes.items() if v and v.get("stats", {}).get("sync")}
    if not live:
        return Report("none", False)
    first = next(iter(live.values()))["stats"]["sync"]
    mode, replication = first["mode"], first["replication"]
    settings = first.get("settings", {})
    promised = mode in ("ondemand", "combined") or (mode == "auto"
                                                    and first.get("active") == "ondemand")
    report = Report(mode, promised)
    add = report.violations.append if promised else report.findings.append
    ids = {n: int(n[2:]) for n in live}
    names = {i: n for n, i in ids.items()}
    alive = sorted(ids[n] for n in live if ids[n] in live[n]["stats"]["sync"]["alive"])
    k, selection = settings.get("k", 1), settings.get("selection", "node")
    groups = node_backups(alive, k)
    tables = {n: {_conn(e["tuple"]): e for e in v["dump"]["entries"]} for n, v in live.items()}

    def backups_of(owner: str, entry: dict) -> list[str]:
        if replication == "full":
            return [names[i] for i in alive if names[i] != owner]
        if selection == "connection":
            peers = connection_backups(_key_bytes(entry["tuple"]), ids[owner], alive, k)
        else:
            peers = groups.get(ids[owner], [])
        return [names[p] for p in peers if p in names]

    owners: dict[str, list[str]] = {}
    for node, table in tables.items():
        for conn, entry in table.items():
            if entry["owner"] == node:
                owners.setdefault(conn, []).append(node)
    for conn, who in owners.items():
        if len(who) > 1:
            add(("owned_twice", ", ".join(sorted(who)), conn, ""))
    for node, table in tables.items():
        for conn, entry in table.items():
            owner = entry["owner"]
            if owner == node:
                if entry.get("unchanged", 0.0) < settle:
                    continue  # it changed a moment ago: its copies may be on the way
                report.checked += 1
                for backup in backups_of(owner, entry):
                    copy = tables.get(backup, {}).get(conn)
                    if copy is None:
                        add(("missing_on_backup", backup, conn, f"owner {owner}"))
                    elif copy["state"] != entry["state"]:
                        add(("state_differs", backup, conn,
                             f"{owner} has {entry['state']}, copy {copy['state']}"))
            elif owner not in ids or ids[owner] not in alive:
                add(("copy_of_gone_owner", node, conn, f"owner {owner}"))
            elif node not in backups_of(owner, entry):
                if owner not in owners.get(conn, []):
                    add(("copy_without_owner", node, conn, f"owner {owner} does not hold it"))
                else:
                    add(("copy_not_a_backup", node, conn, f"owner {owner}"))
    everywhere = {}
    for node, v in live.items():
        for x in v["dump"].get("expectations", []):
            everywhere.setdefault(("expectation", x["src"], x["dst"], x["dport"]), set()).add(node)
        for c in v["dump"].get("common", []):
            everywhere.setdefault(("common", c["name"]), set()).add(node)
    for what, holders in everywhere.items():
        for node in sorted(set(live) - holders):
            if ids[node] in alive:
                add((f"{what[0]}_missing", node, " ".join(str(w) for w in what[1:]), ""))
    return report


def check_kernel(nodes: dict[str, dict], settle: float = 1.0) -> Report:
    """The same promise for kernel nodes: ``nodes``: name -> {"dump": ..., "stats": ...}
    where a kernel node's dump also lists conntrackd's caches (``internal``: the
    connections this node's kernel reported, its own; ``external``: what it heard
    from the others). conntrackd sends every entry to every node: each live node's
    own connection must be in every other live node's copies (the external cache,
    or the kernel table when the external cache is off), in the same state; no
    connection is in two nodes' internal caches. conntrackd does not say whose a
    copy is, so copies of a gone owner cannot be told (not checked). Entries younger
    than ``settle`` seconds (conntrackd's ``active since``, whole seconds) are left
    out. FT-FW and NOTRACK promise this; ALARM only after a RefreshTime (findings)."""
    live = {n: v for n, v in nodes.items() if v and v.get("dump", {}).get("internal") is not None}
    if not live:
        return Report("none", False)
    mode = next(iter(live.values()))["stats"]["sync"].get("mode")
    report = Report(f"conntrackd {mode}", mode in ("ftfw", "notrack"))
    add = report.violations.append if report.promised else report.findings.append
    own = {n: {_conn(e["tuple"]): e for e in v["dump"]["internal"]} for n, v in live.items()}
    copies = {n: {_conn(e["tuple"]): e for e in (v["dump"]["external"]
                                                 if v["dump"].get("external_cache", True)
                                                 else v["dump"]["entries"])}
              for n, v in live.items()}
    holders: dict[str, list[str]] = {}
    for node, table in own.items():
        for conn in table:
            holders.setdefault(conn, []).append(node)
    for conn, who in sorted(holders.items()):
        if len(who) > 1:
            add(("owned_twice", ", ".join(sorted(who)), conn, ""))
    for node, table in own.items():
        for conn, entry in table.items():
            if entry.get("age", settle) < settle:
                continue
            report.checked += 1
            for backup in sorted(set(live) - {node}):
                copy = copies[backup].get(conn)
                if copy is None:
                    add(("missing_on_backup", backup, conn, f"owner {node}"))
                elif entry["proto"] == 6 and copy["state"] != entry["state"]:
                    add(("state_differs", backup, conn,
                         f"{node} has {entry['state']}, copy {copy['state']}"))
    return report
