"""``python -m calib retrieval``: build HeiSD's retrieval store and calibrate its bounds (edge/retrieval.py).

Pipeline (numpy only):
1. Successful episodes (``calib.dataset``): the key of every step (``edge.retrieval.image_key``
   of the views ``--views``, grid ``--grid``), the action tokens with the model's codec
   (``--engines DIR``: ``engines.json`` ``source.codec``; ``--manifest FILE``: an artifact's
   ``codec``; ``--action-stats FILE`` from ``python -m calib stats`` with ``--vocab-size``; or
   q01/q99 fitted from the same actions as ``calib stats`` does), ``trajectory_tokens`` (current +
   next 3), and ``ee_pos``.
2. Episodes with ``index % holdout_every == 0`` are held out (``vla.train``'s split). The store
   holds the other episodes only, one collection per instruction, so the held-out numbers are
   what the shipped store does on unseen scenes.
3. Every held-out step queries its instruction's collection (``search_pool`` raw neighbours, the
   ``top_k`` distinct current actions as drafts) and is scored against its own true tokens with
   the group rule (xyz / rpy / gripper: sum <= 30 and each <= 15 bins, gripper exact):
   top-1 full acceptance, the accepted length of the top-1 draft and of the best of the top-K
   (the tree's best path), and exact-token match per dim of the top-1 draft.
4. Verify-skip bound: among held-out steps whose first ``skip_agree_neighbours`` neighbours agree
   (``edge.retrieval.drafts_agree``), the lowest similarity ``b`` such that the top-1 action is
   fully accepted for at least ``--skip-precision`` (0.95) of the steps with similarity >= b, over
   at least ``--skip-min-support`` steps. None qualifies: 1.01, verify-skip never fires.
5. Fused-metric bounds: the ``--fused-percentiles`` (5, 95) of the curvature radius and the path
   length (``edge.motion_metrics``) over every window of ``w`` consecutive ``ee_pos`` (stride
   ``--fused-stride``) of the store's episodes.
6. F threshold: F of each held-out step (window ending at the step; steps with fewer than w
   positions are left out, the runtime uses the drafter there) is read as a classifier of "a
   top-K retrieval draft is accepted whole"; the threshold maximises Youden's J = TPR - FPR
   (first maximum, scanning up). If no threshold separates (J < 0.05), F carries no information
   about retrieval here: the threshold is 0 (always retrieval) when the top-K full-acceptance
   rate is at least ``--min-retrieval-rate`` and 1.01 (never) otherwise.
7. Search latency: median wall time of ``--latency-queries`` (1000) single queries (held-out keys, cycled) and CPU
   time per query; the key's compute time per observation.

Writes ``OUT/retrieval_store.npz`` (``RetrievalStore.save``) and ``OUT/retrieval.json``
(``{"version": 1, "kind": "retrieval", "store", "source", "key", "skip", "fused", "report"}``,
tmp + replace), which ``edge.retrieval.load_retrieval_config`` reads. Caveat: the targets are the
demonstrations' tokens, not the verifier's; the verifier's greedy tokens differ, so re-calibrate
on logged runtime data where it exists (same format).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import time
from pathlib import Path

import numpy as np

from calib.codec_source import add_codec_args, codec_from_args
from calib.dataset import iter_episodes, read_episode_index
from edge.acceptance import accept_length
from edge.files import write_json_atomic
from edge.motion_metrics import curvature_radius, fused_metric, path_length
from edge.retrieval import (ACTION_DIM, CALIB_KIND, FORMAT_VERSION, KeySpec, RetrievalConfig, RetrievalStore,
                            drafts_agree, image_key, trajectory_tokens)

__all__ = ["read_dataset", "build_store", "evaluate_heldout", "skip_bound", "fused_bounds",
           "fused_threshold", "fit_retrieval", "add_parser"]

log = logging.getLogger(__name__)

STORE_FILE = "retrieval_store.npz"
CALIB_FILE = "retrieval.json"
DIM_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
NO_SKIP = 1.01  # a cosine bound no similarity reaches


# ---------------------------------------------------------------- data


def read_dataset(root, args: argparse.Namespace, spec: KeySpec) -> tuple[list[dict], dict]:
    """Per successful episode ``{"index", "instruction", "keys" [T, d], "tokens" [T, 7],
    "ee_pos" [T, 3]}`` and the source description (codec included)."""
    from tqdm import tqdm

    n = sum(1 for r in read_episode_index(root) if r["success"])
    episodes, actions = [], []
    digest = hashlib.sha256()
    names = tuple(dict.fromkeys((*spec.views, "action", "ee_pos")))
    for rec, arrays in tqdm(iter_episodes(root, names), total=n, desc="reading episodes", unit="ep", disable=None):
        a = np.asarray(arrays["action"], np.float64)
        ee = np.asarray(arrays["ee_pos"], np.float64)
        T = len(a)
        if a.ndim != 2 or a.shape[1] != ACTION_DIM or T == 0:
            raise ValueError(f"{root}: episode {rec['index']}: action: expected [T >= 1, {ACTION_DIM}], got {a.shape}")
        if ee.shape != (T, 3):
            raise ValueError(f"{root}: episode {rec['index']}: ee_pos: expected [{T}, 3], got {ee.shape}")
        for v in spec.views:
            if arrays[v].ndim != 4 or len(arrays[v]) != T or arrays[v].dtype != np.uint8:
                raise ValueError(f"{root}: episode {rec['index']}: {v}: expected uint8 [{T}, H, W, 3], "
                                 f"got {arrays[v].dtype} {arrays[v].shape}")
        if "instruction" not in rec:
            raise ValueError(f"{root}/meta/episodes.jsonl: episode {rec['index']}: missing field 'instruction'")
        keys = image_key([arrays[v] for v in spec.views], spec.grid)
        episodes.append({"index": int(rec["index"]), "instruction": str(rec["instruction"]), "keys": keys,
                         "ee_pos": ee})
        actions.append(a)
        digest.update(a.tobytes())
    if not episodes:
        raise ValueError(f"{root}: no successful episodes to build a retrieval store from")
    codec, codec_src = codec_from_args(args, actions)
    if codec.dim != ACTION_DIM:
        raise ValueError(f"{codec_src['from']}: expected a {ACTION_DIM}-dim codec, got {codec.dim}")
    for e, a in zip(episodes, actions):
        e["tokens"] = codec.encode(a)
    source = {"data": str(root), "episodes": len(episodes), "steps": int(sum(len(a) for a in actions)),
              "actions_sha256": digest.hexdigest(), "codec": codec_src}
    return episodes, source


def build_store(episodes: list[dict], spec: KeySpec, meta: dict) -> RetrievalStore:
    """One collection per instruction (sorted), rows in episode then step order."""
    cols: dict[str, dict[str, list]] = {}
    for e in sorted(episodes, key=lambda e: (e["instruction"], e["index"])):
        c = cols.setdefault(e["instruction"], {"keys": [], "values": [], "episode": [], "step": []})
        T = len(e["tokens"])
        c["keys"].append(e["keys"])
        c["values"].append(trajectory_tokens(e["tokens"]))
        c["episode"].append(np.full(T, e["index"], np.int64))
        c["step"].append(np.arange(T, dtype=np.int64))
    cols = {s: {k: np.concatenate(v) for k, v in c.items()} for s, c in cols.items()}
    return RetrievalStore.from_collections(cols, spec, meta)


# ---------------------------------------------------------------- held-out evaluation


def _fused_at(ee: np.ndarray, cfg: RetrievalConfig, bounds=None) -> np.ndarray:
    """F (or NaN where fewer than w positions exist) at every step of one episode."""
    w = cfg.fused_window_steps
    out = np.full(len(ee), np.nan)
    for t in range(w - 1, len(ee)):
        out[t] = fused_metric(ee[t - w + 1: t + 1], bounds or cfg.fused_bounds(), cfg.fused_alpha)[0]
    return out


def evaluate_heldout(store: RetrievalStore, held: list[dict], cfg: RetrievalConfig) -> dict:
    """Per held-out step arrays: ``sim``, ``agree``, ``ok1``, ``okk``, ``len1``, ``lenk``,
    ``exact1 [M, 7]``, and ``keys``/``instruction`` for latency queries (module docstring, 3)."""
    rule = cfg.accept_rule()
    rows = {k: [] for k in ("sim", "agree", "ok1", "okk", "len1", "lenk", "exact1", "episode", "step")}
    for e in held:
        if e["instruction"] not in store.instructions:
            log.warning("held-out episode %d: instruction %r has no collection; skipped", e["index"], e["instruction"])
            continue
        sl = store.collection(e["instruction"])
        S = e["keys"] @ store.keys[sl].T  # [T, N]
        k = min(cfg.search_pool, S.shape[1])
        top = np.argpartition(-S, k - 1, axis=1)[:, :k] if k < S.shape[1] else np.tile(np.arange(S.shape[1]), (len(S), 1))
        for t, (cand, y) in enumerate(zip(top, e["tokens"])):
            cand = cand[np.lexsort((cand, -S[t, cand]))]
            nb = store.values[cand + sl.start, 0]
            _, first = np.unique(nb, axis=0, return_index=True)
            drafts = nb[np.sort(first)[: cfg.top_k]]
            lens = [accept_length(d, y, 0, rule) for d in drafts]
            rows["sim"].append(S[t, cand[0]])
            rows["agree"].append(drafts_agree(nb, cfg.skip_agree_neighbours, rule))
            rows["len1"].append(lens[0])
            rows["lenk"].append(max(lens))
            rows["exact1"].append(nb[0] == y)
            rows["episode"].append(e["index"])
            rows["step"].append(t)
    out = {k: np.asarray(v) for k, v in rows.items()}
    if len(out["sim"]):
        out["ok1"] = out["len1"] == ACTION_DIM
        out["okk"] = out["lenk"] == ACTION_DIM
    else:
        out.update(ok1=np.zeros(0, bool), okk=np.zeros(0, bool), exact1=np.zeros((0, ACTION_DIM), bool))
    return out


def skip_bound(sim: np.ndarray, agree: np.ndarray, ok: np.ndarray, precision: float, min_support: int) -> tuple[float, dict]:
    """The verify-skip similarity bound (module docstring, 4) and its held-out coverage/precision."""
    s, o = sim[agree], ok[agree]
    order = np.argsort(-s, kind="stable")
    s, o = s[order], o[order]
    n = np.arange(1, len(s) + 1)
    prec = np.cumsum(o) / n
    last_of_tie = np.r_[s[1:] < s[:-1], True] if len(s) else np.zeros(0, bool)  # {sim >= s_j} ends at j
    valid = np.nonzero(last_of_tie & (prec >= precision) & (n >= min_support))[0]
    if not len(valid):
        return NO_SKIP, {"calibrated": False, "coverage": 0.0, "precision": None, "support": 0}
    j = int(valid[-1])
    return float(s[j]), {"calibrated": True, "coverage": float((j + 1) / max(len(sim), 1)),
                         "precision": float(prec[j]), "support": j + 1}


def fused_bounds(episodes: list[dict], w: int, stride: int, percentiles: tuple[float, float]) -> tuple[dict, dict]:
    """Percentile bounds of the curvature radius and path length over ee_pos windows (module docstring, 5)."""
    from tqdm import tqdm

    R, D = [], []
    for e in tqdm(episodes, desc="fused-metric windows", unit="ep", disable=None):
        ee = e["ee_pos"]
        for s in range(0, len(ee) - w + 1, stride):
            R.append(curvature_radius(ee[s:s + w]))
            D.append(path_length(ee[s:s + w]))
    if len(R) < 2:
        raise ValueError(f"too few ee_pos windows of {w} steps for the fused-metric bounds (episodes too short?)")
    R, D = np.asarray(R), np.asarray(D)
    lo, hi = percentiles
    r = [float(x) for x in np.percentile(R, [lo, hi])]
    d = [float(x) for x in np.percentile(D, [lo, hi])]
    if not r[1] > r[0]:
        r[1] = r[0] + 1e-6
    if not d[1] > d[0]:
        d[1] = d[0] + 1e-6
    return {"radius_m": r, "length_m": d}, {"windows": len(R), "radius_p50_m": float(np.median(R)),
                                          "length_p50_m": float(np.median(D))}


def fused_threshold(F: np.ndarray, ok: np.ndarray, min_rate: float, min_j: float = 0.05) -> tuple[float, dict]:
    """F threshold for retrieval vs drafter (module docstring, 6)."""
    m = np.isfinite(F)
    F, ok = F[m], ok[m]
    rate = float(ok.mean()) if len(ok) else 0.0
    info = {"steps": int(len(F)), "retrieval_ok_rate": rate}
    if len(F) == 0 or ok.all() or not ok.any():
        info.update(rule="degenerate (no F or one class)", youden_j=0.0)
        return (0.0 if rate >= min_rate else NO_SKIP), info
    cands = np.unique(F)
    pos, neg = ok.sum(), (~ok).sum()
    tpr = np.array([(ok & (F >= c)).sum() / pos for c in cands])
    fpr = np.array([(~ok & (F >= c)).sum() / neg for c in cands])
    j = tpr - fpr
    i = int(np.argmax(j))
    # rank AUC of F for ok (0.5: no information)
    ranks = np.argsort(np.argsort(F, kind="stable"), kind="stable") + 1.0
    auc = float((ranks[ok].sum() - pos * (pos + 1) / 2) / (pos * neg))
    info.update(youden_j=float(j[i]), auc=auc)
    if j[i] < min_j:
        info["rule"] = f"no separation (J < {min_j}): by the overall rate vs {min_rate}"
        return (0.0 if rate >= min_rate else NO_SKIP), info
    thr = float(cands[i])
    above = F >= thr
    info.update(rule="youden", ok_rate_above=float(ok[above].mean()),
                ok_rate_below=float(ok[~above].mean()) if (~above).any() else None,
                retrieval_share=float(above.mean()))
    return thr, info


# ---------------------------------------------------------------- latency


def _latency(store: RetrievalStore, queries: list[tuple[str, np.ndarray]], k: int, n: int = 1000) -> dict:
    wall = np.empty(n)
    c0 = time.process_time()
    for i in range(n):
        ins, key = queries[i % len(queries)]
        t0 = time.perf_counter()
        store.search(ins, key, k)
        wall[i] = time.perf_counter() - t0
    cpu = (time.process_time() - c0) / n
    return {"queries": n, "k": k, "median_ms": float(np.median(wall) * 1e3), "p90_ms": float(np.percentile(wall, 90) * 1e3),
            "cpu_ms_per_query": float(cpu * 1e3)}


# ---------------------------------------------------------------- the fit


def fit_retrieval(root, args: argparse.Namespace) -> tuple[RetrievalStore, dict]:
    spec = KeySpec(tuple(args.views), args.grid)
    cfg = RetrievalConfig(top_k=args.top_k, search_pool=args.search_pool, skip_agree_neighbours=args.agree,
                          fused_window_steps=args.window, fused_alpha=args.alpha)
    episodes, source = read_dataset(root, args, spec)
    k = args.holdout_every
    fit = [e for e in episodes if k <= 1 or e["index"] % k != 0]
    held = [e for e in episodes if k > 1 and e["index"] % k == 0]
    if not fit:
        raise ValueError(f"{root}: every episode is held out (holdout_every={k}); nothing to build the store from")
    source.update(fit_episodes=len(fit), heldout_episodes=len(held), holdout_every=k)
    meta = {"codec": {kk: source["codec"][kk] for kk in ("vocab_size", "n_bins", "action")},
            "source": {"data": str(root), "episodes": len(fit), "holdout_every": k, "codec_from": source["codec"]["from"]}}
    store = build_store(fit, spec, meta)
    sizes = np.diff(store.offsets)
    report: dict = {"store": {"rows": len(store), "collections": len(store.instructions), "dim": spec.dim,
                              "rows_per_collection": {"min": int(sizes.min()), "median": float(np.median(sizes)),
                                                      "max": int(sizes.max())},
                              "megabytes": float((store.keys.nbytes + store.values.nbytes + 2 * store.episode.nbytes) / 2**20)}}
    bounds, binfo = fused_bounds(fit, args.window, args.fused_stride, tuple(args.fused_percentiles))
    fused = {"alpha": args.alpha, "window_steps": args.window, **bounds, "percentiles": list(args.fused_percentiles),
             "stride": args.fused_stride, **binfo}
    cfg = dataclasses.replace(cfg, fused_radius_m=tuple(bounds["radius_m"]), fused_length_m=tuple(bounds["length_m"]))
    skip = {"min_similarity": NO_SKIP, "target_precision": args.skip_precision, "min_support": args.skip_min_support,
            "skip_agree_neighbours": args.agree, "group_sum_bins": list(cfg.group_sum_bins),
            "group_token_max_bins": list(cfg.group_token_max_bins), "calibrated": False}
    fused["threshold"] = NO_SKIP
    queries = []
    if held:
        ev = evaluate_heldout(store, held, cfg)
        M = len(ev["sim"])
        report["heldout"] = {"steps": M, "top1_group_accept": float(ev["ok1"].mean()) if M else None,
                             "topk_group_accept": float(ev["okk"].mean()) if M else None,
                             "top1_accept_len_mean": float(ev["len1"].mean()) if M else None,
                             "topk_accept_len_mean": float(ev["lenk"].mean()) if M else None,
                             "top1_exact_per_dim": ev["exact1"].mean(0).tolist() if M else None,
                             "agree_rate": float(ev["agree"].mean()) if M else None,
                             "similarity_p5_p50_p95": np.percentile(ev["sim"], [5, 50, 95]).tolist() if M else None,
                             "top_k": cfg.top_k, "search_pool": cfg.search_pool}
        if M:
            bound, sinfo = skip_bound(ev["sim"], ev["agree"], ev["ok1"], args.skip_precision, args.skip_min_support)
            skip.update(min_similarity=bound, calibrated=sinfo.pop("calibrated"))
            report["skip"] = sinfo
            by_ep = {e["index"]: e for e in held}
            F = np.concatenate([_fused_at(by_ep[i]["ee_pos"], cfg)[ev["step"][ev["episode"] == i]]
                                for i in dict.fromkeys(ev["episode"].tolist())])
            thr, finfo = fused_threshold(F, ev["okk"], args.min_retrieval_rate)
            fused["threshold"] = thr
            report["fused"] = finfo
            regime = np.isfinite(F) & (F >= thr)
            report["skip"]["coverage_in_retrieval_regime"] = float(
                (regime & ev["agree"] & (ev["sim"] >= bound)).sum() / M)
        queries = [(e["instruction"], key) for e in held for key in e["keys"] if e["instruction"] in store.instructions]
    if not queries:
        if not held:
            log.warning("no held-out episodes: verify-skip stays off and the F threshold at %s", NO_SKIP)
        queries = [(store.instructions[int(np.searchsorted(store.offsets, i, "right") - 1)], store.keys[i])
                   for i in range(0, len(store), max(1, len(store) // 1000))]
    report["search_latency"] = _latency(store, queries, cfg.search_pool, args.latency_queries)
    report["search_latency"]["largest_collection_rows"] = int(sizes.max())
    views = [np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in spec.views]
    t = []
    for _ in range(50):
        t0 = time.perf_counter()
        image_key(views, spec.grid)
        t.append(time.perf_counter() - t0)
    report["key_latency_ms_median"] = float(np.median(t) * 1e3)  # one 64x64 observation
    doc = {"version": FORMAT_VERSION, "kind": CALIB_KIND, "store": STORE_FILE, "source": source,
           "key": spec.to_json(), "retrieval": {"top_k": cfg.top_k, "search_pool": cfg.search_pool},
           "skip": skip, "fused": fused, "report": report}
    return store, doc




# ---------------------------------------------------------------- CLI


def _print_report(doc: dict, out: Path, store_path: Path) -> None:
    src, rep = doc["source"], doc["report"]
    st = rep["store"]
    print(f"retrieval store from {src['fit_episodes']} episodes ({src['heldout_episodes']} held out), codec: "
          f"{src['codec']['from']} -> {store_path}, {out}")
    print(f"store: {st['rows']} rows in {st['collections']} collections "
          f"(min/median/max {st['rows_per_collection']['min']}/{st['rows_per_collection']['median']:.0f}/"
          f"{st['rows_per_collection']['max']}), key dim {st['dim']}, {st['megabytes']:.1f} MB")
    lat = rep["search_latency"]
    print(f"search (numpy, k={lat['k']}, {lat['queries']} queries): median {lat['median_ms']:.3f} ms, "
          f"p90 {lat['p90_ms']:.3f} ms, {lat['cpu_ms_per_query']:.3f} ms CPU per query; "
          f"key {rep['key_latency_ms_median']:.3f} ms")
    h = rep.get("heldout")
    if h and h["steps"]:
        print(f"held-out {h['steps']} steps: top-1 group acceptance {h['top1_group_accept']:.1%}, "
              f"top-{h['top_k']} {h['topk_group_accept']:.1%}; accepted length top-1 {h['top1_accept_len_mean']:.2f}, "
              f"top-{h['top_k']} {h['topk_accept_len_mean']:.2f} of 7; neighbours agree {h['agree_rate']:.1%}")
        print("top-1 exact token match per dim: " + ", ".join(
            f"{n} {v:.1%}" for n, v in zip(DIM_NAMES, h["top1_exact_per_dim"])))
        sk, s = doc["skip"], rep["skip"]
        if sk["calibrated"]:
            print(f"verify-skip bound: similarity >= {sk['min_similarity']:.4f} (top-{sk['skip_agree_neighbours']} agree): "
                  f"{s['coverage']:.1%} of held-out steps, {s['precision']:.1%} within tolerance; "
                  f"{s['coverage_in_retrieval_regime']:.1%} also in the retrieval regime")
        else:
            print(f"verify-skip: no bound reaches {sk['target_precision']:.0%} precision over "
                  f">= {sk['min_support']} steps; disabled (bound {sk['min_similarity']})")
        f = rep["fused"]
        line = f"F threshold {doc['fused']['threshold']:.3f} ({f['rule']}"
        if "auc" in f:
            line += f"; J {f['youden_j']:.3f}, AUC {f['auc']:.3f}"
        if "ok_rate_above" in f:
            below = "n/a" if f["ok_rate_below"] is None else f"{f['ok_rate_below']:.1%}"
            line += (f"; top-K full acceptance {f['ok_rate_above']:.1%} above vs {below} below, "
                     f"retrieval share {f['retrieval_share']:.1%}")
        print(line + f"; overall {f['retrieval_ok_rate']:.1%} over {f['steps']} steps)")
    fu = doc["fused"]
    print(f"fused bounds (p{fu['percentiles'][0]:g}/p{fu['percentiles'][1]:g}, w={fu['window_steps']}, "
          f"{fu['windows']} windows): radius {fu['radius_m'][0]:.4f}..{fu['radius_m'][1]:.4f} m, "
          f"path length {fu['length_m'][0]:.4f}..{fu['length_m'][1]:.4f} m")


def _cmd(args: argparse.Namespace) -> int:
    store, doc = fit_retrieval(args.data, args)
    out = Path(args.out)
    store_path = store.save(out / STORE_FILE)
    js = write_json_atomic(doc, out / CALIB_FILE)
    _print_report(doc, js, store_path)
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("retrieval", help="build HeiSD's retrieval store and calibrate verify-skip and the fused metric",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset directory written by `python -m sim.collect`")
    p.add_argument("--out", required=True, help=f"output directory ({STORE_FILE} and {CALIB_FILE})")
    add_codec_args(p)
    p.add_argument("--views", nargs="+", default=list(KeySpec.views), help="image views in the key (default: image wrist_image)")
    p.add_argument("--grid", type=int, default=KeySpec.grid, help="key grid cells per side (default 8)")
    p.add_argument("--holdout-every", type=int, default=10,
                   help="hold out episodes with index %% N == 0 for calibration (vla.train's split; default 10)")
    p.add_argument("--top-k", type=int, default=RetrievalConfig.top_k, help="distinct drafts per query")
    p.add_argument("--search-pool", type=int, default=RetrievalConfig.search_pool, help="raw neighbours per query")
    p.add_argument("--agree", type=int, default=RetrievalConfig.skip_agree_neighbours,
                   help="top neighbours that must agree for verify-skip")
    p.add_argument("--skip-precision", type=float, default=0.95,
                   help="held-out share within tolerance above the verify-skip bound (default 0.95)")
    p.add_argument("--skip-min-support", type=int, default=20, help="held-out steps above the bound, at least")
    p.add_argument("--window", type=int, default=RetrievalConfig.fused_window_steps, help="fused metric window w, steps")
    p.add_argument("--alpha", type=float, default=RetrievalConfig.fused_alpha, help="fused metric weight of the radius")
    p.add_argument("--fused-percentiles", type=float, nargs=2, default=(5.0, 95.0), metavar=("LO", "HI"),
                   help="percentiles of radius and path length used as bounds (default 5 95)")
    p.add_argument("--fused-stride", type=int, default=1, help="step between fused-metric windows for the bounds")
    p.add_argument("--min-retrieval-rate", type=float, default=0.5,
                   help="when F does not separate: always retrieval if the top-K full-acceptance rate is at least this")
    p.add_argument("--latency-queries", type=int, default=1000, help="single queries timed for the latency report")
    p.set_defaults(func=_cmd)
    return p
