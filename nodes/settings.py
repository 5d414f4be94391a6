"""The cluster's synchronization settings: declared once, read by spec, node and controller.

Every setting has its type, range, default and meaning here (a pydantic
model). An experiment spec's ``[cluster]`` table (experiments/schema.py
extends this model), the sync config file every node and the controller read,
and a run-time ``set KEY=VALUE`` are all checked by the same model, so a value
that passes the dry run is a value the node accepts. A bad value is refused
in one line that names the field and what it may be::

    cluster.k = 1.5: must be a valid integer
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, \
    model_validator

MODES = ("none", "periodic", "ondemand", "combined", "auto", "home")
STATELESS = ("none", "home")  # membership only; "home" forwards packets instead (nodes/home.py)
TRIGGERS = ("state_modified", "node_failed", "state_requested", "node_offline",
            "multi_node_session", "new_connection")
Mode = Literal["none", "periodic", "ondemand", "combined", "auto", "home"]
Trigger = Literal["state_modified", "node_failed", "state_requested", "node_offline",
                  "multi_node_session", "new_connection"]


class SettingsError(ValueError):
    """A setting that cannot work; the message is one line: where, what, what is allowed."""


class SyncSettings(BaseModel):
    """How a cluster synchronizes; the same on every node."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    mode: Mode = Field("ondemand", description="none, periodic, ondemand, combined, auto "
                       "(switch by budget) or home (forward to the home node)")
    interval: float = Field(1.0, gt=0, description="seconds between periodic rounds")
    periodic: Literal["differential", "full"] = Field(
        "differential", description="a periodic round sends what changed, or everything")
    triggers: tuple[Trigger, ...] = Field(
        TRIGGERS, strict=False, description="the predetermined actions that sync on demand")
    replication: Literal["backup", "full"] = Field(
        "backup", description="entries to the owner's backup nodes, or to every node")
    k: int = Field(1, ge=1, description="backup nodes per node")
    selection: Literal["node", "connection"] = Field(
        "node", description="backups chosen per node (cyclic) or per connection (hash)")
    hold: bool = Field(True, description="hold a packet that opens a connection through "
                       "another node until its state is acknowledged (method 800)")
    hold_timeout: float = Field(0.05, gt=0, description="seconds a held packet waits at most")
    query_timeout: float = Field(0.05, gt=0, description="mode home: seconds to wait for the "
                                 "home node's answer (above the round trip)")
    rto: float = Field(0.02, gt=0, description="seconds an acknowledgement may come later "
                       "than the measured round trip before its message is sent again")
    window: int = Field(4096, ge=1, description="messages a receiver buffers out of order")
    heartbeat: float = Field(0.02, gt=0, description="seconds between heartbeats")
    dead_after: float = Field(0.1, gt=0, description="a member not heard for this long has "
                              "failed (nodes and controller alike)")
    death_notice: bool = Field(True, description="a process beside each node in its host "
                               "announces at once that the node's process has ended "
                               "(nodes/shell/deathwatch.py); false: only heartbeats tell")
    startup_grace: float = Field(5.0, gt=0, description="seconds a member never heard is "
                                 "given to start before it is judged failed")
    bulk_timeout: float = Field(2.0, gt=0, description="a joining node is ready after this "
                                "even without every answer")
    budget_bandwidth: float = Field(0.0, ge=0, description="auto: bytes/s of on-demand sync "
                                    "before going periodic")
    budget_entries: int = Field(0, ge=0, description="auto: entries per node before full "
                                "replication gives way to backups")
    delay: float = Field(0.0, ge=0, description="delayed replication: a new connection is "
                         "sent once this many seconds old (0: at once)")
    window_sync: Literal["change", "schedule", "scale", "off"] = Field(
        "off", description="TCP window state in a replicated entry: every change (one "
        "record a connection a sync round), on the sync's schedule (with the entry's other "
        "changes and periodic rounds), only the window scales (conntrackd's "
        "TCPWindowTracking on: a backup learns the window from the next segments), or none "
        "(TCPWindowTracking off, conntrackd's default: a backup's copy is not "
        "window-checked)")

    @field_validator("triggers", mode="before")
    @classmethod
    def _listed(cls, value):
        if isinstance(value, str):
            raise ValueError("must be a list of trigger names")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        if self.heartbeat >= self.dead_after:
            raise ValueError(f"heartbeat ({self.heartbeat} s) must be shorter than dead_after "
                             f"({self.dead_after} s)")
        if self.mode == "auto" and self.budget_bandwidth <= 0 and self.budget_entries <= 0:
            raise ValueError("mode auto needs budget_bandwidth (bytes/s) or budget_entries")
        return self

    def replace(self, **changes) -> "SyncSettings":
        """A copy with ``changes``, validated as a whole (SettingsError in one line)."""
        return parse(type(self), {**self.model_dump(), **changes})

    def as_dict(self) -> dict:
        """JSON-ready (triggers as a list)."""
        out = self.model_dump()
        out["triggers"] = list(out["triggers"])
        return out


