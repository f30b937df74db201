"""KERV: steady-state gain against closed forms, the AC window, compensation under PL/AC/n,
the dynamic threshold, and ``calib kerv`` (noise recovery, file round trip, errors, CLI)."""

import argparse
import contextlib
import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calib.__main__ import main as calib_main
from calib.kerv import _loglik, load_bins
from edge.kalman import KFParams, kf_filter, steady_state_gain
from edge.kerv import (KervConfig, KervFileError, kerv_compensate, kerv_init, kerv_observe, kerv_predict_tokens,
                       kerv_ready, kerv_threshold, kf_branch_tokens, load_kerv_config, threshold_from_kvar)

FIRST = 1000  # first action token id of a made-up vocabulary of 1256 ids
REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- steady-state gain


def _kalata_gain(q, r):
    """Steady-state alpha-beta gains of the discrete white-noise-acceleration model (Kalata's
    tracking index lambda = sigma_a T^2 / sigma_z, T = 1)."""
    lam = np.sqrt(q / r)
    s = np.sqrt(lam**2 + 8 * lam)
    alpha = -(lam**2 + 8 * lam - (lam + 4) * s) / 8
    beta = (lam**2 + 4 * lam - lam * s) / 4
    return np.stack([alpha, beta], axis=1)


def _dare_hamiltonian(F, H, Q, R):
    """Predicted covariance from the stable invariant subspace of the symplectic matrix of the
    (dual) discrete algebraic Riccati equation; no iteration."""
    A, B = F.T, H.T
    Ait = np.linalg.inv(A).T
    G = B @ np.linalg.inv(R) @ B.T
    Z = np.block([[A + G @ Ait @ Q, -G @ Ait], [-Ait @ Q, Ait]])
    w, V = np.linalg.eig(Z)
    U = V[:, np.abs(w) < 1]
    n = F.shape[0]
    return np.real(U[n:] @ np.linalg.inv(U[:n]))


def test_cv_steady_state_gain_matches_closed_form_and_dare():
    q = np.array([0.01, 0.1, 1.0, 3.0, 0.5, 2.0, 0.05])
    r = np.array([1.0, 2.0, 0.1, 1.0, 4.0, 0.3, 1 / 12])
    cfg = KervConfig(kf_q_bins2=tuple(q), kf_r_bins2=tuple(r))
    K = steady_state_gain(cfg.kf_params(), iters=400)
    assert np.allclose(K, _kalata_gain(q, r), rtol=1e-8, atol=1e-10)
    F, H = np.array([[1.0, 1.0], [0.0, 1.0]]), np.array([[1.0, 0.0]])
    for d in range(7):
        P = _dare_hamiltonian(F, H, q[d] * np.array([[0.25, 0.5], [0.5, 1.0]]), np.array([[r[d]]]))
        assert np.allclose(K[d], (P @ H.T)[:, 0] / (P[0, 0] + r[d]), rtol=1e-8)


@pytest.mark.parametrize("model", ["cv", "rw"])
def test_calib_likelihood_equals_edge_filter_innovations(model):
    """calib's batched gain recursion gives the same likelihood as edge.kalman's filter."""
    rng = np.random.default_rng(1)
    eps = [np.cumsum(rng.normal(0, 2, size=(T, 7)), 0) + 100 for T in (12, 7, 20)]
    q = np.array([[0.1, 1.0], [0.5, 2.0], [1.0, 0.2], [3.0, 3.0], [0.01, 0.1], [1.0, 1.0], [2.0, 0.5]])
    r = q[:, ::-1] + 0.1
    burn = 2
    ll = _loglik(eps, model, q, r, 50.0, burn)
    for c in range(2):
        params = KFParams(model, tuple(q[:, c]), tuple(r[:, c]), 50.0)
        want = np.zeros(7)
        for e in eps:
            _, st = kf_filter(e, params)
            y, S = st["innovation"][burn:], st["innovation_var"][burn:]
            want -= 0.5 * (np.log(2 * np.pi * S) + y**2 / S).sum(0)
        assert np.allclose(ll[:, c], want, rtol=1e-9)


