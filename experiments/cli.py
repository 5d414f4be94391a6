"""fwcluster: run experiments, plot them, clean up.

    fwcluster run experiments/specs/demo.toml     # run, then plot
    fwcluster run SPEC --dry-run                  # validate only (no root)
    fwcluster plot results/demo-...               # figures of one run
    fwcluster reproduce [--quick] [--shard i/n]   # the reproduction suite, then its report
    fwcluster figures                             # every figure and report, from raw data
    fwcluster cli [--nodes 3] [--sync ondemand]   # the interactive cluster (make cli)
    fwcluster clean                               # remove leftovers of a crashed run
"""
from __future__ import annotations

import argparse
import os
import signal
import sys


def end_like_ctrl_c() -> None:
    """SIGTERM and SIGHUP (a batch scheduler's time limit, a closed terminal) end the
    command as Ctrl-C does: through the cluster's cleanup, which a second one of them
    does not cut. Unhandled, they ended Python at once and left the point's
    controller, nodes and switches running."""
    def stop(signum, _frame):
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        print(f"fwcluster: {signal.Signals(signum).name}: stopping, taking the cluster down",
              file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fwcluster", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run an experiment spec, then plot it")
    p_run.add_argument("spec")
    p_run.add_argument("--dry-run", action="store_true", help="validate the spec and stop")
    p_run.add_argument("--results", default="results", help="folder for run folders")
    p_plot = sub.add_parser("plot", help="figures of one run folder")
    p_plot.add_argument("run_dir")
    p_rep = sub.add_parser("reproduce", help="run the reproduction suite, then its report")
    p_rep.add_argument("--quick", action="store_true", help="the CI form: few points")
    p_rep.add_argument("--shard", default="1/1", help="run every n-th point from the i-th (i/n)")
    p_rep.add_argument("--only", help="comma-separated experiment prefixes, e.g. e2,e3")
    p_rep.add_argument("--results", default="results")
    p_rep.add_argument("--dry-run", action="store_true", help="list this shard's points")
    p_fig = sub.add_parser("figures", help="every figure and report, from raw data alone")
    p_fig.add_argument("--results", default="results")
    p_cli = sub.add_parser("cli", help="the interactive cluster: Mininet's CLI with cluster "
                           "commands (help inside lists them)")
    p_cli.add_argument("--nodes", type=int, default=3, help="firewall nodes (1..8)")
    p_cli.add_argument("--sync", default="ondemand",
                       help="sync mode at start: none, periodic, ondemand, combined, auto, home")
    p_cli.add_argument("--failover", default="backup", choices=("backup", "spread", "none"),
                       help="how the switches follow membership (none: they do not)")
    p_cli.add_argument("--node", default="python", choices=("python", "kernel"),
                       help="python nodes, or kernel nodes (nftables + conntrackd)")
    p_cli.add_argument("--fastpath", default="off", choices=("on", "off", "none"),
                       help="python nodes' kernel fast path: on, off (ready: 'set "
                            "fastpath=on' switches it on) or none")
    p_cli.add_argument("--clients", type=int, default=2)
    p_cli.add_argument("--servers", type=int, default=2)
    p_cli.add_argument("--rules", default="experiments/rules/ftp.rules")
    p_cli.add_argument("--capture", default="",
                       help="comma-separated: sync and/or host interfaces (c1-eth0) to record "
                            "as pcap in the run folder")
    p_cli.add_argument("--metrics-port", type=int, default=None,
                       help="serve Prometheus metrics: nodes on this port, controller on +1")
    p_cli.add_argument("--no-ftp-server", action="store_true",
                       help="start no FTP server on the server hosts: port 21 is free for "
                            "your own ('ftpd start' starts the testbed's later)")
    p_cli.add_argument("--script", help="run the CLI commands in this file, then stop")
    p_cli.add_argument("--run-dir", help="folder for logs and captures (default results/cli-TIME)")
    p_dec = sub.add_parser("decode", help="a capture through tshark with the sync protocol's "
                           "dissector (as root too: Wireshark 4.4 runs no Lua as root)")
    p_dec.add_argument("pcap")
    p_dec.add_argument("tshark_args", nargs=argparse.REMAINDER,
                       help="tshark's own options, e.g. -Y fwsync -V")
    sub.add_parser("clean", help="remove what a crashed run left, and Mininet's mn -c: "
                   "every Mininet network on the machine")
    args = parser.parse_args(argv)

    from experiments import spec as specs
    try:
        if args.command in ("run", "reproduce"):
            end_like_ctrl_c()
        if args.command == "run":
            spec = specs.load(args.spec)
            pts = specs.points(spec)
            if args.dry_run:
                print(f"{args.spec}: ok, {len(pts)} point(s): {', '.join(p.name for p in pts)}")
                return 0
            from experiments.plot import plot_run
            from experiments.run import run
            run_dir = run(args.spec, args.results)
            for path in plot_run(run_dir):
                print(f"figure: {path}")
            print(f"results: {run_dir}")
        elif args.command == "plot":
            from experiments.plot import plot_run
            for path in plot_run(args.run_dir):
                print(f"figure: {path}")
        elif args.command == "reproduce":
            from experiments import reproduce as rep
            shard = rep.parse_shard(args.shard)
            only = args.only.split(",") if args.only else None
            if args.dry_run:
                todo = rep.plan(rep.suite(only, args.quick), shard)
                for spec, point in todo:
                    print(f"{spec['name']}/{point.name}")
                print(f"{len(todo)} point(s) in shard {args.shard}")
                return 0
            folder = rep.reproduce(args.results, args.quick, shard, only)
            left = rep.missing(folder, args.quick)
            if left:
                print(f"reproduce: this shard is done; {len(left)} point(s) of the suite are "
                      f"not in {folder} yet: gather every shard there, then 'fwcluster figures'")
                return 0
            from experiments.analysis import report
            path, figs = report(folder)
            for fig in figs:
                print(f"figure: {fig}")
            print(f"report: {path}")
        elif args.command == "figures":
            from experiments.plot import plot_all
            paths = plot_all(args.results)
            for path in paths:
                print(f"figure: {path}")
            print(f"{len(paths)} figure files under {os.path.abspath(args.results)}")
        elif args.command == "cli":
            from nodes.sync import MODES
            if args.sync not in MODES:
                raise specs.SpecError(f"sync mode {args.sync!r} unknown (use {', '.join(MODES)})")
            if not 1 <= args.nodes <= specs.MAX_NODES:
                raise specs.SpecError(f"--nodes {args.nodes}: a cluster has 1..{specs.MAX_NODES}"
                                      " nodes")
            if args.sync == "home" and args.failover == "none":
                raise specs.SpecError("mode home needs the cluster network: drop --failover none")
            args.capture = [c for c in args.capture.split(",") if c]
            from experiments.console import main_console
            return main_console(args)
        elif args.command == "decode":
            from topo.capture import decode
            print(decode(args.pcap, *args.tshark_args), end="")
        elif args.command == "clean":
            from topo.net import clean_leftovers
            clean_leftovers(full=True)
            print("cleaned")
    except specs.SpecError as err:
        print(f"fwcluster: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError) as err:
        print(f"fwcluster: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
