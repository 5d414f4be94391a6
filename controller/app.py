"""The Ryu app: a thin shim that installs what controller.steering returns.

Runs on Ryu or os-ken (controller/compat.py), started by controller/manager.py.
Environment:

- FWCLUSTER_STEERING: the cluster spec (switches, ports, nodes) as JSON;
- FWCLUSTER_SYNC (optional): the cluster's sync config (names, key file,
  heartbeat settings); with it the app hears the nodes' heartbeats on the
  sync network and moves a failed node's buckets (failover);
- FWCLUSTER_FAILOVER: ``backup`` (default) or ``spread``;
- FWCLUSTER_EVENTS (optional): a file for membership events, as JSON lines;
- FWCLUSTER_COMMIT (kernel nodes): ``before_steer``, ``after_steer`` or
  ``never``: when to ask the nodes taking a failed node's buckets to commit
  conntrackd's external cache (controller/commit.py).

Flows are installed proactively; no packet of a connection comes here. When
a switch connects, the bucket table it still holds is read back first, so a
restarted controller moves no connection (the switches are fail-secure).
"""
from __future__ import annotations

import json
import os
import select
import socket
import time
from collections import Counter

from controller.compat import (CONFIG_DISPATCHER, MAIN_DISPATCHER, App, hub, nicira_ext,
                               ofp_event, ofproto_v1_3, set_ev_cls)

from controller.commit import TIMEOUT, Commits, check_order
from controller.membership import UP, ClusterMembership
from controller.steering import COOKIE, TABLE_BUCKETS, ClusterSpec, FlowSpec, Steering
from nodes import syncproto as sp
from nodes.observe.metrics import controller_families, exposition
from nodes.shell import config as cluster_config


# Open vSwitch's nx_hash_fields (Ryu 4.34 names only 0 and 1): symmetric_l3l4+udp,
# addresses, protocol and TCP, SCTP and UDP ports, the same in both directions
# (symmetric_l4 left UDP ports out, so every UDP flow between two hosts met one
# node); symmetric_l3, the addresses only.
HASH_FIELDS = {"symmetric_l3l4+udp": 3, "symmetric_l3": 6}