# ---------------------------------------------------------------- tracker


def _observe_all(rows, cfg, state=None, filled=None):
    state = state or kerv_init(FIRST)
    for i, row in enumerate(rows):
        state, _ = kerv_observe(state, [FIRST + int(v) for v in row], cfg, (filled or {}).get(i, 0))
    return state


def _ramp(n, start=100, slope=2):
    return [[start + slope * t] * 6 + [255] for t in range(n)]


def test_forecast_extrapolates_pl_steps_holds_gripper_and_clips():
    cfg = KervConfig(kf_q_bins2=(1e-4,) * 7, kf_r_bins2=(0.1,) * 7)
    s = _observe_all(_ramp(8), cfg)
    assert kerv_ready(s, cfg)
    assert kerv_predict_tokens(s, cfg).tolist() == [FIRST + 116] * 6 + [FIRST + 255]
    s2 = _observe_all(_ramp(8), dataclasses.replace(cfg, pl_steps=3))
    assert kerv_predict_tokens(s2, cfg).tolist()[:6] == [FIRST + 120] * 6
    up = _observe_all([[240 + 6 * t] * 7 for t in range(3)], cfg)  # heading past the last bin
    assert kerv_predict_tokens(up, cfg).tolist() == [FIRST + 255] * 6 + [FIRST + 252]  # gripper held
    rw = _observe_all(_ramp(8), dataclasses.replace(cfg, kf_model="rw", kf_q_bins2=(1.0,) * 7, kf_r_bins2=(1e-3,) * 7))
    assert kerv_predict_tokens(rw, cfg).tolist()[:6] == [FIRST + 114] * 6  # released model: hold
    assert kf_branch_tokens(s, cfg, 4) == [FIRST + 116, FIRST + 116, FIRST + 255]
    assert kf_branch_tokens(s, cfg, 7) == []
    assert kf_branch_tokens(s, dataclasses.replace(cfg, branch_enabled=False), 2) == []
    assert kf_branch_tokens(_observe_all(_ramp(2), cfg), cfg, 2) == []  # not ready (min_history_steps = 3)


def test_ac_window_forgets_older_actions():
    cfg = KervConfig(ac_steps=4)
    rng = np.random.default_rng(0)
    junk = rng.integers(0, 256, size=(9, 7))
    clean = np.array(_ramp(4, start=50, slope=3))
    a = _observe_all(np.concatenate([junk, clean]), cfg)
    b = _observe_all(clean, cfg)
    assert a.history.shape == (4, 7) and np.array_equal(a.history, b.history)
    assert np.array_equal(kerv_predict_tokens(a, cfg), kerv_predict_tokens(b, cfg))
    assert a.kvar == pytest.approx(b.kvar)
    assert a.steps == 13 and b.steps == 4
    c = _observe_all(np.concatenate([junk, clean]), dataclasses.replace(cfg, ac_steps=10))
    assert not np.array_equal(kerv_predict_tokens(c, cfg), kerv_predict_tokens(b, cfg))


def test_observe_rejects_non_action_tokens():
    cfg = KervConfig()
    with pytest.raises(ValueError, match=r"expected action token ids in \[1000, 1255\]"):
        kerv_observe(kerv_init(FIRST), [999] + [FIRST] * 6, cfg)
    with pytest.raises(ValueError, match="expected 7 action tokens, got 6"):
        kerv_observe(kerv_init(FIRST), [FIRST] * 6, cfg)


# ---------------------------------------------------------------- compensation


def _run_steps(cfg, n_steps, prefix_len=3):
    """Every step tries to compensate after a prefix of ``prefix_len`` tokens; returns the steps
    where it did."""
    s = _observe_all(_ramp(cfg.min_history_steps), cfg)
    done = []
    for step in range(n_steps):
        truth = [FIRST + 110 + step] * 7
        tokens, st = kerv_compensate(truth[:prefix_len], None, s, cfg)
        if st["compensated"]:
            done.append(step)
            assert tokens[:prefix_len].tolist() == truth[:prefix_len]
            assert tokens[prefix_len:].tolist() == kerv_predict_tokens(s, cfg)[prefix_len:].tolist()
            assert st["filled_dims"] == 7 - prefix_len
        else:
            assert tokens is None and st["reason"] in ("cooldown", "streak")
        s, _ = kerv_observe(s, truth if tokens is None else tokens, cfg, st["filled_dims"])
    return done


