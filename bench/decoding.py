"""``python -m bench.decoding``: AR against Spec-VLA speculative decoding, side by side in one run.

For every episode (suite, task, seed) every method drives the simulated arm in closed loop from
the same seed, one method after the other in this process, on one shared set of ONNX Runtime
engines. Reported per method: success per suite, the paired success difference against AR with
its 95% interval, verifier passes per action, accepted drafts per verify pass, tokens per
verifier pass, per-action latency p50/p99 and the wall-clock speedup against AR two ways: per
episode, median AR latency / median method latency (min / median / max over episodes), and the
throughput ratio, AR's mean latency per action / the method's over all paired episodes (with a
95% interval from resampling episodes). The median of per-episode medians jumps between modes when
step times are bimodal (one verifier pass or two); the mean-latency ratio is what a control loop
gains. Success is also compared with AR pair by pair within each suite. Methods:
those of ``bench.methods`` (``ar``, ``chain-rR``, ``tree-rR``, ``specvla``, and the kinematic
layer's ``kerv``, ``heisd``, ``dyq``, ``full``); each runs as the robot's own ``EdgePolicy``
configured for it, and every policy shares one set of engines (resident memory is read after each
method's engines are loaded). Results go to ``--out`` as JSON (with every step's plan: mode,
precision, threshold) and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.stats import paired_difference, percentiles, speedup, throughput_ratio

DEFAULT_METHODS = "ar,chain-r0,chain-r3,chain-r5,chain-r9,tree-r0,tree-r3,tree-r5,tree-r9"


def rss_mb() -> float:
    """Resident memory of this process (Linux /proc; NaN elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def build_policies(methods: list[str], base, files) -> tuple[dict, dict]:
    """One ``EdgePolicy`` per method, all on one set of engines; resident memory after each load."""
    from edge.policy import EdgePolicy

    from bench.methods import method_config

    configs = {m: method_config(m, base, files) for m in methods}  # every name checked before loading
    # methods that need the drafter first, so the engines are loaded once (AR's set has no drafter)
    order = sorted(methods, key=lambda m: configs[m].decoder.method == "ar" and configs[m].kinematic is None)
    policies, memory, first, before = {}, {}, None, rss_mb()
    for m in order:
        policies[m] = first = EdgePolicy(configs[m], share=first)
        now = rss_mb()
        memory[m] = {"rss_mb": now, "added_mb": now - before}
        before = now
    return policies, memory


def run(args) -> dict:
    from edge.engine import configure_threads
    from edge.policy import PolicyConfig
    from sim.env import ArmEnv
    from sim.rollout import episode_plan, run_episode

    from bench.methods import MethodFiles, parse_variants

    methods = args.methods.split(",")
    configure_threads(args.threads)
    files = MethodFiles(r_bins=args.r, kerv=args.kerv or "", retrieval=args.retrieval or "", dyq=args.dyq or "",
                        dyq_levels=tuple(args.dyq_levels.split(",")),
                        dyq_bounds=tuple(float(x) for x in args.dyq_bounds.split(",") if x.strip()),
                        variants=parse_variants(args.variant))
    policies, memory = build_policies(methods, PolicyConfig(engines=args.engines, precision=args.precision,
                                                            threads=None), files)
    plan = episode_plan(args.suite, args.episodes, args.seed_start)
    rows = []
    bar = tqdm(total=len(plan) * len(methods), desc="bench", dynamic_ncols=True)
    for suite, task, seed in plan:
        for m in methods:
            env = ArmEnv(suite, task, seed)
            pol = policies[m]
            infos, step_ms = [], []

            class _Logged:  # the policy, with each step's plan kept for the timeline plot
                def reset(self):
                    pol.reset()

                def infer(self, obs):
                    t0 = time.perf_counter()
                    out = pol.infer(obs)  # the whole step: the kinematic layer's CPU work included
                    step_ms.append((time.perf_counter() - t0) * 1e3)
                    infos.append(dict(pol.last_info))
                    return out

            res = run_episode(env, _Logged())
            env.close()
            st = res.pop("stats")
            rows.append({**{k: res[k] for k in ("suite", "task", "seed", "success", "length")}, "method": m,
                         "verifier_passes": [s.verifier_passes for s in st],
                         "drafter_passes": [s.drafter_passes for s in st],
                         "accepted": [a for s in st for a in s.accepted],
                         "prefill_accepted": [s.prefill_accepted for s in st],
                         "compensated": [s.compensated for s in st],
                         "total_ms": step_ms, "decode_ms": [s.total_ms for s in st],
                         "prefill_candidates": [s.prefill_candidates for s in st], "prefill_ms": [s.prefill_ms for s in st],
                         "verify_ms": [s.verify_ms / max(s.verifier_passes - 1, 1) for s in st],
                         "draft_ms": [s.draft_ms for s in st],
                         "steps": [{k: i.get(k) for k in ("mode", "precision", "threshold_bins", "whole")} for i in infos]
                         if any(infos) else []})
            bar.update(1)
    bar.close()
    return {"methods": methods, "episodes": rows, "args": vars(args), "rss_mb_after_load": memory}


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
        verified = passes[passes > 0]
        acc = np.concatenate([r["accepted"] for r in rs]) if any(r["accepted"] for r in rs) else np.zeros(0)
        ms = np.concatenate([r["total_ms"] for r in rs])
        s = {"success": {su: float(np.mean([r["success"] for r in rs if r["suite"] == su])) for su in suites},
             "success_all": float(np.mean([r["success"] for r in rs])),
             "verifier_passes_per_action": float(passes.mean()),
             "accepted_per_verify": float(acc.mean()) if acc.size else float("nan"),
             "tokens_per_verifier_pass": float(7 / verified.mean()) if verified.size else float("nan"),
             "skip_rate": float((passes == 0).mean()),
             "latency_ms": percentiles(ms), "episodes": len(rs),
             "prefill_ms_p50": float(np.median(np.concatenate([r["prefill_ms"] for r in rs]))),
             "verify_pass_ms_p50": float(np.median(np.concatenate([r["verify_ms"] for r in rs]))),
             "draft_ms_per_action_p50": float(np.median(np.concatenate([r["draft_ms"] for r in rs]))),
             **{k: result.get("rss_mb_after_load", {}).get(m, {}).get(k, float("nan")) for k in ("rss_mb", "added_mb")}}
        modes = [st["mode"] for r in rs for st in r.get("steps", []) if st.get("mode")]
        if modes:
            s["mode_mix"] = {k: modes.count(k) / len(modes) for k in sorted(set(modes))}
            whole = [st.get("whole") or "none" for r in rs for st in r.get("steps", []) if st.get("mode") == "onepass"]
            if whole:  # of the one-pass steps: whose candidate became the whole action
                s["onepass_whole"] = {k: whole.count(k) / len(whole) for k in sorted(set(whole))}
        if ar is not None:
            common = sorted(set(by[m]) & set(ar))
            s["paired_success_vs_ar"] = paired_difference([ar[k]["success"] for k in common],
                                                          [by[m][k]["success"] for k in common])
            s["paired_success_vs_ar_by_suite"] = {
                su: paired_difference([ar[k]["success"] for k in common if k[0] == su],
                                      [by[m][k]["success"] for k in common if k[0] == su]) for su in suites}
            s["speedup_vs_ar"] = speedup([np.median(ar[k]["total_ms"]) for k in common],
                                         [np.median(by[m][k]["total_ms"]) for k in common])
            s["throughput_vs_ar"] = throughput_ratio([ar[k]["total_ms"] for k in common],
                                                     [by[m][k]["total_ms"] for k in common])
        out[m] = s
    return out


def markdown(summary: dict, suites: list[str]) -> str:
    head = ("| method | " + " | ".join(f"success {s}" for s in suites) + " | success all | vs AR (paired, 95% CI) "
            "| verifier passes / action | tokens / verified pass | skipped | p50 ms | p99 ms "
            "| speedup vs AR min / med / max | mean-latency speedup [95%] | RSS MB (+ this method) |")
    lines = [head, "|" + "---|" * (len(suites) + 11)]
    for m, s in summary.items():
        d = s.get("paired_success_vs_ar")
        diff = f"{100 * d['mean']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]" if d and d["n"] > 1 else "-"
        sp = s.get("speedup_vs_ar")
        spd = f"{sp['min']:.2f} / {sp['median']:.2f} / {sp['max']:.2f}" if sp else "-"
        th = s.get("throughput_vs_ar")
        thr = f"{th['ratio']:.2f} [{th['ci95'][0]:.2f}, {th['ci95'][1]:.2f}]" if th else "-"
        lines.append(f"| {m} | " + " | ".join(f"{100 * s['success'][su]:.0f}%" for su in suites)
                     + f" | {100 * s['success_all']:.1f}% | {diff} | {s['verifier_passes_per_action']:.2f} | "
                     f"{s['tokens_per_verifier_pass']:.2f} | {100 * s['skip_rate']:.0f}% | {s['latency_ms']['p50']:.1f} | "
                     f"{s['latency_ms']['p99']:.1f} | {spd} | {thr} | {s.get('rss_mb', float('nan')):.0f} "
                     f"(+{s.get('added_mb', float('nan')):.0f}) |")
    return "\n".join(lines)


def add_args(p: argparse.ArgumentParser, default_methods: str, default_out: str) -> None:
    p.add_argument("--engines", default="build/engines", help="engine set (python -m export.build_engines)")
    p.add_argument("--methods", default=default_methods, help="comma-separated (bench.methods)")
    p.add_argument("--suite", default="all")
    p.add_argument("--episodes", type=int, default=10, help="episodes per suite (each run by every method)")
    p.add_argument("--seed-start", type=int, default=100_000)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--r", type=int, default=5, help="relaxed threshold of specvla and the kinematic methods' base")
    p.add_argument("--kerv", help="calib kerv file (methods kerv, full)")
    p.add_argument("--retrieval", help="calib retrieval calibration JSON (methods heisd, full)")
    p.add_argument("--dyq", help="calib dyq file (methods dyq, full): scales and ladder; without it "
                   "--dyq-levels/--dyq-bounds with the default scales")
    p.add_argument("--dyq-levels", default="int8,fp32", help="DyQ precisions, lowest first (each built)")
    p.add_argument("--dyq-bounds", default="0.5", help="DyQ sensitivity bounds between the levels (0.5: the paper's theta_fp)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=BASE:KEY=VALUE[;KEY=VALUE]",
                   help="a method BASE with PolicyConfig overrides, named NAME for --methods (bench.methods)")
    p.add_argument("--out", default=default_out, help="output directory")


def execute(args) -> tuple[dict, dict, str]:
    """Run, summarise, write ``results.json`` and ``table.md`` into ``--out``, print the table."""
    import sim  # noqa: F401  (headless rendering backend)

    t0 = time.monotonic()
    result = run(args)
    summary = summarize(result)
    suites = list(dict.fromkeys(r["suite"] for r in result["episodes"]))
    table = markdown(summary, suites)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result["wall_s"] = time.monotonic() - t0
    (out / "results.json").write_text(json.dumps({**result, "summary": summary}, indent=1, default=float))
    (out / "table.md").write_text(table + "\n")
    print(table)
    if "ar" in summary:
        a = summary["ar"]
        print(f"\nAR split: prefill {a['prefill_ms_p50']:.2f} ms, one decode pass {a['verify_pass_ms_p50']:.2f} ms "
              f"(prefill = {a['prefill_ms_p50'] / a['verify_pass_ms_p50']:.1f} decode passes)")
    print(f"\n{len(result['episodes'])} episodes in {result['wall_s']:.0f} s -> {out}")
    return result, summary, table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.decoding", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(p, DEFAULT_METHODS, "runs/bench_decoding")
    execute(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
