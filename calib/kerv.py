"""``python -m calib kerv``: fit KERV's Kalman noise and dynamic-threshold bounds (edge/kerv.py).

Pipeline (numpy only):
1. Actions of the successful episodes (``calib.dataset``) -> bin offsets ``token -
   first_action_token`` with the model's codec: ``--engines DIR`` (``engines.json``,
   ``source.codec``), ``--manifest FILE`` (an artifact's ``manifest.json``, ``codec``),
   ``--action-stats FILE`` (``python -m calib stats``), or by default q01/q99 fitted from the same
   actions exactly as ``calib stats`` does (then the bins match a model trained on this data).
2. Episodes with ``index % holdout_every == 0`` are held out (the split ``vla.train`` uses).
3. Q and R per DoF, for ``cv`` and ``rw`` (``edge.kalman``), by maximum likelihood of the
   innovations, ``sum -0.5 (log S_t + y_t^2 / S_t)`` over every fit episode, each filtered from
   its start with ``p0`` (the first ``burn`` innovations, dominated by the prior, are skipped).
   The covariance recursion does not depend on the data, so the gains are computed once per
   (q, r) and the states of all episodes and grid points run side by side. Search: a log grid
   (2 per decade, q in [1e-4, 1e3] bins^2, r in [1/12, 1e3] bins^2), then five 5x5 refinements
   halving the spacing (final spacing 1/64 decade, 4 %). R >= 1/12 bins^2, the variance of
   rounding to a bin: a constant DoF otherwise drives R to 0 and makes any later token deviation
   an "infinite" innovation.
4. K_var bounds: the ``kvar_lo``/``kvar_hi`` percentiles (5/95) of ``edge.kerv.window_estimates``
   over every window (length AC, shorter at episode starts, at least ``min_history_steps``) of the
   fit episodes, per model; ``kvar_dims`` are the arm dims (0..5) whose bins ever change.
5. Held-out report: one-step forecast error of the runtime predictor (the same windowed filter,
   rounded to a bin) for cv, rw, the released code's rw (Q = 1, R = 1e-3, P0 = 10) and "repeat
   the last action", on the same targets. The file's default model (``--model auto``) is the one
   of cv / rw with the lower held-out error of the arm dims (without held-out episodes: the higher
   fit likelihood per step). On piecewise-constant demonstrations (a scripted expert that holds
   a velocity, jumps, then decays) a cv filter overshoots after each jump and loses to rw, which
   the report then shows.

Writes ``{"version": 1, "kind": "kerv", "source", "kf", "window", "report"}`` atomically (tmp +
replace); ``edge.kerv.load_kerv_config`` reads it. Caveat: fitted on demonstrations; the verifier's
tokens at runtime are noisier (larger R, larger K_var), so re-fit on logged runtime actions
where such a dataset exists (same format).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from pathlib import Path

import numpy as np

from calib.codec_source import add_codec_args, codec_from_args
from calib.dataset import iter_episodes
from edge.codec import CodecError
from edge.files import write_json_atomic
from edge.kalman import KFParams
from edge.kerv import ACTION_DIM, FORMAT_VERSION, KIND, KervConfig, threshold_from_kvar, window_estimates

__all__ = ["load_bins", "fit_noise", "window_rows", "fit_kerv", "write_kerv", "add_parser"]

log = logging.getLogger(__name__)

R_FLOOR_BINS2 = 1.0 / 12.0  # variance of rounding a continuous value to a bin
Q_RANGE_LOG10 = (-4.0, 3.0)
R_RANGE_LOG10 = (float(np.log10(R_FLOOR_BINS2)), 3.0)
RELEASED_RW = {"q": 1.0, "r": 1e-3, "p0": 10.0}  # the released KERV code's filter (METHODS 2.3)
DIM_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")


# ---------------------------------------------------------------- data


def load_bins(root, args: argparse.Namespace) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """``(fit episodes, held-out episodes, source)``: float bin offsets ``[T, 7]`` per episode."""
    actions, indices = [], []
    digest = hashlib.sha256()
    for rec, arrays in iter_episodes(root, ("action",)):
        a = np.asarray(arrays["action"], np.float64)
        if a.ndim != 2 or a.shape[1] != ACTION_DIM or len(a) == 0:
            raise ValueError(f"{root}: episode {rec['index']}: action: expected [T >= 1, {ACTION_DIM}], got {a.shape}")
        actions.append(a)
        indices.append(int(rec["index"]))
        digest.update(a.tobytes())
    if not actions:
        raise ValueError(f"{root}: no successful episodes to fit KERV from")
    codec, codec_src = codec_from_args(args, actions, warn_ids=False)
    if codec.dim != ACTION_DIM:
        raise CodecError(f"{codec_src['from']}: expected a {ACTION_DIM}-dim codec, got {codec.dim}")
    bins = [(codec.encode(a) - codec.first_action_token).astype(np.float64) for a in actions]
    k = args.holdout_every
    fit = [b for b, i in zip(bins, indices) if k <= 1 or i % k != 0]
    held = [b for b, i in zip(bins, indices) if k > 1 and i % k == 0]
    if not fit:
        raise ValueError(f"{root}: every episode is held out (holdout_every={k}); nothing to fit on")
    source = {"data": str(root), "episodes": len(bins), "fit_episodes": len(fit), "heldout_episodes": len(held),
              "steps": int(sum(len(b) for b in bins)), "actions_sha256": digest.hexdigest(),
              "holdout_every": k, "codec": codec_src}
    return fit, held, source


# ---------------------------------------------------------------- Q/R by maximum likelihood


def _loglik(episodes: list[np.ndarray], model: str, q: np.ndarray, r: np.ndarray, p0: float,
            burn: int) -> np.ndarray:
    """Innovation log-likelihood ``[D, C]`` of each DoF ``d`` under ``(q[d, c], r[d, c])``."""
    D, C = q.shape
    F, H, Qb, _ = KFParams(model, (1.0,), (1.0,), p0).matrices()
    n = F.shape[0]
    Qb = Qb[0]
    eps = sorted(episodes, key=len, reverse=True)  # active episodes at step t are a prefix
    lengths = np.array([len(e) for e in eps])
    T = int(lengths[0])
    Z = np.zeros((len(eps), T, D))
    for i, e in enumerate(eps):
        Z[i, : len(e)] = e[:, :D]
    qf, rf = q.reshape(-1), r.reshape(-1)
    P = np.tile(np.eye(n) * p0, (D * C, 1, 1))
    x = np.zeros((D, C, len(eps), n))
    x[..., 0] = Z[:, 0, :].T[:, None, :]
    ll = np.zeros((D, C))
    for t in range(1, T):
        # data-independent covariance recursion (as edge.kalman: predict, then update)
        Pm = F @ P @ F.T + qf[:, None, None] * Qb
        S = Pm[:, 0, 0] + rf
        K = Pm[:, :, 0] / S[:, None]
        P = Pm - K[:, :, None] * Pm[:, None, 0, :]
        E = int(np.searchsorted(-lengths, -t, side="left"))  # episodes with len > t
        xp = x[:, :, :E] @ F.T
        y = Z[:E, t, :].T[:, None, :] - xp[..., 0]  # [D, C, E]
        x[:, :, :E] = xp + K.reshape(D, C, 1, n) * y[..., None]
        if t > burn:
            Sdc = S.reshape(D, C)
            ll -= 0.5 * (E * np.log(2 * np.pi * Sdc) + (y**2).sum(-1) / Sdc)
    return ll


def fit_noise(episodes: list[np.ndarray], model: str, p0: float = 100.0,
              levels: int = 5) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per-DoF ``(q [7], r [7], stats)`` maximising the innovation likelihood (module docstring)."""
    burn = 2 if model == "cv" else 1
    step = 0.5
    lq = np.arange(Q_RANGE_LOG10[0], Q_RANGE_LOG10[1] + 1e-9, step)
    lr = np.arange(R_RANGE_LOG10[0], R_RANGE_LOG10[1] + 1e-9, step)
    gq, gr = (np.broadcast_to(g.ravel(), (ACTION_DIM, g.size)) for g in np.meshgrid(lq, lr, indexing="ij"))
    best_q = best_r = best_ll = None
    for level in range(levels + 1):
        ll = _loglik(episodes, model, 10.0**gq, 10.0**gr, p0, burn)
        i = ll.argmax(1)
        best_q, best_r = gq[np.arange(ACTION_DIM), i], gr[np.arange(ACTION_DIM), i]
        best_ll = ll[np.arange(ACTION_DIM), i]
        if level == levels:
            break
        step /= 2.0
        off = np.arange(-2, 3) * step
        oq, orr = (g.ravel() for g in np.meshgrid(off, off, indexing="ij"))
        gq = np.clip(best_q[:, None] + oq, *Q_RANGE_LOG10)
        gr = np.clip(best_r[:, None] + orr, *R_RANGE_LOG10)
    n_innov = sum(max(len(e) - 1 - burn, 0) for e in episodes)
    at_edge = [d for d in range(ACTION_DIM) if best_q[d] <= Q_RANGE_LOG10[0] + 1e-9
               or best_q[d] >= Q_RANGE_LOG10[1] - 1e-9 or best_r[d] >= R_RANGE_LOG10[1] - 1e-9]
    stats = {"loglik_per_step": (best_ll / max(n_innov, 1)).tolist(), "innovations": n_innov,
             "q_or_r_at_grid_edge": at_edge}
    return 10.0**best_q, 10.0**best_r, stats