def test_cooldown_disables_compensation_for_n_steps():
    assert _run_steps(KervConfig(cooldown_steps=4), 12) == [0, 5, 10]
    assert _run_steps(KervConfig(cooldown_steps=1), 6) == [0, 2, 4]


def test_consecutive_cap_without_cooldown():
    assert _run_steps(KervConfig(cooldown_steps=0, max_consecutive_comps=2), 9) == [0, 1, 3, 4, 6, 7]
    assert _run_steps(KervConfig(cooldown_steps=0, max_consecutive_comps=1), 5) == [0, 2, 4]


def test_compensation_preconditions():
    cfg = KervConfig(max_fill_dims=4)
    s = _observe_all(_ramp(5), cfg)
    fc = kerv_predict_tokens(s, cfg)
    tok, st = kerv_compensate([FIRST + 1, FIRST + 2], None, s, cfg)
    assert tok is None and st["reason"] == "tail_too_long"
    tok, st = kerv_compensate([FIRST + 1, FIRST + 2], [FIRST + 3, FIRST + 77], s, cfg)  # bonus from the row
    assert st["reason"] == "compensated" and st["prefix_len"] == 3
    assert tok.tolist() == [FIRST + 1, FIRST + 2, FIRST + 3] + fc[3:].tolist()
    tok, st = kerv_compensate([FIRST + 5] * 7, None, s, cfg)
    assert tok.tolist() == [FIRST + 5] * 7 and not st["compensated"] and st["reason"] == "complete"
    assert kerv_compensate([], None, s, cfg)[1]["reason"] == "empty_prefix"
    off = dataclasses.replace(cfg, compensate_enabled=False)
    assert kerv_compensate([FIRST] * 3, None, s, off)[1]["reason"] == "disabled"
    assert kerv_compensate([FIRST] * 3, None, _observe_all(_ramp(2), cfg), cfg)[1]["reason"] == "not_ready"
    gated = dataclasses.replace(cfg, gate_bins=2)
    near = int(fc[2]) + 2
    assert kerv_compensate([FIRST, FIRST, near], None, s, gated)[1]["reason"] == "compensated"
    assert kerv_compensate([FIRST, FIRST, near + 1], None, s, gated)[1]["reason"] == "gate"


# ---------------------------------------------------------------- dynamic threshold


def test_threshold_maps_kvar_monotonically_into_bounds():
    cfg = KervConfig(r_min_bins=5, r_max_bins=15, kvar_lo=0.4, kvar_hi=1.6, r_gripper_bins=0)
    ks = np.linspace(-1.0, 3.0, 201)
    rs = [threshold_from_kvar(float(k), cfg) for k in ks]
    assert all(5 <= r <= 15 for r in rs)
    assert all(a >= b for a, b in zip(rs, rs[1:]))
    assert rs[0] == 15 and rs[-1] == 5 and threshold_from_kvar(1.0, cfg) == 10
    assert threshold_from_kvar(None, cfg) == 5
    s = _observe_all(_ramp(5), cfg)
    for k, want in ((0.0, 15), (1.0, 10), (9.0, 5)):
        r, st = kerv_threshold(dataclasses.replace(s, kvar=k), cfg)
        assert r == (want,) * 6 + (0,) and st["r_bins"] == want
    assert kerv_threshold(_observe_all(_ramp(2), cfg), cfg)[0][0] == 5  # not ready: r_min
    assert kerv_threshold(s, dataclasses.replace(cfg, threshold_enabled=False))[0] == (15,) * 6 + (0,)


