"""fwcluster: run experiments, plot them, clean up.

    fwcluster run experiments/specs/demo.toml     # run, then plot
    fwcluster run SPEC --dry-run                  # validate only (no root)
    fwcluster plot results/demo-...               # figures of one run
    fwcluster figures                             # figures of every run
    fwcluster clean                               # remove leftovers of a crashed run
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fwcluster", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run an experiment spec, then plot it")
    p_run.add_argument("spec")
    p_run.add_argument("--dry-run", action="store_true", help="validate the spec and stop")
    p_run.add_argument("--results", default="results", help="folder for run folders")
    p_plot = sub.add_parser("plot", help="figures of one run folder")
    p_plot.add_argument("run_dir")
    p_fig = sub.add_parser("figures", help="figures of every run folder")
    p_fig.add_argument("--results", default="results")
    sub.add_parser("clean", help="remove what a crashed run left (Mininet's mn -c)")
    args = parser.parse_args(argv)

    from experiments import spec as specs
    try:
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
        elif args.command == "figures":
            from experiments.plot import plot_all
            paths = plot_all(args.results)
            for path in paths:
                print(f"figure: {path}")
            print(f"{len(paths)} figure files under {os.path.abspath(args.results)}")
        elif args.command == "clean":
            from topo.net import clean_leftovers
            clean_leftovers()
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
