"""KERV (METHODS.md section 2): Kalman compensation of rejected tails, Kalman draft branches, and
the kinematics-based dynamic acceptance threshold. numpy only; every function is pure.

Units. Everything internal is in *bin offsets* ``u = token - first_action_token`` in
``[0, n_bins - 1]`` (``edge.codec``: ``|delta token| == |delta bin|``, so a bin error is a token
error). Forecasts are rounded to the nearest offset and clipped to the action-token range.

Tracker. ``KervState`` holds the last ``AC = ac_steps`` accepted actions (METHODS 2.2: "the KF
uses a history window of the last 10 accepted actions per DoF"). After each control step the
caller passes the step's 7 final tokens to ``kerv_observe``, which re-runs the per-DoF filter of
``edge.kalman`` (``cv``: position + velocity; ``rw``: the released code's random walk) over the
window from a fresh prior and caches the forecast ``PL = pl_steps`` control steps after the newest
action (PL = 1: the next action, METHODS 2.2) and the variability ``K_var``. So every output is a
function of the last AC accepted actions only (and of the compensation counters below).
With ``gripper_hold`` the gripper's forecast is its last value: it is a switch, not a trajectory.

Compensation (METHODS 2.3). ``kerv_compensate(prefix, verifier_row, state, cfg)`` is asked after
a partial verification round. ``prefix`` holds the committed tokens of this action (accepted
drafts; the decoder's bonus token, the verifier's own greedy token after them, may be in it or
be ``verifier_row[0]``). If allowed, the remaining dims are the Kalman forecast and the action is
complete without re-inference; otherwise ``None`` and decoding continues. Allowed when all hold:
the tracker is ready (``min_history_steps``), at least ``cooldown_steps = n`` steps passed since
the last compensated step (METHODS 2.2: "KF disabled for the next n = 4 steps"; the released code
compensates every 4th step, i.e. n = 3), fewer than ``max_consecutive_comps`` compensations in
consecutive steps (binds only with n = 0; the released "yuzhi" variant used 3), the tail is at
most ``max_fill_dims`` long, and (optional, ``gate_bins >= 0``, not in the paper) the forecast of
the last committed dim is within ``gate_bins`` of that token, which is the verifier's own. Call
``kerv_observe(..., filled_dims=stats["filled_dims"])`` with the final tokens so the cooldown
starts; filled dims still enter the history (they are what the arm executed).

Branches (METHODS 2.3, ``use_kalman_tree``). ``kf_branch_tokens(state, cfg, start_dim)`` is the
forecast for dims ``start_dim..6``, a continuation the caller adds to a draft tree: verified,
so it is not subject to the cooldown. The forecast does not depend on the prefix (independent
per-DoF filters).

Dynamic threshold (METHODS 2.4; the paper's K_var formula is not public, this one is ours).
Over the window, the filter's innovations ``y`` (newest observation minus its one-step
prediction, bins) and their variances ``S`` give normalised innovations ``e = |y| / sqrt(S)``,
scale-free per DoF and ~|N(0, 1)| (mean 0.8) when the motion follows the model. For ``cv``
an innovation is exactly the unmodelled acceleration plus token noise, so this is the
acceleration term too. ``e`` is capped at ``kvar_nis_cap`` (one wild token must not
saturate it) and

    K_var = mean of e over the last ``kvar_steps`` innovations and the dims ``kvar_dims``.

It maps linearly between calibrated bounds (``calib kerv``: 5th/95th percentiles over
demonstrations) to ``r = r_max - (r_max - r_min) * clip((K_var - lo) / (hi - lo), 0, 1)``,
rounded: smooth, predictable motion (low K_var) may accept drafts further from the verifier,
variable motion (grasp approach, contact, reversal) tightens towards r_min. This matches the
released schedule's direction (r_max early in free motion, r_min late in fine manipulation).
The threshold is in bins per dim, not mapped into action units (a calibrated per-dim scale
would be an extension). Until the tracker is ready, r = r_min (no evidence: stay close to the
verifier). The gripper gets ``r_gripper_bins`` (0: exact).

File. ``load_kerv_config(path, **overrides)`` builds a ``KervConfig`` from the versioned JSON
that ``python -m calib kerv`` writes (``{"version": 1, "kind": "kerv", ...}``); a bad file raises
``KervFileError`` naming the file, the field, what was expected and what it got.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from edge.files import field_error, read_versioned_json
from edge.kalman import KFParams, kf_filter, kf_forecast

__all__ = ["KervConfig", "KervState", "KervFileError", "kerv_init", "kerv_ready", "kerv_observe",
           "kerv_predict_tokens", "kerv_compensate", "kerv_threshold", "kf_branch_tokens",
           "threshold_from_kvar", "window_estimates", "load_kerv_config", "read_kerv_file",
           "FORMAT_VERSION", "KIND", "ACTION_DIM"]

log = logging.getLogger(__name__)

ACTION_DIM = 7
GRIPPER = 6
FORMAT_VERSION = 1
KIND = "kerv"
_NEVER = 1 << 30  # steps_since_comp before the first compensation


@dataclasses.dataclass(frozen=True)
class KervConfig:
    # Kalman filter over accepted bins (edge.kalman); fitted by `python -m calib kerv`
    kf_model: str = "cv"  # cv (position + velocity) or rw (random walk, the released code)
    kf_q_bins2: tuple[float, ...] = (1.0,) * 7  # process noise per DoF, bins^2 (cv: acceleration variance)
    kf_r_bins2: tuple[float, ...] = (1.0,) * 7  # token (measurement) noise per DoF, bins^2
    kf_p0_bins2: float = 100.0  # prior variance of each window's initial state, bins^2 (and (bins/step)^2)
    # METHODS 2.2 hyperparameters
    pl_steps: int = 1  # PL: forecast horizon in control steps after the newest accepted action
    ac_steps: int = 10  # AC: accepted actions in the filter's history window
    cooldown_steps: int = 4  # n: steps after a compensated step in which compensation is off
    max_consecutive_comps: int = 3  # cap on compensations in consecutive steps (binds only when n = 0)
    # compensation
    compensate_enabled: bool = True  # fill rejected tails with the forecast
    max_fill_dims: int = 6  # most tail dims one compensation may fill (1..6)
    min_history_steps: int = 3  # accepted actions needed before forecasts are used (>= 2)
    gate_bins: int = -1  # >= 0: compensate only if the forecast of the last committed dim is this close to it
    gripper_hold: bool = True  # the gripper's forecast is its last value
    # branches
    branch_enabled: bool = True  # offer the forecast as a draft-tree branch
    # dynamic threshold
    threshold_enabled: bool = True  # False: r_max_bins on every arm dim
    r_min_bins: int = 5  # threshold at high kinematic variability (METHODS 2.2: 5)
    r_max_bins: int = 15  # threshold at low kinematic variability (METHODS 2.2: 15)
    r_gripper_bins: int = 0  # gripper threshold (0: exact)
    kvar_lo: float = 0.5  # K_var at or below which r = r_max (calib: 5th percentile)
    kvar_hi: float = 2.0  # K_var at or above which r = r_min (calib: 95th percentile)
    kvar_steps: int = 3  # newest innovations averaged into K_var
    kvar_dims: tuple[int, ...] = (0, 1, 2, 3, 4, 5)  # dims averaged into K_var (calib drops constant ones)
    kvar_nis_cap: float = 4.0  # cap on each normalised innovation, in innovation std

    def __post_init__(self):
        def bad(field, expected):
            raise ValueError(f"KervConfig.{field}: expected {expected}, got {getattr(self, field)!r}")

        if self.kf_model not in ("cv", "rw"):
            bad("kf_model", "'cv' or 'rw'")
        for f in ("kf_q_bins2", "kf_r_bins2"):
            v = getattr(self, f)
            if len(v) != ACTION_DIM or not all(math.isfinite(x) and x > 0 for x in v):
                bad(f, f"{ACTION_DIM} positive finite numbers")
        if not self.kf_p0_bins2 > 0:
            bad("kf_p0_bins2", "> 0")
        for f, lo in (("pl_steps", 1), ("ac_steps", 2), ("cooldown_steps", 0), ("max_consecutive_comps", 1),
                      ("min_history_steps", 2), ("r_min_bins", 0), ("r_gripper_bins", 0), ("kvar_steps", 1)):
            if int(getattr(self, f)) != getattr(self, f) or getattr(self, f) < lo:
                bad(f, f"an integer >= {lo}")
        if not 1 <= self.max_fill_dims <= ACTION_DIM - 1:
            bad("max_fill_dims", f"an integer in [1, {ACTION_DIM - 1}]")
        if self.min_history_steps > self.ac_steps:
            bad("min_history_steps", f"<= ac_steps ({self.ac_steps})")
        if self.r_max_bins < self.r_min_bins:
            bad("r_max_bins", f">= r_min_bins ({self.r_min_bins})")
        if not (math.isfinite(self.kvar_lo) and math.isfinite(self.kvar_hi) and self.kvar_lo < self.kvar_hi):
            bad("kvar_hi", f"finite and > kvar_lo ({self.kvar_lo})")
        if not self.kvar_dims or any(not 0 <= d < ACTION_DIM for d in self.kvar_dims):
            bad("kvar_dims", f"a non-empty subset of 0..{ACTION_DIM - 1}")
        if not self.kvar_nis_cap > 0:
            bad("kvar_nis_cap", "> 0")

    def kf_params(self, repeat: int = 1) -> KFParams:
        """``edge.kalman`` parameters, the 7 DoFs repeated ``repeat`` times (windows side by side)."""
        return KFParams(self.kf_model, tuple(self.kf_q_bins2) * repeat, tuple(self.kf_r_bins2) * repeat,
                        self.kf_p0_bins2)


@dataclasses.dataclass(frozen=True)
class KervState:
    first_action_token: int  # smallest action token id (ActionCodec.first_action_token)
    n_bins: int = 256  # action bins (the last n_bins ids of the vocabulary)
    history: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, ACTION_DIM)))  # [h <= AC, 7] bins
    forecast_bins: np.ndarray | None = None  # [7] float forecast PL steps after the newest action (None: h < 2)
    nis: np.ndarray | None = None  # [7] capped normalised innovation, mean of the newest kvar_steps
    kvar: float | None = None  # K_var (None: no innovation yet)
    steps: int = 0  # actions observed since kerv_init
    steps_since_comp: int = _NEVER  # observed steps after the last compensated one (0: the previous step)
    comp_streak: int = 0  # compensated steps in a row, ending with the previous step


def kerv_init(first_action_token: int, n_bins: int = 256) -> KervState:
    """A fresh tracker (start of an episode) for the action-token range of the codec."""
    if n_bins < 2 or first_action_token < 0:
        raise ValueError(f"kerv_init: expected first_action_token >= 0 and n_bins >= 2, "
                         f"got {first_action_token}, {n_bins}")
    return KervState(int(first_action_token), int(n_bins))


def kerv_ready(state: KervState, cfg: KervConfig) -> bool:
    return len(state.history) >= cfg.min_history_steps and state.forecast_bins is not None


def window_estimates(windows: np.ndarray, cfg: KervConfig) -> dict:
    """Filter ``windows [N, h, 7]`` of accepted bins (oldest first, ``h >= 1``) side by side.

    Returns ``forecast [N, 7]`` (float bins, ``pl_steps`` after each window's newest row, the
    gripper held with ``gripper_hold``), ``nis [N, 7]`` and ``kvar [N]`` (NaN while ``h < 2``).
    The runtime tracker and ``calib kerv`` both use this, so they agree exactly."""
    w = np.asarray(windows, float)
    N, h, D = w.shape
    if D != ACTION_DIM or h < 1:
        raise ValueError(f"windows: expected [N, h >= 1, {ACTION_DIM}], got {w.shape}")
    params = cfg.kf_params(N)
    s, st = kf_filter(w.transpose(1, 0, 2).reshape(h, N * D), params)  # column n*7 + d
    forecast = kf_forecast(s, params, cfg.pl_steps).reshape(N, D)
    if cfg.gripper_hold:
        forecast[:, GRIPPER] = w[:, -1, GRIPPER]
    if h < 2:
        nan = np.full((N, D), np.nan)
        return {"forecast": forecast, "nis": nan, "kvar": np.full(N, np.nan)}
    e = np.abs(st["innovation"]) / np.sqrt(st["innovation_var"])  # [h - 1, N * 7]
    e = np.minimum(e, cfg.kvar_nis_cap)[-cfg.kvar_steps:].mean(0).reshape(N, D)
    return {"forecast": forecast, "nis": e, "kvar": e[:, list(cfg.kvar_dims)].mean(1)}


def _to_bins(state: KervState, tokens: Sequence[int], what: str) -> np.ndarray:
    t = np.asarray(tokens, np.int64)
    u = t - state.first_action_token
    if np.any((u < 0) | (u >= state.n_bins)):
        raise ValueError(f"{what}: expected action token ids in [{state.first_action_token}, "
                         f"{state.first_action_token + state.n_bins - 1}], got {t.tolist()}")
    return u


def kerv_observe(state: KervState, tokens: Sequence[int], cfg: KervConfig,
                 filled_dims: int = 0) -> tuple[KervState, dict]:
    """Record one control step's final 7 tokens; ``filled_dims`` of them came from compensation
    (``kerv_compensate``'s ``stats["filled_dims"]``; > 0 starts the cooldown)."""
    if len(tokens) != ACTION_DIM:
        raise ValueError(f"tokens: expected {ACTION_DIM} action tokens, got {len(tokens)}")
    u = _to_bins(state, tokens, "tokens").astype(float)
    hist = np.concatenate([state.history, u[None]])[-cfg.ac_steps:]
    hist.setflags(write=False)
    est = window_estimates(hist[None], cfg)
    forecast = est["forecast"][0] if len(hist) >= 2 else None
    kvar = float(est["kvar"][0]) if len(hist) >= 2 else None
    nis = est["nis"][0] if len(hist) >= 2 else None
    if filled_dims > 0:
        since, streak = 0, (state.comp_streak + 1 if state.steps_since_comp == 0 else 1)
    else:
        since, streak = min(state.steps_since_comp + 1, _NEVER), 0
    new = dataclasses.replace(state, history=hist, forecast_bins=forecast, nis=nis, kvar=kvar,
                              steps=state.steps + 1, steps_since_comp=since, comp_streak=streak)
    stats = {"history_steps": len(hist), "ready": kerv_ready(new, cfg), "kvar": kvar,
             "nis": None if nis is None else nis.tolist(),
             "forecast_bins": None if forecast is None else forecast.tolist(), "filled_dims": int(filled_dims)}
    return new, stats


def kerv_predict_tokens(state: KervState, cfg: KervConfig) -> np.ndarray:
    """The forecast action as ``int64[7]`` token ids (rounded, clipped to the action range).
    Needs at least two observed actions; check ``kerv_ready`` before relying on it."""
    if state.forecast_bins is None:
        raise ValueError(f"kerv_predict_tokens: needs >= 2 observed actions, have {len(state.history)}")
    u = np.clip(np.rint(state.forecast_bins), 0, state.n_bins - 1).astype(np.int64)
    return u + state.first_action_token


def kf_branch_tokens(state: KervState, cfg: KervConfig, start_dim: int) -> list[int]:
    """Forecast tokens for dims ``start_dim..6`` (a draft-tree branch); empty when branches are
    off, the tracker is not ready, or ``start_dim >= 7``."""
    if not cfg.branch_enabled or not kerv_ready(state, cfg) or start_dim >= ACTION_DIM:
        return []
    return kerv_predict_tokens(state, cfg)[max(start_dim, 0):].tolist()


def kerv_compensate(tokens_prefix: Sequence[int], verifier_row: Sequence[int] | None, state: KervState,
                    cfg: KervConfig) -> tuple[np.ndarray | None, dict]:
    """Complete a partially verified action with the forecast, or ``None`` (keep decoding).

    ``tokens_prefix``: the committed tokens of dims ``0..L-1``. ``verifier_row``: the verifier's
    greedy tokens from dim ``L`` on (or ``None``/empty when the prefix already ends with the
    bonus token); only its first entry, verified, is used. Returns ``(tokens int64[7] or None,
    stats)``; ``stats["compensated"]``, ``stats["filled_dims"]`` and ``stats["reason"]`` say
    what happened (``compensated``, ``complete``, ``disabled``, ``empty_prefix``, ``not_ready``,
    ``cooldown``, ``streak``, ``tail_too_long``, ``gate``)."""
    prefix = [int(t) for t in tokens_prefix]
    if verifier_row is not None and len(verifier_row) and len(prefix) < ACTION_DIM:
        prefix.append(int(verifier_row[0]))
    L = len(prefix)
    if L:
        _to_bins(state, prefix, "tokens_prefix")

    def out(tokens, reason, filled=0):
        return tokens, {"compensated": filled > 0, "filled_dims": filled, "reason": reason, "prefix_len": L}

    if L >= ACTION_DIM:
        return out(np.asarray(prefix[:ACTION_DIM], np.int64), "complete")
    if not cfg.compensate_enabled:
        return out(None, "disabled")
    if L == 0:
        return out(None, "empty_prefix")  # nothing verified: never emit a whole unverified action
    if not kerv_ready(state, cfg):
        return out(None, "not_ready")
    if state.steps_since_comp < cfg.cooldown_steps:
        return out(None, "cooldown")
    if state.comp_streak >= cfg.max_consecutive_comps:
        return out(None, "streak")
    if ACTION_DIM - L > cfg.max_fill_dims:
        return out(None, "tail_too_long")
    forecast = kerv_predict_tokens(state, cfg)
    if cfg.gate_bins >= 0 and abs(int(forecast[L - 1]) - prefix[L - 1]) > cfg.gate_bins:
        return out(None, "gate")
    return out(np.concatenate([np.asarray(prefix, np.int64), forecast[L:]]), "compensated", ACTION_DIM - L)


def threshold_from_kvar(kvar: float | None, cfg: KervConfig) -> int:
    """Linear map of K_var into ``[r_min, r_max]`` (high variability -> r_min); ``None`` -> r_min."""
    if kvar is None or not math.isfinite(kvar):
        return cfg.r_min_bins
    frac = min(max((kvar - cfg.kvar_lo) / (cfg.kvar_hi - cfg.kvar_lo), 0.0), 1.0)
    return int(math.floor(cfg.r_max_bins - (cfg.r_max_bins - cfg.r_min_bins) * frac + 0.5))


def kerv_threshold(state: KervState, cfg: KervConfig) -> tuple[tuple[int, ...], dict]:
    """Per-dim relaxed-acceptance thresholds (bins) for the next action, and statistics."""
    ready = kerv_ready(state, cfg)
    if not cfg.threshold_enabled:
        r = cfg.r_max_bins
    else:
        r = threshold_from_kvar(state.kvar if ready else None, cfg)
    r_dims = (r,) * GRIPPER + (cfg.r_gripper_bins,)
    return r_dims, {"r_bins": r, "kvar": state.kvar, "ready": ready}


class KervFileError(ValueError):
    """A KERV calibration file that cannot be used: names the file, field, expected and got."""


def read_kerv_file(path: str | Path) -> dict:
    """Read and validate a ``calib kerv`` file; returns the parsed document."""
    doc = read_versioned_json(path, KervFileError, KIND, FORMAT_VERSION,
                              missing="not found (write it with `python -m calib kerv`)")
    fail = field_error(path, KervFileError)

    def get(d, key, prefix=""):
        if not isinstance(d, dict) or key not in d:
            fail(prefix + key, "present", "missing")
        return d[key]

    kf = get(doc, "kf")
    model = get(kf, "model", "kf.")
    models = get(kf, "models", "kf.")
    if not isinstance(models, dict) or model not in models:
        fail("kf.models", f"an object with the default model {model!r}", models)
    for name, m in models.items():
        pre = f"kf.models.{name}."
        for key in ("q_bins2", "r_bins2"):
            v = get(m, key, pre)
            if not (isinstance(v, list) and len(v) == ACTION_DIM and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0 for x in v)):
                fail(pre + key, f"a list of {ACTION_DIM} positive numbers", v)
        for key in ("kvar_lo", "kvar_hi"):
            v = get(m, key, pre)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
                fail(pre + key, "a finite number", v)
        if not m["kvar_lo"] < m["kvar_hi"]:
            fail(pre + "kvar_hi", f"> kvar_lo ({m['kvar_lo']})", m["kvar_hi"])
    p0 = get(kf, "p0_bins2", "kf.")
    if not (isinstance(p0, (int, float)) and p0 > 0):
        fail("kf.p0_bins2", "a positive number", p0)
    win = get(doc, "window")
    for key in ("pl_steps", "ac_steps", "kvar_steps", "min_history_steps"):
        v = get(win, key, "window.")
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            fail("window." + key, "a positive integer", v)
    dims = get(win, "kvar_dims", "window.")
    if not (isinstance(dims, list) and dims and all(isinstance(d, int) and 0 <= d < ACTION_DIM for d in dims)):
        fail("window.kvar_dims", f"a non-empty list of dims in 0..{ACTION_DIM - 1}", dims)
    for key in ("gripper_hold",):
        if not isinstance(get(win, key, "window."), bool):
            fail("window." + key, "true or false", win[key])
    if not isinstance(get(win, "kvar_nis_cap", "window."), (int, float)) or not win["kvar_nis_cap"] > 0:
        fail("window.kvar_nis_cap", "a positive number", win["kvar_nis_cap"])
    return doc