def test_smooth_motion_gets_a_wider_threshold_than_jerky_motion():
    cfg = KervConfig(kf_q_bins2=(0.05,) * 7, kf_r_bins2=(1.0,) * 7, kvar_lo=0.3, kvar_hi=2.0)
    smooth = _observe_all(_ramp(10, slope=3), cfg)
    jerky = _observe_all([[100 + (15 if t % 2 else -15)] * 6 + [0] for t in range(10)], cfg)
    assert smooth.kvar < jerky.kvar
    assert kerv_threshold(smooth, cfg)[0][0] > kerv_threshold(jerky, cfg)[0][0]
    assert 0 <= smooth.kvar and jerky.kvar <= cfg.kvar_nis_cap


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match=r"KervConfig.r_max_bins: expected >= r_min_bins \(5\), got 3"):
        KervConfig(r_max_bins=3)
    with pytest.raises(ValueError, match="KervConfig.kf_q_bins2: expected 7 positive"):
        KervConfig(kf_q_bins2=(1.0,) * 6)
    with pytest.raises(ValueError, match="KervConfig.kf_model"):
        KervConfig(kf_model="ca")


# ---------------------------------------------------------------- calib kerv

TRUE_Q = np.array([0.01, 0.05, 0.02, 0.05, 0.01, 0.03, 0.02])  # acceleration variance, bins^2
TRUE_R = np.array([1.0, 0.5, 4.0, 2.0, 0.25, 1.0, 2.0])  # measurement noise, bins^2