def flow_mod(datapath, spec: FlowSpec):
    """Translate one FlowSpec into an OpenFlow 1.3 flow-mod (add or replace)."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    actions = []
    for action in spec.actions:
        if action[0] == "output":
            actions.append(parser.OFPActionOutput(action[1]))
        elif action[0] == "multipath":
            actions.append(parser.NXActionMultipath(
                fields=HASH_FIELDS[action[4]],
                basis=action[3],
                algorithm=nicira_ext.NX_MP_ALG_MODULO_N, max_link=action[1] - 1, arg=0,
                ofs_nbits=nicira_ext.ofs_nbits(0, 15), dst=action[2]))
        else:
            raise ValueError(f"unknown action {action!r}")
    inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)] if actions else []
    if spec.goto is not None:
        inst.append(parser.OFPInstructionGotoTable(spec.goto))
    return parser.OFPFlowMod(datapath=datapath, cookie=COOKIE, table_id=spec.table,
                             priority=spec.priority, match=parser.OFPMatch(**spec.match),
                             instructions=inst)


class ClusterSteering(App):
    """Installs the steering flows and keeps them following membership."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.environ.get("FWCLUSTER_STEERING")
        if not path:
            raise SystemExit("controller: set FWCLUSTER_STEERING to the cluster spec JSON file")
        with open(path, encoding="utf-8") as fh:
            self.spec = ClusterSpec.from_json(fh.read())
        self.cluster = None
        k = 1
        if os.environ.get("FWCLUSTER_SYNC"):  # the nodes' own sync config, read the same way
            self.cluster = cluster_config.load(os.environ["FWCLUSTER_SYNC"])
            if not self.cluster.controller:
                raise SystemExit("controller: the sync config names no controller address")
            k = self.cluster.settings.k
        self.steering = Steering(self.spec, os.environ.get("FWCLUSTER_FAILOVER", "backup"), k)
        self.membership = None
        self.event_log = open(os.environ["FWCLUSTER_EVENTS"], "a", encoding="utf-8") \
            if os.environ.get("FWCLUSTER_EVENTS") else None
        self.datapaths: dict[int, object] = {}
        self.relearned = False
        self.counters: Counter = Counter()  # node_down, node_up, buckets_moved, flow_mods
        if os.environ.get("FWCLUSTER_METRICS"):  # host:port for Prometheus, as Faucet does
            from nodes.observe.exporter import serve_metrics
            host, _, port = os.environ["FWCLUSTER_METRICS"].rpartition(":")
            serve_metrics(int(port), self.metrics, host or "127.0.0.1")
        self.logger.info("steering %d nodes over %d buckets on %d switches, failover %s",
                         len(self.spec.nodes), self.spec.buckets, len(self.spec.switches),
                         self.steering.policy if self.cluster else "off (no sync config)")
        self.commit_order = None
        if self.cluster:
            self.heartbeat_socket = self.listen_heartbeats()
            if os.environ.get("FWCLUSTER_COMMIT"):
                try:
                    self.commit_order = check_order(os.environ["FWCLUSTER_COMMIT"])
                except ValueError as err:
                    raise SystemExit(f"controller: FWCLUSTER_COMMIT: {err}") from None
                self.commits = Commits(self.cluster.key)
                self.commit_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.commit_socket.setsockopt(socket.IPPROTO_IP,
                                              getattr(socket, "IP_FREEBIND", 15), 1)
                self.commit_socket.bind((self.cluster.controller, 0))
            hub.spawn(self.watch_heartbeats)

    def log_event(self, event: str, **fields) -> None:
        record = {"t": round(time.time(), 6), "event": event, **fields}
        self.logger.info("%s", json.dumps(record))
        if self.event_log:
            self.event_log.write(json.dumps(record) + "\n")
            self.event_log.flush()

    def metrics(self) -> str:
        """The controller's counters in the Prometheus text format."""
        return exposition(controller_families(
            list(self.spec.nodes), list(self.steering.live), list(self.steering.table),
            len(self.datapaths), dict(self.counters),
            dict(self.membership.heartbeats) if self.membership else {}))

    # -- switches ------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features(self, ev):
        datapath = ev.msg.datapath
        if datapath.id not in self.spec.switches:
            self.logger.warning("switch dpid %016x is not in the cluster spec; ignored", datapath.id)
            return
        self.datapaths[datapath.id] = datapath
        ofp, parser = datapath.ofproto, datapath.ofproto_parser
        # What does it still hold? A restarted controller must not move connections.
        datapath.send_msg(parser.OFPFlowStatsRequest(
            datapath, 0, TABLE_BUCKETS, ofp.OFPP_ANY, ofp.OFPG_ANY, COOKIE, 0xFFFFFFFFFFFFFFFF,
            parser.OFPMatch()))

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def flow_stats(self, ev):
        datapath = ev.msg.datapath
        sw = self.spec.switches[datapath.id]
        outputs = {}
        for stat in ev.msg.body:
            bucket = stat.match.get("reg0")
            ports = [a.port for i in stat.instructions for a in getattr(i, "actions", [])
                     if hasattr(a, "port")]
            if bucket is not None and ports:
                outputs[bucket] = ports[0]
        table = self.steering.table_from_flows(sw, outputs)
        if table and not self.relearned and None not in table:
            self.steering.relearn(table)
            self.log_event("bucket_table_relearned", switch=sw.name, live=self.steering.live)
        self.relearned = True
        flows = self.steering.flows()[datapath.id]
        for spec in flows:
            datapath.send_msg(flow_mod(datapath, spec))
        self.counters["flow_mods"] += len(flows)
        datapath.send_msg(datapath.ofproto_parser.OFPBarrierRequest(datapath))
        self.logger.info("switch %s (dpid %016x): installed %d flows", sw.name, datapath.id,
                         len(flows))

    def push(self, buckets: list[int]) -> None:
        """Rewrite the moved buckets (and the ARP path) on every switch."""
        for dpid, flows in self.steering.changed_flows(buckets).items():
            datapath = self.datapaths.get(dpid)
            if datapath is None:
                continue
            for spec in flows:
                datapath.send_msg(flow_mod(datapath, spec))
            self.counters["flow_mods"] += len(flows)
            datapath.send_msg(datapath.ofproto_parser.OFPBarrierRequest(datapath))

    # -- membership ------------------------------------------------------------
    def listen_heartbeats(self) -> socket.socket:
        """The socket heartbeats arrive on: the sync network's address only (it appears
        once the network is up: freebind). Failover without it would be silently off."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_FREEBIND", 15), 1)
        try:
            sock.bind((self.cluster.controller, sp.PORT))
        except OSError as err:
            raise SystemExit(f"controller: cannot hear heartbeats on {self.cluster.controller}:"
                             f"{sp.PORT}: {err.strerror} (another cluster's controller still "
                             "running? 'make clean' stops it)") from None
        sock.setblocking(False)
        return sock

    def watch_heartbeats(self):
        """Hear the nodes' heartbeats; act on what controller.membership concludes.

        Every datagram that has arrived is read before anyone is judged, so a
        controller that fell behind does not take live nodes for dead."""
        sock = self.heartbeat_socket
        judge = ClusterMembership(self.cluster.names, self.cluster.key, self.cluster.settings,
                                  time.monotonic())
        self.membership = judge
        wait = self.cluster.settings.heartbeat / 2
        while True:
            hub.sleep(0)  # let the OpenFlow side run
            readable = select.select([sock], [], [], wait)[0]
            now = time.monotonic()
            while readable:
                try:
                    data = sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    break
                self.act(judge.arrived(data, now, list(self.steering.live)))
            self.act(judge.judge(time.monotonic(), list(self.steering.live)))
            self.counters["judgements_deferred"] = judge.judgements_deferred

    def act(self, actions: list[tuple]) -> None:
        for kind, node, fields in actions:
            if kind == UP:
                self.node_up(node, fields["boot"], fields.get("kept_state", False))
            else:
                self.node_down(node, **fields)

    def node_down(self, node: str, why: str, **fields) -> None:
        if node not in self.steering.live:
            return
        decided = time.time()  # the event's own time comes after the push (and a commit)
        moved = self.steering.node_down(node)
        if node in self.steering.live:  # the last node keeps its buckets
            return
        self.counters["node_down"] += 1
        self.counters["buckets_moved"] += len(moved)
        heirs = sorted({self.steering.table[b] for b in moved})
        commit = {}
        if self.commit_order == "before_steer":
            commit = self.commit(heirs)
        self.push(moved)
        if self.commit_order == "after_steer":
            commit = self.commit(heirs)
        # The switches start applying the first flow-mods while the rest are sent (Ryu's
        # send queue holds 16): a packet can take the new path before this is logged.
        self.log_event("node_down", node=node, why=why, buckets_moved=len(moved),
                       live=self.steering.live, decided=round(decided, 6), **fields,
                       **({"commit": self.commit_order, "commit_ms": commit}
                          if self.commit_order else {}))

    def commit(self, heirs: list[str]) -> dict:
        """Ask ``heirs`` (kernel nodes) to commit conntrackd's external cache and wait
        for their answers, TIMEOUT at most; {node: ms to its answer, or None}."""
        ids = {n: i for i, n in self.cluster.names.items()}
        start = time.monotonic()
        for node in heirs:
            self.commit_socket.sendto(self.commits.request(ids[node]),
                                      (self.cluster.addresses[ids[node]], sp.PORT))
        done = {node: None for node in heirs}
        while any(v is None for v in done.values()):
            left = start + TIMEOUT - time.monotonic()
            if left <= 0 or not select.select([self.commit_socket], [], [], left)[0]:
                break
            answer = self.commits.answered(self.commit_socket.recv(4096))
            if answer is not None:
                node = self.cluster.names[answer[0]]
                done[node] = round((time.monotonic() - start) * 1000, 3) if answer[1] == 0 \
                    else None
                self.counters["commits" if answer[1] == 0 else "commit_errors"] += 1
        self.counters["commit_timeouts"] += sum(1 for v in done.values() if v is None)
        return done

    def node_up(self, node: str, boot: int, kept_state: bool = False) -> None:
        back = self.steering.node_up(node, kept_state)
        self.counters["node_up"] += 1
        self.counters["buckets_moved"] += len(back)
        self.log_event("node_up", node=node, boot=boot, kept_state=kept_state,
                       buckets_returned=len(back), live=self.steering.live)
        self.push(back)
