"""HeiSD retrieval: the image key, store round trip and file errors, search, drafts, the draft
tree, verify-skip, the hybrid boundary, and ``calib retrieval`` end to end on a tiny dataset."""

import json

import numpy as np
import pytest

from calib.__main__ import main as calib_main
from calib.retrieval import fused_threshold, skip_bound
from edge.acceptance import AcceptRule, accept_length
from edge.draft_tree import paths, tree_mask
from edge.retrieval import (KeySpec, RetrievalConfig, RetrievalFileError, RetrievalStore, drafts_agree,
                            drafts_to_tree, heisd_choose, image_key, load_retrieval_config, recombine_groups,
                            retrieval_drafts, trajectory_tokens, verify_skip)

A, B = "put the red block on the plate", "lift the blue block"
SPEC = KeySpec(("image",), 4)  # d = 48


def _unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _store(rng=None, n=(30, 20)) -> RetrievalStore:
    rng = rng or np.random.default_rng(0)
    cols = {}
    for s, m in zip((A, B), n):
        tok = rng.integers(100, 356, size=(m, 7))
        cols[s] = {"keys": _unit(rng, m, SPEC.dim), "values": trajectory_tokens(tok), "episode": np.arange(m) // 10,
                   "step": np.arange(m) % 10}
    return RetrievalStore.from_collections(cols, SPEC, {"codec": {"vocab_size": 356, "n_bins": 256}})


# ---------------------------------------------------------------- key


def test_image_key_unit_norm_batch_and_brightness_invariance():
    rng = np.random.default_rng(1)
    front = rng.integers(20, 200, size=(5, 64, 64, 3), dtype=np.uint8)
    wrist = rng.integers(20, 200, size=(5, 64, 64, 3), dtype=np.uint8)
    k = image_key([front, wrist], grid=8)
    assert k.shape == (5, 2 * 8 * 8 * 3) and k.dtype == np.float32
    assert np.allclose(np.linalg.norm(k, axis=1), 1.0, atol=1e-5)
    assert np.allclose(image_key([front[2], wrist[2]], 8), k[2], atol=1e-6)  # batch == single
    brighter = image_key([front[2] + 30, wrist[2]], 8)  # no overflow: values <= 229
    assert np.allclose(brighter, k[2], atol=1e-5)  # the view mean is subtracted
    assert np.allclose(image_key([np.full((64, 64, 3), 7, np.uint8)], 8), 0.0)  # uniform image -> zero key
    odd = image_key([rng.integers(0, 255, size=(30, 45, 3), dtype=np.uint8)], 8)  # grid not dividing H, W
    assert odd.shape == (192,) and abs(np.linalg.norm(odd) - 1) < 1e-5
    with pytest.raises(ValueError, match="smaller than the 8x8 grid"):
        image_key([np.zeros((4, 4, 3), np.uint8)], 8)


def test_trajectory_tokens_pads_with_the_last_step():
    t = np.arange(5 * 7).reshape(5, 7)
    v = trajectory_tokens(t)
    assert v.shape == (5, 4, 7)
    assert np.array_equal(v[0], t[0:4]) and np.array_equal(v[3], t[[3, 4, 4, 4]]) and np.array_equal(v[4], t[[4] * 4])


# ---------------------------------------------------------------- store and file


def test_store_round_trip(tmp_path):
    s = _store()
    path = s.save(tmp_path / "sub" / "store.npz")
    assert path.is_file() and not list(tmp_path.glob("sub/*.tmp"))
    r = RetrievalStore.load(path)
    assert r.instructions == (A, B) and r.key_spec == SPEC and r.meta == s.meta
    for name in ("keys", "values", "episode", "step", "offsets"):
        assert np.array_equal(getattr(r, name), getattr(s, name)), name
    assert r.keys.dtype == np.float32 and r.values.dtype == np.int64 and len(r) == 50