# ---------------------------------------------------------------- windows: K_var and held-out forecasts


def window_rows(episodes: list[np.ndarray], cfg: KervConfig, chunk: int = 20000) -> dict:
    """For every step ``t >= min_history_steps`` of every episode: the runtime estimates from the
    window of the (at most AC) actions before ``t``, the target ``z_t`` and the last action
    ``z_{t-1}``. Returns arrays ``forecast [M, 7]``, ``kvar [M]``, ``target [M, 7]``, ``last [M, 7]``."""
    groups: dict[int, list[np.ndarray]] = {}
    targets: dict[int, list[np.ndarray]] = {}
    for e in episodes:
        for t in range(cfg.min_history_steps, min(len(e), cfg.ac_steps)):  # short windows at the start
            groups.setdefault(t, []).append(e[None, :t])
            targets.setdefault(t, []).append(e[t][None])
        if len(e) > cfg.ac_steps:
            w = np.lib.stride_tricks.sliding_window_view(e[:-1], cfg.ac_steps, axis=0).transpose(0, 2, 1)
            groups.setdefault(cfg.ac_steps, []).append(w)
            targets.setdefault(cfg.ac_steps, []).append(e[cfg.ac_steps:])
    out = {"forecast": [], "kvar": [], "target": [], "last": []}
    for h in sorted(groups):
        W, Y = np.concatenate(groups[h]), np.concatenate(targets[h])
        for s in range(0, len(W), chunk):
            est = window_estimates(W[s:s + chunk], cfg)
            out["forecast"].append(est["forecast"])
            out["kvar"].append(est["kvar"])
        out["target"].append(Y)
        out["last"].append(W[:, -1])
    if not out["target"]:
        z = np.zeros((0, ACTION_DIM))
        return {"forecast": z, "kvar": np.zeros(0), "target": z, "last": z}
    return {k: np.concatenate(v) for k, v in out.items()}


