"""``python -m calib dyq``: fit DyQ-VLA's sensitivity scales and precision ladder (edge/motion_metrics.py).

Pipeline (numpy only), on the actions of the successful episodes (``calib.dataset``):
1. ``mu_max_m``: the 95th percentile of ``||a_xyz||`` over every step (METHODS 4.3). ``nu_max_rad``:
   the 95th percentile of ``||a_rot_t - a_rot_{t-1}||``; where rotations rarely change (most steps'
   jerk is 0, so that percentile is 0) the 95th percentile of the non-zero jerks, flagged in the report.
2. ``S_t`` for every step of the fit episodes, computed as the runtime does (``sensitivity`` over the
   actions up to t, from the second step on).
3. Ladder bounds: DyQ's Eq. 5 needs per-precision error curves and constants (D_acc, eta) the paper
   does not publish, so the bounds are set by budget instead: ``--shares`` gives the share of
   demonstration steps each level (lowest first) should run, and bound k is the S quantile at the
   cumulative share. ``--bounds`` sets them directly (e.g. the paper's theta_fp = 0.5).
4. Held-out report (``index % holdout_every == 0``): the levels actually taken after the runtime's
   hysteresis (``dyq_step``, immediate upgrade, delayed downgrade), overall and in the fine phases
   (within ``--fine-window`` steps of a gripper change: grasp and release), where the sensitivity
   should choose the top precision.

Writes ``{"kind": "dyq", "version": 1, "source", "sensitivity", "ladder", "report"}`` atomically;
``edge.dyq_file.read_dyq_file`` reads it and ``kinematic.dyq_file`` points the runtime at it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from calib.dataset import iter_episodes
from edge.dyq_file import FORMAT_VERSION, KIND, read_dyq_file
from edge.files import write_json_atomic
from edge.motion_metrics import DyQConfig, DyQState, dyq_step, sensitivity

__all__ = ["fit_dyq", "sensitivity_series", "add_parser"]


def sensitivity_series(actions: np.ndarray, mu_max: float, nu_max: float, w_macro: int, w_micro: int,
                       lam: float) -> np.ndarray:
    """``S_t`` for t >= 1 of one episode, each from the actions up to and including t (as at runtime)."""
    return np.array([sensitivity(actions[: t + 1], mu_max, nu_max, w_macro, w_micro, lam)[0]
                     for t in range(1, len(actions))])


def _fine_mask(actions: np.ndarray, window: int) -> np.ndarray:
    """Steps within ``window`` of a gripper command change (grasp, release), for t >= 1."""
    g = actions[:, 6] > 0.5
    change = np.flatnonzero(g[1:] != g[:-1]) + 1
    fine = np.zeros(len(actions), bool)
    for c in change:
        fine[max(0, c - window): c + window + 1] = True
    return fine[1:]


def fit_dyq(data: str | Path, levels: tuple[str, ...], shares: tuple[float, ...] | None = None,
            bounds: tuple[float, ...] | None = None, w_macro: int = 10, w_micro: int = 5, lam: float = 0.5,
            downgrade_delay: int = 3, holdout_every: int = 10, fine_window: int = 3,
            percentile: float = 95.0) -> dict:
    if len(levels) < 2:
        raise ValueError(f"levels: expected at least 2 precisions, got {list(levels)}")
    fit, held = [], []
    for rec, arr in iter_episodes(data, ("action",)):
        a = np.asarray(arr["action"], float)
        if len(a) >= 2:
            (held if holdout_every and rec["index"] % holdout_every == 0 else fit).append(a)
    if not fit:
        raise ValueError(f"{data}: no successful episodes of 2 or more steps to fit on")
    allfit = np.concatenate(fit)
    mu_max = float(np.percentile(np.linalg.norm(allfit[:, :3], axis=1), percentile))
    jerks = np.concatenate([np.linalg.norm(np.diff(a[:, 3:6], axis=0), axis=1) for a in fit])
    nu_max, nu_from_nonzero = float(np.percentile(jerks, percentile)), False
    if nu_max <= 0:
        nz = jerks[jerks > 0]
        nu_max, nu_from_nonzero = (float(np.percentile(nz, percentile)) if len(nz) else 1.0), True
    if mu_max <= 0:
        raise ValueError(f"{data}: the demonstrations never translate (95th percentile of |a_xyz| is 0)")
    def series(episodes):
        return [sensitivity_series(a, mu_max, nu_max, w_macro, w_micro, lam) for a in episodes]

    S_fit_eps = series(fit)
    S_fit = np.concatenate(S_fit_eps)
    if bounds is None:
        shares = tuple(shares) if shares is not None else (1.0 / len(levels),) * len(levels)
        if len(shares) != len(levels) or min(shares) < 0 or not np.isclose(sum(shares), 1.0):
            raise ValueError(f"shares: expected {len(levels)} non-negative values summing to 1, got {list(shares)}")
        bounds = tuple(float(np.quantile(S_fit, q)) for q in np.cumsum(shares)[:-1])
    bounds = tuple(float(b) for b in bounds)
    if len(bounds) != len(levels) - 1 or any(b2 <= b1 for b1, b2 in zip(bounds, bounds[1:])):
        raise ValueError(f"bounds: expected {len(levels) - 1} strictly increasing values, got {list(bounds)} "
                         "(with --shares: S does not separate the levels; give --bounds)")
    cfg = DyQConfig(tuple(levels), bounds, downgrade_delay)

    def taken(episodes, S_eps):
        counts = np.zeros((2, len(levels)))  # [all / fine, level]
        for a, S in zip(episodes, S_eps):
            fine = _fine_mask(a, fine_window)
            state = DyQState(len(levels) - 1)
            for s, f in zip(S, fine):
                state, _, _ = dyq_step(state, float(s), cfg)
                counts[0, state.level] += 1
                counts[1, state.level] += f
        tot = counts.sum(1, keepdims=True)
        share = np.divide(counts, tot, out=np.zeros_like(counts), where=tot > 0)
        return {"steps": int(tot[0, 0]), "fine_steps": int(tot[1, 0]),
                "share": dict(zip(levels, np.round(share[0], 4).tolist())),
                "share_fine": dict(zip(levels, np.round(share[1], 4).tolist()))}

    report = {
        "fit_episodes": len(fit), "heldout_episodes": len(held), "fit_steps": int(len(S_fit)),
        "S_percentiles": {str(p): round(float(np.percentile(S_fit, p)), 4) for p in (5, 25, 50, 75, 95)},
        "nu_max_from_nonzero_jerks": nu_from_nonzero,
        "zero_jerk_share": round(float(np.mean(jerks == 0)), 4),
        "fit": taken(fit, S_fit_eps),
        "heldout": taken(held, series(held)) if held else None,
    }
    return {"kind": KIND, "version": FORMAT_VERSION, "source": {"data": str(data), "percentile": percentile},
            "sensitivity": {"mu_max_m": mu_max, "nu_max_rad": nu_max, "w_macro": w_macro, "w_micro": w_micro,
                            "lambda": lam},
            "ladder": {"levels": list(levels), "bounds": list(bounds), "downgrade_delay": downgrade_delay},
            "report": report}


def write_dyq(doc: dict, out: str | Path) -> Path:
    out = write_json_atomic(doc, out)
    read_dyq_file(out)  # what edge will read
    return out


def _cmd(args: argparse.Namespace) -> int:
    levels = tuple(x for x in args.levels.split(",") if x)
    doc = fit_dyq(args.data, levels, shares=args.shares, bounds=args.bounds, w_macro=args.w_macro,
                  w_micro=args.w_micro, lam=args.lam, downgrade_delay=args.downgrade_delay,
                  holdout_every=args.holdout_every, fine_window=args.fine_window)
    out = write_dyq(doc, args.out)
    s, lad, rep = doc["sensitivity"], doc["ladder"], doc["report"]
    print(f"DyQ calibration -> {out}")
    print(f"  mu_max {s['mu_max_m'] * 1000:.2f} mm/step, nu_max {s['nu_max_rad']:.4f} rad/step"
          f"{' (non-zero jerks only: ' + format(rep['zero_jerk_share'], '.0%') + ' of steps have none)' if rep['nu_max_from_nonzero_jerks'] else ''}")
    print(f"  S percentiles (5/25/50/75/95): {list(rep['S_percentiles'].values())}")
    print(f"  ladder {lad['levels']} bounds {[round(b, 4) for b in lad['bounds']]}, downgrade after "
          f"{lad['downgrade_delay']} steps")
    for name in ("fit", "heldout"):
        r = rep[name]
        if r:
            print(f"  {name:8s} {r['steps']} steps: share {r['share']}; fine phases ({r['fine_steps']} steps) "
                  f"{r['share_fine']}")
    return 0


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("dyq", help="fit DyQ-VLA's sensitivity scales (mu_max, nu_max) and precision ladder",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset directory written by `python -m sim.collect`")
    p.add_argument("--out", required=True, help="output JSON file (read by edge.dyq_file.read_dyq_file)")
    p.add_argument("--levels", default="int8,fp32",
                   help="precisions, lowest first, each built by export (default int8,fp32)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--shares", type=_floats, default=None,
                   help="share of demonstration steps per level, lowest first (default: equal)")
    g.add_argument("--bounds", type=_floats, default=None, help="S bounds between the levels, set directly")
    p.add_argument("--w-macro", type=int, default=10, help="motion-fineness window, steps (paper: 10)")
    p.add_argument("--w-micro", type=int, default=5, help="angular-jerk window, steps (paper: 5)")
    p.add_argument("--lam", type=float, default=0.5, help="weight of motion fineness in S (not published)")
    p.add_argument("--downgrade-delay", type=int, default=3, help="steps wanting a lower level before it is taken")
    p.add_argument("--holdout-every", type=int, default=10,
                   help="hold out episodes with index %% N == 0 for the report (vla.train's split; default 10)")
    p.add_argument("--fine-window", type=int, default=3, help="steps around a gripper change counted as fine")
    p.set_defaults(func=_cmd)
    return p
