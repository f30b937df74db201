"""``python -m calib``: fit what the runtime needs from recorded data.

Subcommands:
  stats      action normalisation statistics (q01/q99) for the OpenVLA codec
  kerv       KERV: per-DoF Kalman filter noise (Q, R) and the dynamic-threshold bounds
  retrieval  HeiSD: the retrieval store (image keys -> current and next actions) and its bounds
  dyq        DyQ-VLA: sensitivity scales (mu_max, nu_max) and the precision ladder bounds

Each fitting module ``calib/<name>.py`` registers its subcommand with ``add_parser(sub)``, which
sets ``func`` (args -> exit code).
"""

from __future__ import annotations

import argparse
import logging
import sys

from calib.dataset import DatasetError

FITTERS = ("kerv", "retrieval", "dyq")  # modules that add a subcommand


def _cmd_stats(args: argparse.Namespace) -> int:
    from calib.stats import fit_action_stats, write_action_stats

    stats, report = fit_action_stats(args.data)
    out = write_action_stats(stats, report, args.out, source=str(args.data))
    print(f"action stats from {report['episodes']} episodes / {report['steps']} steps -> {out}")
    names = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
    print(f"{'dim':>8} {'q01':>10} {'q99':>10} {'mean':>10} {'std':>10} normalised")
    for i, n in enumerate(names):
        print(f"{n:>8} {stats.q01[i]:>10.5f} {stats.q99[i]:>10.5f} {stats.mean[i]:>10.5f} {stats.std[i]:>10.5f} {stats.mask[i]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("stats", help="fit action normalisation statistics (q01/q99)")
    p.add_argument("--data", required=True, help="dataset directory written by `python -m sim.collect`")
    p.add_argument("--out", required=True, help="output JSON file")
    p.set_defaults(func=_cmd_stats)
    import importlib

    for name in FITTERS:
        try:
            mod = importlib.import_module(f"calib.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"calib.{name}":
                raise
            continue  # not built yet
        mod.add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
