"""``python -m bench.decoding``: AR against Spec-VLA speculative decoding, side by side in one run.

For every episode (suite, task, seed) every method drives the simulated arm in closed loop from
the same seed, one method after the other in this process, on one shared set of ONNX Runtime
engines. Reported per method: success per suite, the paired success difference against AR with
its 95% interval, verifier passes per action, accepted drafts per verify pass, tokens per
verifier pass, per-action latency p50/p99 and the wall-clock speedup against AR (per episode:
median AR latency / median method latency; min / median / max over episodes). Methods:
``ar``, ``chain-rR`` and ``tree-rR`` (speculative decoding with relaxed threshold R bins).
Results go to ``--out`` as JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.stats import paired_difference, percentiles, speedup

DEFAULT_METHODS = "ar,chain-r0,chain-r3,chain-r5,chain-r9,tree-r0,tree-r3,tree-r5,tree-r9"


def decoder_for(name: str):
    from edge.policy import DecoderConfig

    if name == "ar":
        return DecoderConfig(method="ar")
    try:
        kind, r = name.split("-r")
        assert kind in ("chain", "tree")
        return DecoderConfig(method="speculative", draft=kind, threshold_bins=int(r))
    except (ValueError, AssertionError):
        raise ValueError(f"method {name!r}: expected ar, chain-rR or tree-rR (R an integer)") from None


class _Bound:
    """A policy view that decodes with one method's decoder."""

    def __init__(self, policy, decoder):
        self.policy, self.decoder = policy, decoder

    def reset(self):
        self.policy.reset()

    def infer(self, obs):
        return self.policy.infer(obs, self.decoder)


def run(args) -> dict:
    from edge.engine import configure_threads
    from edge.policy import EdgePolicy, PolicyConfig
    from sim.env import ArmEnv
    from sim.rollout import episode_plan, run_episode

    methods = args.methods.split(",")
    decoders = {m: decoder_for(m) for m in methods}
    configure_threads(args.threads)
    policy = EdgePolicy(PolicyConfig(engines=args.engines, precision=args.precision, threads=None))
    plan = episode_plan(args.suite, args.episodes, args.seed_start)
    rows = []
    bar = tqdm(total=len(plan) * len(methods), desc="bench", dynamic_ncols=True)
    for suite, task, seed in plan:
        for m in methods:
            env = ArmEnv(suite, task, seed)
            res = run_episode(env, _Bound(policy, decoders[m]))
            env.close()
            st = res.pop("stats")
            rows.append({**{k: res[k] for k in ("suite", "task", "seed", "success", "length")}, "method": m,
                         "verifier_passes": [s.verifier_passes for s in st],
                         "drafter_passes": [s.drafter_passes for s in st],
                         "accepted": [a for s in st for a in s.accepted],
                         "total_ms": [s.total_ms for s in st], "prefill_ms": [s.prefill_ms for s in st],
                         "verify_ms": [s.verify_ms / max(s.verifier_passes - 1, 1) for s in st],
                         "draft_ms": [s.draft_ms for s in st]})
            bar.update(1)
    bar.close()
    return {"methods": methods, "episodes": rows, "args": vars(args)}


def summarize(result: dict) -> dict:
    rows, methods = result["episodes"], result["methods"]
    key = lambda r: (r["suite"], r["task"], r["seed"])  # noqa: E731
    by = {m: {key(r): r for r in rows if r["method"] == m} for m in methods}
    suites = list(dict.fromkeys(r["suite"] for r in rows))
    ar = by.get("ar")
    out = {}
    for m in methods:
        rs = list(by[m].values())
        passes = np.concatenate([r["verifier_passes"] for r in rs])
        acc = np.concatenate([r["accepted"] for r in rs]) if any(r["accepted"] for r in rs) else np.zeros(0)
        ms = np.concatenate([r["total_ms"] for r in rs])
        s = {"success": {su: float(np.mean([r["success"] for r in rs if r["suite"] == su])) for su in suites},
             "success_all": float(np.mean([r["success"] for r in rs])),
             "verifier_passes_per_action": float(passes.mean()),
             "accepted_per_verify": float(acc.mean()) if acc.size else float("nan"),
             "tokens_per_verifier_pass": float(7 / passes.mean()),
             "latency_ms": percentiles(ms), "episodes": len(rs),
             "prefill_ms_p50": float(np.median(np.concatenate([r["prefill_ms"] for r in rs]))),
             "verify_pass_ms_p50": float(np.median(np.concatenate([r["verify_ms"] for r in rs]))),
             "draft_ms_per_action_p50": float(np.median(np.concatenate([r["draft_ms"] for r in rs])))}
        if ar is not None:
            common = sorted(set(by[m]) & set(ar))
            s["paired_success_vs_ar"] = paired_difference([ar[k]["success"] for k in common],
                                                          [by[m][k]["success"] for k in common])
            s["speedup_vs_ar"] = speedup([np.median(ar[k]["total_ms"]) for k in common],
                                         [np.median(by[m][k]["total_ms"]) for k in common])
        out[m] = s
    return out


def markdown(summary: dict, suites: list[str]) -> str:
    head = ("| method | " + " | ".join(f"success {s}" for s in suites) + " | success all | vs AR (paired, 95% CI) "
            "| verifier passes / action | accepted / verify | p50 ms | p99 ms | speedup vs AR min / med / max |")
    lines = [head, "|" + "---|" * (len(suites) + 8)]
    for m, s in summary.items():
        d = s.get("paired_success_vs_ar")
        diff = f"{100 * d['mean']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]" if d and d["n"] > 1 else "-"
        sp = s.get("speedup_vs_ar")
        spd = f"{sp['min']:.2f} / {sp['median']:.2f} / {sp['max']:.2f}" if sp else "-"
        lines.append(f"| {m} | " + " | ".join(f"{100 * s['success'][su]:.0f}%" for su in suites)
                     + f" | {100 * s['success_all']:.1f}% | {diff} | {s['verifier_passes_per_action']:.2f} | "
                     f"{s['accepted_per_verify']:.2f} | {s['latency_ms']['p50']:.1f} | {s['latency_ms']['p99']:.1f} | {spd} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.decoding", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engines", default="build/engines", help="engine set (python -m export.build_engines)")
    p.add_argument("--methods", default=DEFAULT_METHODS)
    p.add_argument("--suite", default="all")
    p.add_argument("--episodes", type=int, default=10, help="episodes per suite (each run by every method)")
    p.add_argument("--seed-start", type=int, default=100_000)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/bench_decoding", help="output directory")
    args = p.parse_args(argv)
    import sim  # noqa: F401  (headless rendering backend)

    t0 = time.monotonic()
    result = run(args)
    summary = summarize(result)
    suites = list(dict.fromkeys(r["suite"] for r in result["episodes"]))
    table = markdown(summary, suites)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({**result, "summary": summary}, indent=1, default=float))
    (out / "table.md").write_text(table + "\n")
    print(table)
    if "ar" in summary:
        a = summary["ar"]
        print(f"\nAR split: prefill {a['prefill_ms_p50']:.2f} ms, one decode pass {a['verify_pass_ms_p50']:.2f} ms "
              f"(prefill = {a['prefill_ms_p50'] / a['verify_pass_ms_p50']:.1f} decode passes)")
    print(f"\n{len(result['episodes'])} episodes in {time.monotonic() - t0:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