def _errors(pred: np.ndarray, target: np.ndarray, n_bins: int) -> dict:
    err = np.abs(np.clip(np.rint(pred), 0, n_bins - 1) - target)
    return {"mae_bins": err.mean(0).tolist(), "mae_arm_bins": float(err[:, :6].mean()),
            "exact_arm": float((err[:, :6] == 0).mean())}


# ---------------------------------------------------------------- the fit


def _fit_model(fit: list[np.ndarray], model: str, base: dict, percentiles) -> tuple[dict, dict]:
    """Q/R of one model and its K_var bounds over the fit episodes' windows."""
    q, r, fstats = fit_noise(fit, model, base["kf_p0_bins2"])
    cfg = KervConfig(kf_model=model, kf_q_bins2=tuple(q), kf_r_bins2=tuple(r), **base)
    kv = window_rows(fit, cfg)["kvar"]
    kv = kv[np.isfinite(kv)]
    if len(kv) < 2:
        raise ValueError(f"too few steps for K_var bounds (episodes shorter than "
                         f"min_history_steps={base['min_history_steps']}?)")
    lo, hi = (float(v) for v in np.percentile(kv, percentiles))
    hi = hi if hi > lo else lo + 1e-3
    spread = {f"p{p}": float(np.percentile(kv, p)) for p in (5, 50, 95)}
    return {"q_bins2": q.tolist(), "r_bins2": r.tolist(), "kvar_lo": lo, "kvar_hi": hi, **fstats}, spread


