"""The answers of a node's control socket (stats, raw, config, set, common, ports, ping)
and the slices of its ``dump`` and ``stats``.

The node's loop hands each command line here and sends back the JSON-ready
dict; nothing here touches a socket. ``fw-inspect``, the CLI, snapshots and
the metrics exporter all ask through nodes/observe/client.py.
"""
from __future__ import annotations

import json
import os

from nodes.conntrack import CommonState
from nodes.engine import INSIDE, OUTSIDE
from nodes.settings import FIREWALL_SETTABLE, SettingsError, firewall_change, runtime_change

COMMANDS = "stats, dump, raw, config, ports, ping, members, common NAME=VALUE or set KEY=VALUE ..."


TABLE_SLICE = 5000  # entries of a long answer's pass over the table between two rounds


def answer(node, command: str, now: float, sync_table: tuple | None = None) -> dict:
    """What ``node`` (a nodes.shell.node.Node) answers to one command line;
    ``sync_table``: the sync engine's table figures for ``stats``, if already made
    (``stats_parts``)."""
    engine, sync, home = node.engine, node.sync, node.home
    if command == "stats":
        stats = engine.stats(now)
        stats["packets_out"] = {"outside": node.sent[OUTSIDE], "inside": node.sent[INSIDE]}
        stats["tx_errors"] = {"outside": node.ports[OUTSIDE].tx_errors,
                              "inside": node.ports[INSIDE].tx_errors}
        stats["rx_errors"] = {"outside": node.ports[OUTSIDE].rx_errors,
                              "inside": node.ports[INSIDE].rx_errors}
        stats["rx_truncated"] = sum(p.rx_truncated for p in node.ports)
        stats["rx_dropped"] = {"outside": node.ports[OUTSIDE].rx_dropped(),
                               "inside": node.ports[INSIDE].rx_dropped()}
        stats["port_kind"] = node.ports[OUTSIDE].kind
        stats["fastpath"]["kernel"] = (None if node.kernel_fast is None else
                                       {"mechanism": node.kernel_fast.mechanism,
                                        "elements": len(node.kernel_fast.installed),
                                        "errors": node.kernel_fast.errors})
        stats["events_waiting"], stats["events_lost"] = len(node.events.pending), node.events.lost
        if sync is not None:
            stats["sync"] = sync.stats(now, sync_table)
            stats["sync"]["cluster_delay_ms"] = (node.delay_line.delay * 1000
                                                 if node.delay_line is not None else 0.0)
        if home is not None:
            stats["home"] = home.stats()
        stats["pid"] = os.getpid()
        return stats
    if command == "raw":  # every sample behind the percentiles, in ms, for plots
        raw = {"hold_ms": [round(x * 1000, 4) for x in engine.hold_times]}
        if sync is not None:
            raw["lag_ms"] = [round(x * 1000, 4) for x in sync.lag]
        if home is not None:
            raw["discovery_ms"] = [round(x * 1000, 4) for x in home.discovery]
        return raw
    if command.startswith("set "):
        try:
            switches, rest = firewall_change(command[4:])
            if rest and sync is None:
                return {"error": "this node was started without --sync-config (only "
                                 f"{', '.join(FIREWALL_SETTABLE)} can be set)"}
            candidate = runtime_change(sync.config, rest) if rest else None
        except SettingsError as err:
            return {"error": str(err)}
        if switches.get("fastpath") and node.kernel_fast is None:
            return {"error": "fastpath: this node has no kernel fast path (start it with "
                             "--fastpath off to switch it on at run time)"}
        for name, value in switches.items():
            setattr(engine, name, value)
        if candidate is not None:
            sync.reconfigure(candidate, now)
            # what was offloaded was replicated under the old settings: again, under these
            engine.offload.withdraw_all("reconfigured")
        return {"ok": True, "sync": (candidate or sync.config).as_dict() if sync else None,
                "firewall": firewall(engine)}
    if command.startswith("common "):
        name, sep, value = command[7:].partition("=")
        if not sep or not name.strip():
            return {"error": "use: common NAME=VALUE"}
        engine.modify_state("common", CommonState(name.strip(), value.encode(), engine.node), now)
        return {"ok": True, "common": name.strip()}
    if command == "ports":
        return {"outside": node.ports[OUTSIDE].describe(), "inside": node.ports[INSIDE].describe()}
    if command == "config":  # the settings in force (what 'set' changes)
        return {"node": engine.node, "sync": sync.config.as_dict() if sync else None,
                "firewall": firewall(engine)}
    if command == "ping":
        return {"node": engine.node, "pid": os.getpid()}
    if command == "members":  # the view and readiness alone: cheap to poll, unlike stats'
        # pass over the table (70 ms of the node's time at 200k entries, in slices)
        return {"node": engine.node, "alive": sorted(sync.alive) if sync else None,
                "ready": sync.ready if sync else True}
    return {"error": f"unknown command {command!r} (use {COMMANDS})"}


def firewall(engine) -> dict:
    """The firewall switches in force on ``engine``."""
    return {name: getattr(engine, name) for name in FIREWALL_SETTABLE}


def stats_parts(node, now: float, size: int = TABLE_SLICE):
    """The ``stats`` answer as JSON text, its pass over the table ``size`` entries a
    round (the pass's empty parts between them: the node's loop goes on), for
    nodes/shell/control_server.py."""
    table = None if node.sync is None else (yield from node.sync.table_pass(now, size))
    yield json.dumps(answer(node, "stats", now, table))


def dump_parts(engine, now: float, size: int = 256):
    """The ``dump`` answer as JSON text in slices of ``size`` entries (the table's
    entries as they were when it was asked: a cut), for nodes/shell/control_server.py."""
    entries = list(engine.table.entries())
    rest = engine.dump(now, entries=False)
    yield '{"node": %s, "entries": [' % json.dumps(rest["node"])
    for i in range(0, len(entries), size):
        yield ("," if i else "") + ",".join(json.dumps(e.as_dict(now))
                                            for e in entries[i:i + size])
    yield '], "expectations": %s, "common": %s}' % (json.dumps(rest["expectations"]),
                                                   json.dumps(rest["common"]))
