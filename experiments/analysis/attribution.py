"""Which node carried each FTP session's control and data connection, from raw data.

The nodes' event logs (fw*.events.jsonl) hold a ``new`` event for every
connection a node admitted and a ``drop`` event for every opening it refused,
each with the connection's 5-tuple as fields (``tuple``). Pure file reading:
no Mininet, no network.
"""
from __future__ import annotations

import glob
import json
import os


def read_jsonl(path: str) -> list[dict]:
    """Every JSON object of a JSON-lines file (none when it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def node_events(folder: str) -> list[dict]:
    """Every firewall node's events in a run folder (its fw*.events.jsonl files)."""
    return [ev for path in sorted(glob.glob(os.path.join(folder, "fw*.events.jsonl")))
            for ev in read_jsonl(path)]


def _endpoints(fields: dict | None) -> tuple | None:
    """(src, dst, sport, dport) of a logged 5-tuple."""
    if not fields:
        return None
    return fields["src"], fields["dst"], fields["sport"], fields["dport"]


def attribute(records: list[dict], node_events: list[dict]) -> list[dict]:
    """Add control_node, data_node, data_verdict and data_refusals (packets of the data
    connection a node refused: a SYN the client's TCP may send again) to each record."""
    opened = []  # (t, node, src, dst, sport, dport)
    refused = []
    for ev in node_events:
        if ev["event"] == "new":
            key = _endpoints(ev["entry"].get("tuple"))
            if key:
                opened.append((ev["t"], ev["node"], *key))
        elif ev["event"] == "drop":
            key = _endpoints(ev.get("tuple"))
            if key:
                refused.append((ev["t"], ev["node"], *key))
    out = []
    for rec in records:
        rec = dict(rec)
        rec["control_node"] = rec["data_node"] = rec["data_verdict"] = None
        if rec.get("control"):
            csrc, cport, cdst, _ = rec["control"]
            for t, node, src, dst, sport, dport in opened:
                if (src, sport, dst, dport) == (csrc, cport, cdst, 21):
                    rec["control_node"] = node
        rec["data_refusals"] = 0
        if rec.get("announced"):
            host, port = rec["announced"]
            window = (rec["t_start"] - 1, rec["t_end"] + 1)
            rec["data_refusals"] = sum(1 for t, _, _, dst, _, dport in refused
                                       if (dst, dport) == (host, port)
                                       and window[0] <= t <= window[1])
            for verdict, events in (("accepted", opened), ("refused", refused)):
                for t, node, src, dst, sport, dport in events:
                    if (dst, dport) == (host, port) and window[0] <= t <= window[1]:
                        rec["data_node"], rec["data_verdict"] = node, verdict
                        break
                if rec["data_node"]:
                    break
        rec["same_node"] = (rec["data_node"] == rec["control_node"]
                            if rec["data_node"] and rec["control_node"] else None)
        out.append(rec)
    return out