def _heldout_report(held: list[np.ndarray], configs: dict[str, KervConfig], n_bins: int) -> tuple[dict, dict]:
    """One-step errors of each config's runtime predictor and of "repeat", on the same targets."""
    rows = {m: window_rows(held, c) for m, c in configs.items()}
    rep = {"targets": int(len(rows["cv"]["target"]))}
    for m, rr in rows.items():
        rep[m] = _errors(rr["forecast"], rr["target"], n_bins)
    rep["repeat"] = _errors(rows["cv"]["last"], rows["cv"]["target"], n_bins)
    return rep, rows


def fit_kerv(root, args: argparse.Namespace) -> dict:
    """Everything ``calib kerv`` writes, as one JSON-ready document."""
    fit, held, source = load_bins(root, args)
    moving = [d for d in range(6) if any(np.any(np.diff(e[:, d]) != 0) for e in fit)]
    if not moving:
        log.warning("no arm dim ever changes bin in the fit episodes; K_var over dims 0..5")
    window = {"pl_steps": args.pl_steps, "ac_steps": args.ac_steps, "kvar_steps": args.kvar_steps,
              "min_history_steps": args.min_history_steps, "kvar_dims": moving or list(range(6)),
              "gripper_hold": True, "kvar_nis_cap": args.kvar_nis_cap}
    base = dict(window, kvar_dims=tuple(window["kvar_dims"]), pl_steps=1, kf_p0_bins2=args.p0)  # one-step
    models, report = {}, {"heldout": {}, "kvar": {}}
    for model in ("cv", "rw"):
        models[model], report["kvar"][model] = _fit_model(fit, model, base, args.kvar_percentiles)
    configs = {m: KervConfig(kf_model=m, kf_q_bins2=tuple(v["q_bins2"]), kf_r_bins2=tuple(v["r_bins2"]),
                             kvar_lo=v["kvar_lo"], kvar_hi=v["kvar_hi"], **base) for m, v in models.items()}
    if held:
        released = KervConfig(kf_model="rw", kf_q_bins2=(RELEASED_RW["q"],) * 7, kf_r_bins2=(RELEASED_RW["r"],) * 7,
                              **dict(base, kf_p0_bins2=RELEASED_RW["p0"]))
        report["heldout"], rows = _heldout_report(held, {**configs, "rw_released": released}, source["codec"]["n_bins"])
    if args.model != "auto":
        chosen, by = args.model, "--model"
    elif held:  # lower held-out one-step error of the arm dims; a tie keeps the simpler rw
        chosen = min(("rw", "cv"), key=lambda m: report["heldout"][m]["mae_arm_bins"])
        by = "held-out one-step error (arm dims)"
    else:
        chosen = max(("rw", "cv"), key=lambda m: float(np.mean(models[m]["loglik_per_step"][:6])))
        by = "fit log-likelihood per step (arm dims; no held-out episodes)"
    report["model_choice"] = {"chosen": chosen, "by": by}
    if held:
        rs = [threshold_from_kvar(float(k), configs[chosen]) for k in rows[chosen]["kvar"]]
        report["heldout"]["threshold_mean_bins"] = float(np.mean(rs)) if rs else None
    return {"version": FORMAT_VERSION, "kind": KIND, "source": source,
            "kf": {"model": chosen, "p0_bins2": args.p0, "models": models},
            "window": window, "kvar_percentiles": list(args.kvar_percentiles), "report": report}


def write_kerv(doc: dict, out) -> Path:
    return write_json_atomic(doc, out)


# ---------------------------------------------------------------- CLI