DEFAULT = SyncSettings()
SYNC_FIELDS = tuple(SyncSettings.model_fields)


def one_line(err: ValidationError, where: str = "", known=()) -> str:
    """The first problem of a ValidationError as ``where.field = value: must be ...``."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].replace("Input should be", "must be").replace("Value error, ", "")
    name = f"{where}{loc}" if loc else where.rstrip(".")
    if first["type"] == "extra_forbidden":
        return f"unknown field {name!r} (known: {', '.join(known)})"
    if loc and "input" in first and not isinstance(first["input"], dict):
        return f"{name} = {first['input']!r}: {msg}"
    return f"{name}: {msg}" if name else msg


def parse(model, data: dict, where: str = ""):
    """``model`` from ``data``; SettingsError naming the field path (``where`` before it)."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise SettingsError(one_line(err, where, tuple(model.model_fields))) from None


_ON_OFF = {"1": True, "on": True, "true": True, "0": False, "off": False, "false": False}
# What ``set KEY=VALUE`` may change on a running node, and how to read each value.
SETTABLE = {"mode": str, "interval": float, "periodic": str,
            "hold": lambda v: _ON_OFF[v],
            "triggers": lambda v: tuple(t for t in v.split(",") if t), "replication": str,
            "budget_bandwidth": float, "budget_entries": int, "delay": float,
            "window_sync": str}


# The firewall's own switches, as Linux names them (net.netfilter.nf_conntrack_tcp_*):
# a node takes them at start (fw-node --tcp-liberal, --tcp-loose, --no-tcp-window-check)
# and at run time; tcp_window_check applies to connections opened after the change.
# fastpath: the kernel forwards established connections (fw-node --fastpath on|off).
FIREWALL_SETTABLE = ("tcp_liberal", "tcp_loose", "tcp_window_check", "fastpath")


def firewall_change(args: str) -> tuple[dict, str]:
    """The firewall switches in ``args`` ("tcp_liberal=on mode=periodic") as a dict, and
    the rest of ``args`` (sync settings); SettingsError in one line for a bad value."""
    switches, rest = {}, []
    for item in args.split():
        name, sep, value = item.partition("=")
        if name not in FIREWALL_SETTABLE:
            rest.append(item)
            continue
        if not sep or value not in _ON_OFF:
            raise SettingsError(f"{name} = {value!r} is not on or off")
        switches[name] = _ON_OFF[value]
    return switches, " ".join(rest)


def runtime_change(config: SyncSettings, args: str) -> SyncSettings:
    """The settings after ``args`` ("mode=periodic interval=2"); SettingsError in one line.

    Mode home forwards packets to their home node instead of synchronizing
    (nodes/home.py): a node is started in it or not, so no switch to or from it.
    """
    changes = {}
    for item in args.split():
        name, sep, value = item.partition("=")
        if name not in SETTABLE or not sep:
            raise SettingsError(f"cannot set {item!r}: use KEY=VALUE with KEY one of "
                                f"{', '.join(SETTABLE)}")
        try:
            changes[name] = SETTABLE[name](value)
        except (ValueError, KeyError):
            kind = "on or off" if name == "hold" else f"a {SETTABLE[name].__name__}"
            raise SettingsError(f"{name} = {value!r} is not {kind}") from None
    if not changes:
        raise SettingsError(f"nothing to set: give KEY=VALUE with KEY one of "
                            f"{', '.join(SETTABLE)}")
    candidate = config.replace(**changes)
    if (candidate.mode == "home") != (config.mode == "home"):
        raise SettingsError("mode home is chosen when the cluster starts (e.g. make cli "
                            "SYNC=home), not switched at run time")
    return candidate
