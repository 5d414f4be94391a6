"""Summaries of latency samples, shared by the engine, the sync engine and the analysis."""
from __future__ import annotations


def percentiles(seconds, qs=(0.5, 0.99)) -> dict:
    """p50/p99 (and n) of durations in seconds, in milliseconds; {} when empty."""
    if not seconds:
        return {}
    ordered = sorted(seconds)
    out = {f"p{round(q * 100)}": round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)
           for q in qs}
    out["n"] = len(ordered)
    return out