def _print_report(doc: dict, out: Path) -> None:
    src, kf, rep = doc["source"], doc["kf"], doc["report"]
    print(f"KERV fit from {src['fit_episodes']} episodes ({src['heldout_episodes']} held out), "
          f"{src['steps']} steps; codec: {src['codec']['from']} -> {out}")
    print(f"{'dim':>8} {'q_cv':>9} {'r_cv':>9} {'q_rw':>9} {'r_rw':>9}"
          + ("".join(f" {'mae_' + m:>10}" for m in ("cv", "rw", "rw_rel", "repeat")) if rep["heldout"] else ""))
    cv, rw = kf["models"]["cv"], kf["models"]["rw"]
    h = rep["heldout"]
    for d, name in enumerate(DIM_NAMES):
        line = (f"{name:>8} {cv['q_bins2'][d]:>9.3g} {cv['r_bins2'][d]:>9.3g} "
                f"{rw['q_bins2'][d]:>9.3g} {rw['r_bins2'][d]:>9.3g}")
        if h:
            line += "".join(f" {h[m]['mae_bins'][d]:>10.3f}" for m in ("cv", "rw", "rw_released", "repeat"))
        print(line)
    if h:
        print(f"held-out one-step error over {h['targets']} steps, arm dims (bins; exact-match rate): "
              + ", ".join(f"{m} {h[m]['mae_arm_bins']:.3f} ({h[m]['exact_arm']:.1%})"
                          for m in ("cv", "rw", "rw_released", "repeat")))
    m = kf["models"][kf["model"]]
    lo_p, hi_p = doc["kvar_percentiles"]
    print(f"default model: {kf['model']} (by {rep['model_choice']['by']})")
    print(f"K_var ({kf['model']}, dims {doc['window']['kvar_dims']}): p{lo_p:g} = {m['kvar_lo']:.3f}, "
          f"p{hi_p:g} = {m['kvar_hi']:.3f}"
          + (f"; mean held-out threshold {h['threshold_mean_bins']:.2f} bins"
             if h and h.get("threshold_mean_bins") is not None else ""))
    for name, mm in kf["models"].items():
        if mm["q_or_r_at_grid_edge"]:
            print(f"note: {name}: q or r at the edge of the search grid for dims {mm['q_or_r_at_grid_edge']} "
                  "(constant or degenerate DoFs)")


def _cmd(args: argparse.Namespace) -> int:
    doc = fit_kerv(args.data, args)
    out = write_kerv(doc, args.out)
    _print_report(doc, out)
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("kerv", help="fit KERV's Kalman noise (Q, R per DoF) and dynamic-threshold bounds",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset directory written by `python -m sim.collect`")
    p.add_argument("--out", required=True, help="output JSON file (read by edge.kerv.load_kerv_config)")
    add_codec_args(p)
    p.add_argument("--model", choices=("auto", "cv", "rw"), default="auto",
                   help="default Kalman model in the file; auto: the lower held-out one-step error (default)")
    p.add_argument("--holdout-every", type=int, default=10,
                   help="hold out episodes with index %% N == 0 for the report (vla.train's split; default 10)")
    p.add_argument("--p0", type=float, default=KervConfig.kf_p0_bins2, help="prior state variance, bins^2")
    p.add_argument("--pl-steps", type=int, default=KervConfig.pl_steps, help="PL: forecast horizon, steps")
    p.add_argument("--ac-steps", type=int, default=KervConfig.ac_steps, help="AC: history window, actions")
    p.add_argument("--kvar-steps", type=int, default=KervConfig.kvar_steps, help="innovations averaged into K_var")
    p.add_argument("--min-history-steps", type=int, default=KervConfig.min_history_steps,
                   help="actions before the tracker is used")
    p.add_argument("--kvar-nis-cap", type=float, default=KervConfig.kvar_nis_cap,
                   help="cap on each normalised innovation (innovation std)")
    p.add_argument("--kvar-percentiles", type=float, nargs=2, default=(5.0, 95.0), metavar=("LO", "HI"),
                   help="percentiles of K_var used as its bounds (default 5 95)")
    p.set_defaults(func=_cmd)
    return p
