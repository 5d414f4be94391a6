"""The Ryu app: a thin shim that installs what controller.steering returns.

Started by ryu-manager (see controller/manager.py) with the cluster spec in
the file named by $FWCLUSTER_STEERING. Flows are installed proactively when
a switch connects: no packet of a connection ever comes to the controller.
"""
from __future__ import annotations

import os

import controller.compat  # noqa: F401  (before ryu)
from ryu.base import app_manager
from ryu.controller import ofp_event
from ryu.controller.handler import CONFIG_DISPATCHER, set_ev_cls
from ryu.ofproto import nicira_ext, ofproto_v1_3

from controller.steering import COOKIE, ClusterSpec, FlowSpec, cluster_flows


def flow_mod(datapath, spec: FlowSpec):
    """Translate one FlowSpec into an OpenFlow 1.3 flow-mod."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    actions = []
    for action in spec.actions:
        if action[0] == "output":
            actions.append(parser.OFPActionOutput(action[1]))
        elif action[0] == "multipath":
            actions.append(parser.NXActionMultipath(
                fields=nicira_ext.NX_HASH_FIELDS_SYMMETRIC_L4, basis=0,
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


class ClusterSteering(app_manager.RyuApp):
    """Installs the steering flows on every switch of the cluster spec."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.environ.get("FWCLUSTER_STEERING")
        if not path:
            raise SystemExit("controller: set FWCLUSTER_STEERING to the cluster spec JSON file")
        with open(path, encoding="utf-8") as fh:
            self.spec = ClusterSpec.from_json(fh.read())
        self.flows = cluster_flows(self.spec)
        self.logger.info("steering %d nodes over %d buckets on %d switches",
                         len(self.spec.nodes), self.spec.buckets, len(self.spec.switches))

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features(self, ev):
        datapath = ev.msg.datapath
        flows = self.flows.get(datapath.id)
        if flows is None:
            self.logger.warning("switch dpid %016x is not in the cluster spec; ignored", datapath.id)
            return
        ofp, parser = datapath.ofproto, datapath.ofproto_parser
        datapath.send_msg(parser.OFPFlowMod(datapath=datapath, command=ofp.OFPFC_DELETE,
                                            table_id=ofp.OFPTT_ALL, out_port=ofp.OFPP_ANY,
                                            out_group=ofp.OFPG_ANY, match=parser.OFPMatch()))
        for spec in flows:
            datapath.send_msg(flow_mod(datapath, spec))
        datapath.send_msg(parser.OFPBarrierRequest(datapath))
        self.logger.info("switch %s (dpid %016x): installed %d flows",
                         self.spec.switches[datapath.id].name, datapath.id, len(flows))