def _write_cv_dataset(root: Path, n=60, T=50, seed=0):
    """Constant-velocity-plus-noise bins in the sim.collect format; with q01 = -1, q99 = 1 the
    codec's bin b - 1 is floor(z) of the simulated bin coordinate z (rounding adds 1/12 to R)."""
    rng = np.random.default_rng(seed)
    (root / "meta").mkdir(parents=True)
    (root / "data").mkdir()
    F, G = np.array([[1.0, 1.0], [0.0, 1.0]]), np.array([0.5, 1.0])
    lines = []
    for i in range(n):
        while True:  # keep episodes that stay inside the bin range (no clipping)
            x = np.zeros((7, 2))
            x[:, 0] = 127.5
            zs = []
            for _ in range(T):
                zs.append(x[:, 0] + rng.normal(0, np.sqrt(TRUE_R)))
                x = x @ F.T + rng.normal(0, np.sqrt(TRUE_Q))[:, None] * G
            zs = np.array(zs)
            if zs.min() > 3 and zs.max() < 252:
                break
        np.savez(root / "data" / f"episode_{i:06d}.npz", action=(2 * zs / 255 - 1).astype(np.float32))
        lines.append(json.dumps({"index": i, "success": True}))
    (root / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    action = {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [True] * 6 + [False]}
    (root / "stats.json").write_text(json.dumps({"version": 1, "kind": "action_stats", "action": action}))
    (root / "manifest.json").write_text(json.dumps({"codec": {"vocab_size": 1256, "n_bins": 256, "action": action}}))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("kerv")
    _write_cv_dataset(root / "ds")
    out = root / "kerv.json"
    with contextlib.redirect_stdout(io.StringIO()) as text:
        assert calib_main(["kerv", "--data", str(root / "ds"), "--out", str(out), "--manifest",
                           str(root / "ds" / "manifest.json"), "--holdout-every", "5"]) == 0
    return root, out, text.getvalue()


def test_calib_recovers_known_noise_and_beats_repeat(fitted):
    _, out, _ = fitted
    doc = json.loads(out.read_text())
    assert doc["version"] == 1 and doc["kind"] == "kerv"
    cv = doc["kf"]["models"]["cv"]
    q, r = np.array(cv["q_bins2"]), np.array(cv["r_bins2"])
    assert np.all(np.abs(np.log(q / TRUE_Q)) < np.log(1.4)), q / TRUE_Q
    assert np.all(np.abs(np.log(r / (TRUE_R + 1 / 12))) < np.log(1.15)), r / (TRUE_R + 1 / 12)
    h = doc["report"]["heldout"]
    assert h["targets"] > 0 and h["cv"]["mae_arm_bins"] < 0.9 * h["repeat"]["mae_arm_bins"]
    assert doc["kf"]["model"] == "cv" and doc["report"]["model_choice"]["by"].startswith("held-out")
    assert 0 < cv["kvar_lo"] < cv["kvar_hi"] <= doc["window"]["kvar_nis_cap"]
    assert doc["source"]["fit_episodes"] == 48 and doc["source"]["heldout_episodes"] == 12


def test_codec_sources_agree_and_report_prints(fitted):
    root, _, text = fitted
    assert "held-out one-step error" in text and "default model: cv (by held-out" in text
    ds = root / "ds"
    ns = dict(engines=None, manifest=None, action_stats=None, holdout_every=5)
    a = load_bins(ds, argparse.Namespace(**dict(ns, manifest=str(ds / "manifest.json"))))
    b = load_bins(ds, argparse.Namespace(**dict(ns, action_stats=str(ds / "stats.json"))))
    c = load_bins(ds, argparse.Namespace(**ns))  # q01/q99 fitted from the data: another scale
    assert all(np.array_equal(x, y) for x, y in zip(a[0] + a[1], b[0] + b[1]))
    assert not all(np.array_equal(x, y) for x, y in zip(a[0], c[0]))
    assert a[2]["codec"]["from"].endswith("manifest.json:codec") and a[2]["codec"]["vocab_size"] == 1256


def test_config_round_trip_and_overrides(fitted):
    _, out, _ = fitted
    doc = json.loads(out.read_text())
    cfg = load_kerv_config(out)
    cv = doc["kf"]["models"]["cv"]
    assert cfg.kf_model == "cv" and cfg.kf_q_bins2 == tuple(cv["q_bins2"]) and cfg.kf_r_bins2 == tuple(cv["r_bins2"])
    assert (cfg.kvar_lo, cfg.kvar_hi) == (cv["kvar_lo"], cv["kvar_hi"])
    assert cfg.ac_steps == doc["window"]["ac_steps"] and cfg.kvar_dims == tuple(doc["window"]["kvar_dims"])
    rw = load_kerv_config(out, kf_model="rw", cooldown_steps=2, r_max_bins=9)
    assert rw.kf_q_bins2 == tuple(doc["kf"]["models"]["rw"]["q_bins2"]) and rw.cooldown_steps == 2
    assert rw.kvar_lo == doc["kf"]["models"]["rw"]["kvar_lo"] and rw.r_max_bins == 9
    with pytest.raises(ValueError, match="unknown KervConfig field"):
        load_kerv_config(out, coolduwn_steps=2)


def test_bad_files_give_clear_errors(fitted, tmp_path):
    _, out, _ = fitted
    good = json.loads(out.read_text())

    def write(doc):
        p = tmp_path / "bad.json"
        p.write_text(json.dumps(doc))
        return p

    with pytest.raises(KervFileError, match=r"bad.json: field 'version': expected 1, got 2"):
        load_kerv_config(write({**good, "version": 2}))
    with pytest.raises(KervFileError, match=r"field 'kind': expected 'kerv', got 'action_stats'"):
        load_kerv_config(write({**good, "kind": "action_stats"}))
    bad = json.loads(json.dumps(good))
    bad["kf"]["models"]["cv"]["r_bins2"] = [1.0] * 6
    with pytest.raises(KervFileError, match=r"field 'kf.models.cv.r_bins2': expected a list of 7 positive numbers"):
        load_kerv_config(write(bad))
    bad = json.loads(json.dumps(good))
    del bad["window"]["ac_steps"]
    with pytest.raises(KervFileError, match=r"field 'window.ac_steps': expected present, got 'missing'"):
        load_kerv_config(write(bad))
    with pytest.raises(KervFileError, match="nope.json: not found"):
        load_kerv_config(tmp_path / "nope.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(KervFileError, match="junk.json: not valid JSON"):
        load_kerv_config(tmp_path / "junk.json")


def test_calib_errors_and_help(tmp_path, capsys):
    assert calib_main(["kerv", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "k.json")]) == 2
    assert "episodes.jsonl: not found" in capsys.readouterr().err
    res = subprocess.run([sys.executable, "-m", "calib", "kerv", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and "--data" in res.stdout and "--engines" in res.stdout and "K_var" in res.stdout