_WINDOW_FIELDS = ("pl_steps", "ac_steps", "kvar_steps", "min_history_steps", "kvar_dims", "gripper_hold",
                  "kvar_nis_cap")


def load_kerv_config(path: str | Path, **overrides) -> KervConfig:
    """``KervConfig`` from a ``calib kerv`` file: the filter of ``kf_model`` (the file's default
    model unless overridden), its K_var bounds and the window settings they were fitted under;
    ``overrides`` set any other field (PL/AC/n, r bounds, enables). Overriding a window setting
    keeps the file's bounds, which were fitted under the file's setting (logged as a warning)."""
    doc = read_kerv_file(path)
    kf, win = doc["kf"], doc["window"]
    model = overrides.pop("kf_model", kf["model"])
    if model not in kf["models"]:
        raise KervFileError(f"{path}: field 'kf.models': expected model {model!r}, got only {sorted(kf['models'])}")
    m = kf["models"][model]
    fields = {"kf_model": model, "kf_q_bins2": tuple(float(x) for x in m["q_bins2"]),
              "kf_r_bins2": tuple(float(x) for x in m["r_bins2"]), "kf_p0_bins2": float(kf["p0_bins2"]),
              "kvar_lo": float(m["kvar_lo"]), "kvar_hi": float(m["kvar_hi"])}
    for key in _WINDOW_FIELDS:
        fields[key] = tuple(win[key]) if key == "kvar_dims" else win[key]
    changed = [k for k in _WINDOW_FIELDS if k in overrides and overrides[k] != fields[k]]
    if changed:
        log.warning("%s: overriding %s; the K_var bounds were fitted under the file's values", path, changed)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(KervConfig)}
    if unknown:
        raise ValueError(f"load_kerv_config: unknown KervConfig field(s) {sorted(unknown)}")
    fields.update(overrides)
    return KervConfig(**fields)
