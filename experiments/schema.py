"""The sections of an experiment spec as models: one declaration per field.

``[cluster]`` is the node's own sync settings (nodes/settings.py: the same
fields, ranges and defaults, with the mode spelled ``sync``) plus what only a
run needs (rules, failover, steering, latency, captures). ``[topology]`` and
``[traffic]`` are declared here. experiments/spec.py reads the defaults from
these models and validates every resolved point with them, so the dry run
refuses exactly what a node would refuse, in one line with the field's path.
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from experiments.files import SIZE_DISTS
from nodes.kernel.conntrackd import check_window_check
from nodes.rules import RuleError, RuleSet
from nodes.settings import SYNC_FIELDS, Mode, SyncSettings
from topo.addresses import MAX_NODES

FTP_MODES = ("PASV", "EPSV", "PORT", "EPRT")
_CAPTURE = re.compile(r"(c|srv|fw)\d+-eth\d")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Topology(_Section):
    """How many firewall nodes, clients and servers."""

    nodes: int = Field(3, ge=1, le=MAX_NODES, description="firewall nodes in the cluster")
    clients: int = Field(2, ge=1, le=50, description="client hosts outside")
    servers: int = Field(2, ge=1, le=50, description="server hosts inside")


class Cluster(SyncSettings):
    """The node's sync settings (mode spelled ``sync``) and the run's cluster options."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=False)

    mode: Mode = Field("none", alias="sync", description="sync mode of every node")
    rules: str = Field("experiments/rules/ftp.rules", description="the rule file")
    failover: Literal["none", "backup", "spread"] = Field(
        "none", description="the controller moves a failed node's buckets to its backup, or "
        "spreads them")
    steering: Literal["symmetric", "addresses", "asymmetric"] = Field(
        "symmetric", description="symmetric: by addresses and ports; addresses: by addresses "
        "only (a flow's fragments and whole datagrams together); asymmetric: the two "
        "directions of a flow cross different nodes")
    latency_ms: float = Field(0.0, ge=0, le=10000, description="one-way delay between nodes")
    latency_via: Literal["auto", "netem", "node"] = Field(
        "auto", description="netem where the kernel has it (auto), or the nodes' delay line")
    checksum: bool = Field(True, description="verify checksums of packets that create or "
                           "change state, as nf_conntrack_checksum (false: trust them)")
    tcp_liberal: bool = Field(False, description="pass out-of-window TCP segments, as "
                              "nf_conntrack_tcp_be_liberal = 1 (false: drop them, "
                              "tcp_out_of_window)")
    tcp_loose: bool = Field(False, description="a bare ACK the rules allow picks a TCP "
                            "connection up mid-stream, as nf_conntrack_tcp_loose = 1 (Linux's "
                            "default; false, the testbed's: a node without the state drops it)")
    tcp_window_check: bool = Field(True, description="track TCP windows (false: not at "
                                   "all, as OpenWrt's nf_conntrack_tcp_no_window_check = 1; "
                                   "python nodes only)")
    fastpath: bool | Literal["off"] = Field(
        False, description="true: the nodes' kernels forward established connections "
        "(nodes/fastpath.py); \"off\": ready but off until 'set fastpath=on'; false: none. "
        "Python nodes only")
    tcp_timeout_time_wait: float = Field(120.0, gt=0, le=3600, description="seconds a "
                                         "closed TCP connection's entry stays (TIME_WAIT), "
                                         "as nf_conntrack_tcp_timeout_time_wait; python "
                                         "nodes only")
    capture: list[str] = Field(default_factory=list, description='"sync" and/or host '
                               'interfaces such as "c1-eth0" (pcap files per point)')
    node: Literal["python", "kernel"] = Field(
        "python", description="python: the testbed's nodes; kernel: nftables + conntrack + "
        "conntrackd (nodes/kernel/)")
    commit: Literal["before_steer", "after_steer", "never"] = Field(
        "before_steer", description="kernel nodes: when the controller has the nodes taking a "
        "failed node's traffic commit conntrackd's external cache")
    conntrackd: Literal["ftfw", "alarm", "notrack", "auto"] = Field(
        "auto", description="kernel nodes: conntrackd's mode (auto: from the sync mode)")
    external_cache: bool = Field(True, description="kernel nodes: the others' entries wait in "
                                 "conntrackd's external cache for a commit (false: into the "
                                 "kernel at once, the multiprimary setup)")

    @field_validator("capture")
    @classmethod
    def _interfaces(cls, value):
        for item in value:
            if item != "sync" and not _CAPTURE.fullmatch(item):
                raise ValueError(f'{item!r}: cluster.capture must list "sync" and/or host '
                                 'interfaces such as "c1-eth0", "fw2-eth1"')
        return value

    @field_validator("rules")
    @classmethod
    def _readable(cls, value):
        try:
            RuleSet.from_file(value)
        except RuleError as err:
            raise ValueError(str(err)) from None
        return value

    @model_validator(mode="after")
    def _network(self):
        network = self.mode != "none" or self.failover != "none"
        if self.latency_ms and not network:
            raise ValueError("latency_ms needs a cluster network: set cluster.sync (or failover)")
        if self.node == "kernel":
            check_window_check(self.tcp_window_check)  # a SettingsError is a ValueError
            if self.fastpath is not False:
                raise ValueError("cluster.fastpath is for python nodes: kernel nodes forward "
                                 "in the kernel already (remove it, or node = \"python\")")
            if self.tcp_timeout_time_wait != 120.0:
                raise ValueError("cluster.tcp_timeout_time_wait is for python nodes: kernel "
                                 "nodes keep the kernel's (remove it, or node = \"python\")")
        if "sync" in self.capture and not network:
            raise ValueError('capture "sync" needs a cluster network: set cluster.sync '
                             '(or failover)')
        return self

    def sync_settings(self) -> SyncSettings:
        """What every node of the cluster is started with."""
        return SyncSettings(**{name: getattr(self, name) for name in SYNC_FIELDS})