def _rewrite(path, **changes):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    head = json.loads(arrays["header"].tobytes())
    for k, v in changes.items():
        if k == "header":
            head.update(v)
        elif v is None:
            del arrays[k]
        else:
            arrays[k] = v
    arrays["header"] = np.frombuffer(json.dumps(head).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("change, match", [
    ({"header": {"version": 2}}, r"field 'version': expected 1, got 2"),
    ({"header": {"kind": "kerv"}}, r"field 'kind': expected 'retrieval_store', got 'kerv'"),
    ({"header": {"key": {"method": "area-mean-l2", "views": ["image"], "grid": 4, "dim": 99}}},
     r"field 'key.dim': expected 48, got 99"),
    ({"values": np.zeros((50, 3, 7), np.int64)}, r"field 'values': expected int64 \[50, 4, 7\], got shape \(50, 3, 7\)"),
    ({"values": None}, r"field 'values': expected an array, got missing"),
    ({"offsets": np.array([0, 40, 30, 50])}, r"field 'offsets'"),
    ({"keys": np.full((50, 48), 0.5, np.float32)}, r"field 'keys': expected unit-norm rows"),
    ({"values": np.full((50, 4, 7), 5, np.int64)}, r"field 'values': expected action token ids in \[100, 355\]"),
])
def test_mismatched_store_file_names_field(tmp_path, change, match):
    path = _store().save(tmp_path / "s.npz")
    _rewrite(path, **change)
    with pytest.raises(RetrievalFileError, match=match) as exc:
        RetrievalStore.load(path)
    assert str(path) in str(exc.value)


def test_corrupt_and_missing_store_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(RetrievalFileError, match="bad.npz: not a readable .npz store"):
        RetrievalStore.load(bad)
    with pytest.raises(RetrievalFileError, match="nope.npz: not found"):
        RetrievalStore.load(tmp_path / "nope.npz")
    np.savez(tmp_path / "nohead.npz", keys=np.zeros((1, 48), np.float32))
    with pytest.raises(RetrievalFileError, match="field 'header'"):
        RetrievalStore.load(tmp_path / "nohead.npz")


# ---------------------------------------------------------------- search and drafts


def test_search_returns_the_stored_key_first_within_its_collection():
    s = _store()
    for row in (0, 17, 29):
        rows, sims = s.search(A, s.keys[row], 5)
        assert rows[0] == row and sims[0] == pytest.approx(1.0, abs=1e-5)
        assert np.all(np.diff(sims) <= 0) and len(rows) == 5
    rows, sims = s.search(B, s.keys[35], 100)  # k larger than the collection
    assert rows[0] == 35 and len(rows) == 20 and set(rows) == set(range(30, 50))
    with pytest.raises(KeyError, match="no collection for instruction 'stack it'.*put the red block.*lift the blue"):
        s.search("stack it", s.keys[0], 3)


def test_retrieval_drafts_deduplicates_current_actions():
    d = SPEC.dim
    base = np.zeros(d, np.float32)
    base[0] = 1.0
    keys = []
    for a in np.linspace(0.0, 0.5, 6):  # similarity to base decreases with row
        v = base.copy()
        v[1] = a
        keys.append(v / np.linalg.norm(v))
    tok = np.array([[1] * 7, [1] * 7, [2] * 7, [1] * 7, [3] * 7, [2] * 7]) + 100
    s = RetrievalStore.from_collections({A: {"keys": np.stack(keys), "values": trajectory_tokens(tok),
                                             "episode": np.zeros(6), "step": np.arange(6)}}, SPEC)
    drafts, sims, st = retrieval_drafts(s, A, base, k=3, pool=6)
    assert drafts.tolist() == [[101] * 7, [102] * 7, [103] * 7]
    assert st["rows"].tolist() == [0, 2, 4] and np.all(np.diff(sims) < 0)
    assert st["neighbours"].shape == (6, 7) and st["best_similarity"] == pytest.approx(1.0)
    assert retrieval_drafts(s, A, base, k=2, pool=6)[0].shape == (2, 7)


def test_drafts_to_tree_merges_prefixes_and_reproduces_drafts():
    drafts = np.array([[1, 2, 3, 4], [1, 2, 3, 5], [1, 6, 7, 8], [1, 2, 3, 4], [9, 2, 3, 4]])
    tree = drafts_to_tree(drafts)
    assert len(tree) == 4 + 1 + 3 + 4  # shared 1-2-3, shared 1, a separate root child 9
    got = [tree.token[p].tolist() for p in paths(tree)]
    assert got == [[1, 2, 3, 4], [1, 2, 3, 5], [1, 6, 7, 8], [9, 2, 3, 4]]
    assert all(tree.depth[p].tolist() == [1, 2, 3, 4] for p in paths(tree))
    assert np.sum(tree.parent == -1) == 2  # two distinct first tokens
    has_parent = tree.parent >= 0
    assert np.all(tree.score[tree.parent[has_parent]] >= tree.score[has_parent])  # ancestor >= descendant
    assert tree.score[0] == 0.0 and tree.score[-1] == -4.0
    m = tree_mask(tree)
    assert m.shape == (len(tree) + 1,) * 2 and m[4, 1] and not m[4, 5]  # node 3 (token 4) sees node 0, not node 4


def test_recombine_groups_pairs_xyz_with_rpy_and_gripper():
    d = np.array([[1, 1, 1, 5, 5, 5, 0], [2, 2, 2, 6, 6, 6, 1], [1, 1, 1, 7, 7, 7, 1]])
    rows = recombine_groups(d, max_rows=16)
    assert rows[0].tolist() == d[0].tolist()
    assert len(rows) == 2 * 3  # 2 distinct xyz heads x 3 distinct rpy+gripper tails
    assert {tuple(r) for r in d} <= {tuple(r) for r in rows}
    assert rows[:4].tolist() == [d[0].tolist(), [1, 1, 1, 6, 6, 6, 1], [2, 2, 2, 5, 5, 5, 0], d[1].tolist()]
    assert len(recombine_groups(d, max_rows=3)) == 3


# ---------------------------------------------------------------- verify-skip and boundary


def test_drafts_agree_uses_group_tolerances():
    rule = AcceptRule(mode="group")
    best = np.array([100, 100, 100, 100, 100, 100, 50])
    close = best + np.array([10, 10, 10, 0, 0, 15, 0])  # xyz sum 30, each <= 15
    far = best + np.array([10, 11, 10, 0, 0, 0, 0])  # xyz sum 31
    grip = best + np.array([0, 0, 0, 0, 0, 0, 1])  # gripper must be exact
    assert drafts_agree(np.stack([best, close, best]), 3, rule)
    assert not drafts_agree(np.stack([best, close, far]), 3, rule)
    assert drafts_agree(np.stack([best, close, far]), 2, rule)
    assert not drafts_agree(np.stack([best, grip]), 2, rule)
    assert not drafts_agree(np.stack([best, close]), 3, rule)  # too few neighbours
    assert accept_length(far, best, 0, rule) == 0


def test_verify_skip_cases_and_consecutive_cap():
    cfg = RetrievalConfig(skip_min_similarity=0.9, skip_agree_neighbours=3, max_consecutive_skips=2)
    best = np.full(7, 120)
    agree = np.stack([best, best + [3, 0, 0, 0, 0, 0, 0], best])
    disagree = np.stack([best, best, best + [0, 0, 0, 0, 0, 0, 1]])
    assert verify_skip(0.95, cfg, agree)
    assert verify_skip(0.9, cfg, agree)  # at the bound
    assert not verify_skip(0.89, cfg, agree)  # below the bound
    assert not verify_skip(0.99, cfg, disagree)  # gripper disagrees
    assert not verify_skip(0.99, cfg)  # agreement unknown
    assert verify_skip(0.99, cfg, agree, skips_in_row=1)
    assert not verify_skip(0.99, cfg, agree, skips_in_row=2)  # cap reached
    seq, run = [], 0  # a long confident stretch: at most 2 skips, then a verified step
    for _ in range(7):
        s = verify_skip(0.99, cfg, agree, run)
        seq.append(s)
        run = run + 1 if s else 0
    assert seq == [True, True, False, True, True, False, True]
    assert not verify_skip(0.99, RetrievalConfig(skip_min_similarity=0.9, verify_skip=False), agree)
    assert not verify_skip(0.99, RetrievalConfig(skip_min_similarity=0.9, max_consecutive_skips=0), agree)
    assert verify_skip(0.99, RetrievalConfig(skip_min_similarity=0.9, skip_agree_neighbours=1))
    assert not verify_skip(1.0, RetrievalConfig(skip_agree_neighbours=1))  # uncalibrated default never skips


def test_heisd_choose():
    cfg = RetrievalConfig(fused_threshold=0.6)
    assert heisd_choose(0.6, cfg) == "retrieval" and heisd_choose(0.9, cfg) == "retrieval"
    assert heisd_choose(0.59, cfg) == "drafter" and heisd_choose(None, cfg) == "drafter"
    assert heisd_choose(0.9, RetrievalConfig(fused_threshold=0.6, enabled=False)) == "drafter"


def test_config_validation():
    with pytest.raises(ValueError, match="search_pool: expected >= top_k"):
        RetrievalConfig(top_k=8, search_pool=4)
    with pytest.raises(ValueError, match="fused_radius_m"):
        RetrievalConfig(fused_radius_m=(1.0, 1.0))


def test_skip_bound_and_fused_threshold_rules():
    sim = np.array([0.99, 0.98, 0.97, 0.96, 0.95, 0.94])
    ok = np.array([True, True, True, False, True, False])
    bound, info = skip_bound(sim, np.ones(6, bool), ok, precision=0.75, min_support=2)
    assert bound == 0.95 and info["support"] == 5 and info["precision"] == pytest.approx(0.8)
    bound, _ = skip_bound(sim, np.ones(6, bool), ok, precision=1.0, min_support=4)
    assert bound == 1.01  # never reaches 100 % over 4 steps
    bound, info = skip_bound(sim, np.array([True, True, True, False, True, True]), ok, precision=1.0, min_support=2)
    assert bound == 0.95 and info["coverage"] == pytest.approx(4 / 6)  # the disagreeing step is left out
    F = np.array([0.1, 0.2, 0.3, np.nan, 0.7, 0.8, 0.9])
    good = np.array([False, False, False, True, True, True, True])
    thr, info = fused_threshold(F, good, 0.5)
    assert thr == 0.7 and info["youden_j"] == pytest.approx(1.0) and info["auc"] == pytest.approx(1.0)


# ---------------------------------------------------------------- calib retrieval end to end


def _frame(t, seed, hue):
    """A 64x64 frame whose content is set by the step (a square moving diagonally) plus noise."""
    img = np.full((64, 64, 3), 40, np.uint8)
    y = x = 2 + 2 * t
    img[y:y + 12, x:x + 12] = hue
    img += np.random.default_rng(seed * 1000 + t).integers(0, 3, size=img.shape, dtype=np.uint8)
    return img


def make_dataset(root, n=12, T=20):
    (root / "meta").mkdir(parents=True)
    (root / "data").mkdir()
    lines = []
    steps = np.arange(T)
    for i in range(n):
        sign = 1.0 if i % 2 == 0 else -1.0
        instruction = A if i % 2 == 0 else B
        a = np.zeros((T, 7), np.float32)
        a[:, 0] = sign * 0.02 * np.cos(steps / 4.0) * (1 + steps / T)
        a[:, 1] = 0.02 * np.sin(steps / 4.0) * (1 + steps / T)
        a[:, 2] = -0.01 * (steps < 10) + 0.01 * (steps >= 10)
        a[:, 5] = 0.05 * np.sin(steps / 5.0)
        a[:, 6] = (steps < 12).astype(np.float32)
        ee = (np.array([0.4, 0.0, 0.3]) + np.cumsum(a[:, :3], 0)).astype(np.float32)
        hue = (200, 30, 30) if i % 2 == 0 else (30, 30, 200)
        image = np.stack([_frame(t, i, hue) for t in steps])
        wrist = np.stack([_frame(T - 1 - t, i + 7, hue) for t in steps])
        np.savez(root / "data" / f"episode_{i:06d}.npz", image=image, wrist_image=wrist, action=a, ee_pos=ee)
        lines.append(json.dumps({"index": i, "success": True, "instruction": instruction, "suite": "goal",
                                 "task": "t", "seed": i, "length": T}))
    (root / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")


def _stats_file(path):
    doc = {"version": 1, "kind": "action_stats",
           "action": {"q01": [-0.02, -0.02, -0.01, -0.01, -0.01, -0.05, 0.0],
                      "q99": [0.02, 0.02, 0.01, 0.01, 0.01, 0.05, 1.0], "mask": [True] * 6 + [False]}}
    path.write_text(json.dumps(doc))
    return path


def test_calib_retrieval_end_to_end(tmp_path, capsys):
    make_dataset(tmp_path / "ds")
    stats = _stats_file(tmp_path / "astats.json")
    out = tmp_path / "out"
    rc = calib_main(["retrieval", "--data", str(tmp_path / "ds"), "--action-stats", str(stats), "--vocab-size", "300",
                     "--out", str(out), "--holdout-every", "3", "--skip-min-support", "5", "--window", "5",
                     "--latency-queries", "50"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "held-out 80 steps" in text and "store: 160 rows in 2 collections" in text
    doc = json.loads((out / "retrieval.json").read_text())
    assert doc["kind"] == "retrieval" and doc["version"] == 1 and doc["store"] == "retrieval_store.npz"
    assert doc["source"]["fit_episodes"] == 8 and doc["source"]["heldout_episodes"] == 4  # 0, 3, 6, 9
    h = doc["report"]["heldout"]
    assert h["top1_group_accept"] >= 0.95  # held-out frames match the stored ones at the same step
    assert h["top1_exact_per_dim"][6] == 1.0
    assert doc["skip"]["calibrated"] and 0.0 < doc["skip"]["min_similarity"] <= 1.0
    lo, hi = doc["fused"]["length_m"]
    assert 0.0 < lo < hi and doc["fused"]["window_steps"] == 5
    assert doc["report"]["search_latency"]["queries"] == 50
    assert load_retrieval_config(out / "retrieval.json").top_k == 4
    cfg = load_retrieval_config(out / "retrieval.json", top_k=2)
    assert cfg.top_k == 2 and cfg.skip_min_similarity == doc["skip"]["min_similarity"]
    assert cfg.fused_length_m == (lo, hi) and cfg.fused_window_steps == 5
    store = RetrievalStore.load(cfg.store_path)
    assert store.instructions == tuple(sorted((A, B))) and len(store) == 160
    assert set(store.episode.tolist()) == {1, 2, 4, 5, 7, 8, 10, 11}
    assert store.values.min() >= 300 - 256 and store.values.max() <= 299
    # a query made from an observation of a fit episode finds itself
    with np.load(tmp_path / "ds" / "data" / "episode_000004.npz") as z:
        key = store.key_of({"image": z["image"][7], "wrist_image": z["wrist_image"][7]})
    rows, sims = store.search(A, key, 1)
    assert (store.episode[rows[0]], store.step[rows[0]]) == (4, 7) and sims[0] == pytest.approx(1.0, abs=1e-5)


def test_calib_retrieval_errors_and_help(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        calib_main(["retrieval", "--help"])
    assert exc.value.code == 0 and "--engines" in capsys.readouterr().out
    assert calib_main(["retrieval", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "episodes.jsonl: not found" in capsys.readouterr().err
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"version": 1, "kind": "kerv"}))
    with pytest.raises(RetrievalFileError, match="field 'kind': expected 'retrieval'"):
        load_retrieval_config(bad)
