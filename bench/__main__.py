"""``python -m bench --methods ar,specvla,kerv,heisd,dyq,full --suite all --episodes N``: every
method side by side, with plots and a Jetson projection.

All methods run interleaved per seed in one process on one set of engines (``bench.decoding``),
so machine noise hits them alike; success differences come with paired 95% intervals. Writes into
``--out``: ``results.json`` (every episode and step), ``table.md`` (success per suite, verifier
passes per action, accepted length, speedup against AR, latency p50/p99, resident memory),
``jetson.md`` (``bench.jetson``: the measured pass counts priced for OpenVLA-7B on a Jetson AGX
Orin at FP16, INT8 and INT4) and the plots of ``bench.plots``. ``--quick``: one episode per suite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.decoding import add_args, execute

DEFAULT_METHODS = "ar,specvla,kerv,heisd,dyq,full"


def jetson_table(result: dict, precision: str = "fp32") -> str:
    from bench.jetson import pass_costs_ms, project

    lines = ["| method | FP16 actions/s | INT8 actions/s | INT4 (W4A16) actions/s | W4A8 actions/s | own precision mix actions/s |",
             "|---|---|---|---|---|---|"]
    for m in result["methods"]:
        rows = [r for r in result["episodes"] if r["method"] == m]
        cells = [f"{project(rows, p)['actions_per_s']:.2f}" for p in ("fp16", "int8", "int4", "int4a8")]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {project(rows, default=precision)['actions_per_s']:.2f} |")
    c = pass_costs_ms("fp16")
    lines.append("")
    lines.append(f"Cost model (bench/jetson.py): FP16 prefill {c['prefill_ms']:.0f} ms, decode/verify pass "
                 f"{c['decode_ms']:.0f} ms, drafter pass {c['draft_ms']:.1f} ms on a Jetson AGX Orin 64 GB.")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(p, DEFAULT_METHODS, "runs/bench")
    p.add_argument("--quick", action="store_true", help="one episode per suite (a smoke run of every method)")
    args = p.parse_args(argv)
    if args.quick:
        args.episodes = 1
    from bench.plots import plot_all

    result, summary, _ = execute(args)
    jt = jetson_table(result, args.precision)
    (Path(args.out) / "jetson.md").write_text(jt + "\n")
    print("\n" + jt)
    for path in plot_all(result, summary, args.out):
        print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