class Traffic(_Section):
    """The FTP workload."""

    kind: Literal["ftp"] = Field("ftp", description="only FTP exists")
    sessions: int = Field(24, ge=1, le=100000, description="FTP sessions in all")
    modes: list[Literal["PASV", "EPSV", "PORT", "EPRT"]] = Field(
        list(FTP_MODES), min_length=1, description="data connection modes, used in turn")
    file_size: int = Field(262144, ge=1, le=1 << 30, description="bytes (the mean, for pareto)")
    files: int = Field(4, ge=1, description="distinct files served")
    size_dist: Literal[SIZE_DISTS] = Field("fixed", description="file sizes")
    concurrency: int = Field(4, ge=1, le=64, description="sessions at once per client")
    timeout: float = Field(3.0, gt=0, description="seconds a client waits for the server")
    throttle: float = Field(0.0, ge=0, description="bytes per second a client reads "
                            "(0: as fast as it can)")
    pause_before_data: float = Field(0.0, ge=0, le=60, description="seconds between announcing "
                                     "the data connection and opening it")
    family: Literal["ipv4", "ipv6", "dual"] = Field(
        "ipv4", description="IP version of the sessions: dual runs EPRT and EPSV sessions "
        "over IPv6, PORT and PASV over IPv4")
    ramp: list[list[float]] = Field(
        default_factory=list, description="[seconds, relative rate] points: the sessions "
        "start over the ramp's duration at a rate that follows them (piecewise linear), "
        "not as fast as concurrency allows; [] (the default): no ramp")

    @field_validator("ramp")
    @classmethod
    def _ramp(cls, value):
        if not value:
            return value
        times = [p[0] if len(p) == 2 else None for p in value]
        if (len(value) < 2 or None in times or times[0] != 0
                or any(b <= a for a, b in zip(times, times[1:]))
                or any(p[1] < 0 for p in value) or not any(p[1] > 0 for p in value)):
            raise ValueError("traffic.ramp must be [seconds, rate] pairs, at least two, the "
                             "first at 0 s, times rising, rates >= 0 and not all 0: e.g. "
                             "[[0, 1], [5, 10], [10, 1]]")
        return value

    @model_validator(mode="after")
    def _families(self):
        ipv4_only = sorted(set(self.modes) & {"PORT", "PASV"})
        if self.family == "ipv6" and ipv4_only:
            raise ValueError(f"traffic.family = \"ipv6\" cannot run {', '.join(ipv4_only)} "
                             "(they carry IPv4 addresses, RFC 2428): use EPRT and EPSV, "
                             "or family = \"dual\"")
        return self


SECTIONS = {"topology": Topology, "cluster": Cluster, "traffic": Traffic}


def defaults(section: str) -> dict:
    """A section's defaults as a spec holds them (TOML-like: lists, the mode as ``sync``)."""
    out = SECTIONS[section]().model_dump(by_alias=True)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
