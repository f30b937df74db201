"""PNG plots of a benchmark result (``bench.decoding``'s JSON): matplotlib, headless.

- ``pareto.png``: per suite, success against the median wall-clock speedup over AR, one point per
  method (up and right is better).
- ``accepted_hist.png``: per method, the histogram of tokens accepted per verifier pass (drafts
  accepted in each verify round, and whole-action candidates accepted in the prefill).
- ``timeline.png``: one episode of the chosen method: mode, precision and acceptance threshold
  per control step, with the verifier passes each step cost.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_all"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto(result: dict, summary: dict, out: Path) -> Path:
    plt = _plt()
    suites = list(dict.fromkeys(r["suite"] for r in result["episodes"]))
    fig, axes = plt.subplots(1, len(suites), figsize=(4 * len(suites), 3.6), squeeze=False)
    for ax, su in zip(axes[0], suites):
        for m, s in summary.items():
            x = s.get("speedup_vs_ar", {}).get("median", 1.0)
            ax.scatter(x, 100 * s["success"][su], s=30)
            ax.annotate(m, (x, 100 * s["success"][su]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_title(su)
        ax.set_xlabel("speedup vs AR (median)")
        ax.set_ylabel("success %")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "pareto.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def accepted_hist(result: dict, out: Path) -> Path:
    plt = _plt()
    methods = [m for m in result["methods"] if m != "ar"] or result["methods"]
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3), squeeze=False)
    for ax, m in zip(axes[0], methods):
        rows = [r for r in result["episodes"] if r["method"] == m]
        acc = [a for r in rows for a in r["accepted"]]
        pre = [a for r in rows for a, c in zip(r.get("prefill_accepted", []), r.get("prefill_candidates", [])) if c > 0]
        bins = np.arange(-0.5, 7.5, 1)
        ax.hist([acc, pre], bins=bins, stacked=True, label=["verify rounds", "prefill candidates"])
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("tokens accepted")
    axes[0][0].set_ylabel("count")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = out / "accepted_hist.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def timeline(result: dict, out: Path, method: str | None = None) -> Path | None:
    plt = _plt()
    rows = [r for r in result["episodes"] if r.get("steps") and (method is None or r["method"] == method)]
    if not rows:
        return None
    r = max(rows, key=lambda x: (x["method"] == "full", x["success"], x["length"]))
    steps = r["steps"]
    modes = ["skip", "onepass", "drafter", "ar"]
    precisions = sorted({s["precision"] for s in steps if s.get("precision")})
    t = np.arange(len(steps))
    fig, axes = plt.subplots(4, 1, figsize=(9, 6), sharex=True)
    axes[0].step(t, [modes.index(s["mode"]) if s.get("mode") in modes else -1 for s in steps], where="post")
    axes[0].set_yticks(range(len(modes)), modes)
    axes[1].step(t, [precisions.index(s["precision"]) if s.get("precision") else -1 for s in steps], where="post")
    axes[1].set_yticks(range(len(precisions)), precisions)
    axes[2].step(t, [s.get("threshold_bins") or 0 for s in steps], where="post")
    axes[2].set_ylabel("r (bins)")
    axes[3].bar(t, r["verifier_passes"], width=0.8)
    axes[3].set_ylabel("verifier passes")
    axes[3].set_xlabel("control step")
    fig.suptitle(f"{r['method']}: {r['suite']}/{r['task']} seed {r['seed']} "
                 f"({'success' if r['success'] else 'failure'}, {r['length']} steps)", fontsize=10)
    fig.tight_layout()
    path = out / "timeline.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(result: dict, summary: dict, out: str | Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [pareto(result, summary, out), accepted_hist(result, out), timeline(result, out)]
    return [p for p in paths if p is not None]
