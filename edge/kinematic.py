"""The kinematic layer at run time: KERV, HeiSD, DyQ-VLA and one-pass verification around the
decoders of ``edge.decoding``, planned per step by ``edge.step_policy.plan_step``.

Contract. ``KinematicLayer(cfg, first_action_token, n_bins, kerv=..., retrieval=..., store=...)``
holds one episode's kinematic state; ``reset()`` starts an episode. ``decode(models, images,
prompt_ids, obs) -> (tokens, DecodeStats, info)`` decodes one action: ``models`` maps a precision
name to its ``Models`` (DyQ-VLA picks one per step; without DyQ only ``cfg.precision`` is used),
``obs`` is the observation dict (``instruction`` and the image views, for the retrieval key).
``info`` holds the step's plan (mode, precision, threshold, candidate sources), ``whole`` (the
source of a candidate accepted as the whole action: "kf" or "retrieval") and the signals behind
it, for telemetry and the benchmark's timeline plot. The step's final tokens update the state (Kalman history, cooldown, skips in a row, the commanded path) in ``flush()``: the runtime
calls it after the action is published, in the policy period's slack, so the Kalman update is off
the frame-to-command path; ``decode`` flushes a pending update first, so the result never
depends on whether or when ``flush`` was called.

Per step, in order (all CPU work, a few hundred microseconds):
1. signals: KERV's readiness and dynamic threshold (``kerv_threshold``; the fixed relaxed
   ``threshold_bins`` without KERV), the retrieval drafts of the observation's image key and
   whether verify-skip would be safe (``verify_skip``), HeiSD's fused metric over the last ``w``
   positions of the *commanded* tool path (the integrated action deltas: available on any robot
   without forward kinematics), and DyQ-VLA's precision (``sensitivity`` over recent actions,
   then ``dyq_step`` with its hysteresis);
2. ``plan_step`` picks skip / onepass / drafter / ar;
3. the decoder runs with, as the plan says, whole-action candidates in the prefill (the Kalman
   forecast and the top retrieved actions, as one tree), KERV's compensation of a rejected tail
   and its forecast as a draft-tree branch;
4. the final tokens update the state.

HeiSD's fused metric, with its calibrated boundary (``RetrievalConfig.fused_threshold``), decides
the retrieval regime, in which verify-skip may run. Retrieved candidates ride in the prefill in
every regime: there they cost no extra verifier pass (HeiSD verified them in a pass of their
own, so its switch had to choose between them and the drafter; here the drafter continues
whatever the candidates leave).

Candidates and acceptance (``candidate_rule``). By default retrieved candidates are checked with
HeiSD's group rule (groups xyz / rpy / gripper), a Kalman forecast alone with the step's token
rule (KERV's per-dim threshold); when both ride in one prefill the group rule applies to the
tree. ``step.candidate_rule: token`` checks every candidate per token instead, at
``step.candidate_threshold_bins`` (0: exact) or the step's threshold. ``decoder: tails`` checks
the candidates' continuations with the same candidate rule. The drafter's trees, the Kalman
branch hung in them included, always use the step's token rule.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal, Mapping

import numpy as np

from edge.acceptance import AcceptRule
from edge.decoding import ACTION_DIM, DecodeStats, Models, SpecConfig, decode_ar, decode_speculative
from edge.kerv import (KervConfig, kerv_compensate, kerv_init, kerv_observe, kerv_predict_tokens, kerv_ready,
                       kerv_threshold, kf_branch_tokens)
from edge.motion_metrics import DyQConfig, DyQState, dyq_step, fused_metric, sensitivity
from edge.retrieval import (RetrievalConfig, RetrievalStore, drafts_to_tree, recombine_groups, retrieval_drafts,
                            verify_skip)
from edge.step_policy import StepPolicyConfig, StepSignals, plan_step

__all__ = ["KinematicConfig", "KinematicLayer", "build_layer", "precisions_needed", "apply_dyq_file", "candidate_rule"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class KinematicConfig:
    """What the layer may use; the calibrated parts come from files (``edge.run_config``)."""

    kerv_file: str = ""  # `python -m calib kerv` output (needed by use_kerv)
    dyq_file: str = ""  # `python -m calib dyq` output: with use_dyq, its values replace the dyq_* fields below
    retrieval_file: str = ""  # `python -m calib retrieval` calibration JSON (needed by use_retrieval)
    precision: str = "fp32"  # verifier precision without DyQ
    threshold_bins: int = 5  # fixed relaxed r when KERV's dynamic threshold is not used
    exact_gripper: bool = True
    draft: Literal["chain", "tree"] = "tree"  # drafter proposals
    chain_len: int = 6
    top_k: int = 4
    depth: int = 6
    total_tokens: int = 24
    use_kerv: bool = False  # compensation + Kalman branches + dynamic threshold (as the KERV file enables)
    use_retrieval: bool = False  # HeiSD retrieval candidates, verify-skip and the fused switch
    use_dyq: bool = False  # DyQ-VLA precision per step
    dyq_mu_max_m: float = 0.02  # translation per step at which motion counts as coarse (M = 0)
    dyq_nu_max_rad: float = 0.1  # rotation change per step normalising the angular jerk
    dyq_w_macro: int = 10
    dyq_w_micro: int = 5
    dyq_lambda: float = 0.5
    dyq_levels: tuple[str, ...] = ("int8", "fp32")  # precisions, lowest first (each must be built)
    dyq_bounds: tuple[float, ...] = (0.5,)  # S thresholds between consecutive levels
    dyq_downgrade_delay: int = 3  # steps wanting a lower precision before it is taken
    # how the enabled parts are used per step; the same defaults whether or not YAML gives a partial `step:` block
    # (the use_* flags gate: KF candidates need use_kerv, retrieval candidates and verify-skip use_retrieval)
    step: StepPolicyConfig = StepPolicyConfig()

    def __post_init__(self):
        if self.threshold_bins < 0:
            raise ValueError(f"KinematicConfig.threshold_bins: expected >= 0, got {self.threshold_bins}")
        if self.dyq_mu_max_m <= 0 or self.dyq_nu_max_rad <= 0:
            raise ValueError("KinematicConfig.dyq_mu_max_m / dyq_nu_max_rad: expected > 0, got "
                             f"{self.dyq_mu_max_m}, {self.dyq_nu_max_rad}")


class KinematicLayer:
    def __init__(self, cfg: KinematicConfig, first_action_token: int, n_bins: int,
                 kerv: KervConfig | None = None, retrieval: RetrievalConfig | None = None,
                 store: RetrievalStore | None = None, dyq: DyQConfig | None = None,
                 action_decode=None):
        if cfg.use_kerv and kerv is None:
            raise ValueError("KinematicLayer: use_kerv needs a KervConfig (python -m calib kerv)")
        if cfg.use_retrieval and (retrieval is None or store is None):
            raise ValueError("KinematicLayer: use_retrieval needs a RetrievalConfig and its store (python -m calib retrieval)")
        if cfg.use_dyq and dyq is None:
            raise ValueError("KinematicLayer: use_dyq needs a DyQConfig (precision levels and bounds)")
        if action_decode is None:
            raise ValueError("KinematicLayer: action_decode (tokens -> action, the codec's) is required")
        self.cfg, self.kerv, self.retrieval, self.store, self.dyq = cfg, kerv, retrieval, store, dyq
        self.first_action_token, self.n_bins = int(first_action_token), int(n_bins)
        self.action_decode = action_decode
        self.reset()

    def reset(self) -> None:
        self.kstate = kerv_init(self.first_action_token, self.n_bins)
        self.pos = [np.zeros(3)]  # commanded tool path, integrated from the actions
        self.actions: list[np.ndarray] = []
        self.skips_in_row = 0
        self.dyq_state = DyQState(len(self.dyq.levels) - 1) if self.dyq is not None else None
        self.step_index = 0
        self._pending: tuple | None = None

    # ------------------------------------------------------------------ signals

    def _threshold(self) -> tuple[tuple[int, ...], dict]:
        if self.cfg.use_kerv:
            return kerv_threshold(self.kstate, self.kerv)
        r = self.cfg.threshold_bins
        return (r,) * (ACTION_DIM - 1) + (0 if self.cfg.exact_gripper else r,), {"r_bins": r}

    def _precision(self) -> tuple[str, dict]:
        if not self.cfg.use_dyq or len(self.actions) < 2:
            return (self.cfg.precision if self.dyq is None else self.dyq.levels[self.dyq_state.level]), {}
        c = self.cfg
        S, st = sensitivity(np.asarray(self.actions), c.dyq_mu_max_m, c.dyq_nu_max_rad, c.dyq_w_macro,
                            c.dyq_w_micro, c.dyq_lambda)
        self.dyq_state, precision, st2 = dyq_step(self.dyq_state, S, self.dyq)
        return precision, {**st, **st2}

    def _retrieval(self, obs: Mapping) -> dict | None:
        if (not self.cfg.use_retrieval or not self.retrieval.enabled
                or obs.get("instruction") not in self.store.instructions):
            return None
        key = self.store.key_of(obs)
        drafts, sims, st = retrieval_drafts(self.store, obs["instruction"], key, self.retrieval.top_k,
                                            self.retrieval.search_pool)
        if self.retrieval.recombine_groups:
            drafts = recombine_groups(drafts, self.retrieval.max_tree_rows)
        confident = verify_skip(st["best_similarity"], self.retrieval, st["neighbours"], self.skips_in_row)
        return {"drafts": drafts, "sims": sims, "confident": confident, "best_similarity": st["best_similarity"],
                "search_ms": st["search_ms"]}

    def _fused(self) -> float | None:
        if not self.cfg.use_retrieval:
            return None
        w = self.retrieval.fused_window_steps
        if len(self.pos) < w:
            return None
        F, _ = fused_metric(np.asarray(self.pos[-w:]), self.retrieval.fused_bounds(), self.retrieval.fused_alpha)
        return F

    # ------------------------------------------------------------------ one step

    def decode(self, models: Mapping[str, Models], images: np.ndarray, prompt_ids,
               obs: Mapping) -> tuple[list[int], DecodeStats, dict]:
        self.flush()
        thr, thr_st = self._threshold()
        precision, dyq_st = self._precision()
        ret = self._retrieval(obs)
        kf_ready = self.cfg.use_kerv and kerv_ready(self.kstate, self.kerv)
        sig = StepSignals(kf_ready=kf_ready, retrieval_ready=ret is not None,
                          retrieval_confident=bool(ret and ret["confident"]), fused=self._fused(),
                          skips_in_row=self.skips_in_row, precision=precision, threshold_bins=int(thr[0]))
        step_cfg = self.cfg.step
        if self.cfg.use_retrieval:  # HeiSD's calibrated boundary of the retrieval regime
            step_cfg = dataclasses.replace(step_cfg, fused_min=self.retrieval.fused_threshold)
        plan, plan_st = plan_step(sig, step_cfg)
        m = models.get(plan.precision)
        if m is None:
            raise KeyError(f"precision {plan.precision!r} planned but not loaded; loaded: {sorted(models)}")
        info = {"step": self.step_index, "mode": plan.mode, "precision": plan.precision, "threshold_bins": thr[0],
                "candidates": list(plan.candidates), "fused": sig.fused, "kvar": thr_st.get("kvar"),
                "retrieval_similarity": None if ret is None else ret["best_similarity"], **plan_st,
                **({"dyq_S": dyq_st["S"]} if "S" in dyq_st else {})}
        filled = [0]
        if plan.mode == "skip":
            tokens, st = [int(t) for t in ret["drafts"][0]], DecodeStats()
        elif plan.mode == "ar":
            tokens, st = decode_ar(m, images, prompt_ids)
        else:
            rule = AcceptRule(threshold_bins=tuple(int(x) for x in thr), exact_gripper=self.cfg.exact_gripper)
            rows, cand_rule = [], candidate_rule(rule, self.cfg.step, self.retrieval, "retrieval" in plan.candidates)
            sources = []
            if "kf" in plan.candidates:
                rows.append(kerv_predict_tokens(self.kstate, self.kerv))
                sources.append("kf")
            if "retrieval" in plan.candidates:
                rows.extend(ret["drafts"][: self.cfg.step.retrieval_candidates])
                sources += ["retrieval"] * (len(rows) - len(sources))
            tree = drafts_to_tree(np.asarray(rows, np.int64)) if rows else None
            compensate, branch = self._kerv_hooks(filled) if self.cfg.use_kerv else (None, None)
            c = self.cfg
            spec = SpecConfig(c.draft, c.chain_len, c.top_k, c.depth, c.total_tokens, rule)
            tails = None
            if c.step.decoder == "tails":  # the candidates' continuations from the committed prefix

                def tails(done, rows=rows, branch=branch):
                    out = [branch(done)] if branch is not None else []
                    return out + [[int(t) for t in r[len(done):]] for r in rows]

            tokens, st = decode_speculative(m, images, prompt_ids, spec, candidates=tree, candidate_rule=cand_rule,
                                            compensate=compensate, branch=branch,
                                            use_drafter=plan.mode in ("drafter", "onepass") and m.draft is not None
                                            and c.step.decoder == "drafter", tails=tails)
            if rows and st.prefill_accepted >= ACTION_DIM:  # which candidate became the action, whole
                info["whole"] = next((src for src, row in zip(sources, rows)
                                      if [int(t) for t in row[:ACTION_DIM]] == tokens[:ACTION_DIM]), None)
        self._pending = (tokens, filled[0], plan.mode == "skip")
        return tokens, st, info

    def flush(self) -> None:
        """Observe the last decoded step (no-op when already done)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._observe(*pending)

    def _kerv_hooks(self, filled: list[int]):
        """KERV's decoder hooks: fill a rejected tail (recording the filled dims in ``filled[0]``
        for the cooldown) and the Kalman forecast as a draft-tree branch."""

        lo, hi = self.first_action_token, self.first_action_token + self.n_bins - 1

        def compensate(tokens):
            if any(not lo <= t <= hi for t in tokens):  # a non-action token: leave it to the verifier
                return None
            full, cst = kerv_compensate(tokens, None, self.kstate, self.kerv)
            filled[0] = cst["filled_dims"]
            return None if full is None or not cst["compensated"] else [int(t) for t in full]

        def branch(tokens):
            return kf_branch_tokens(self.kstate, self.kerv, len(tokens))

        return compensate, branch

    def _observe(self, tokens: list[int], filled_dims: int, skipped: bool) -> None:
        if self.cfg.use_kerv:  # what the arm executes: non-action tokens clipped into the action range
            executed = np.clip(np.asarray(tokens, np.int64), self.first_action_token,
                               self.first_action_token + self.n_bins - 1)
            self.kstate, _ = kerv_observe(self.kstate, executed, self.kerv, filled_dims=filled_dims)
        action = np.asarray(self.action_decode(np.clip(np.asarray(tokens, np.int64), self.first_action_token,
                                                       self.first_action_token + self.n_bins - 1)), float)
        self.actions.append(action)
        self.actions = self.actions[-max(self.cfg.dyq_w_macro, self.cfg.dyq_w_micro + 1):]
        self.pos.append(self.pos[-1] + action[:3])
        self.pos = self.pos[-64:]
        self.skips_in_row = self.skips_in_row + 1 if skipped else 0
        self.step_index += 1


def candidate_rule(step_rule: AcceptRule, step: StepPolicyConfig, retrieval: RetrievalConfig | None,
                   retrieved: bool) -> AcceptRule:
    """The rule that checks the prefill's whole-action candidates: HeiSD's group rule when a
    retrieved row rides and ``step.candidate_rule`` is "group"; otherwise the token rule, at
    ``step.candidate_threshold_bins`` when set (0: exact), else at the step's own thresholds."""
    if retrieved and step.candidate_rule == "group" and retrieval is not None:
        return retrieval.accept_rule()
    if step.candidate_threshold_bins is None:
        return step_rule
    return dataclasses.replace(step_rule, threshold_bins=(int(step.candidate_threshold_bins),) * ACTION_DIM)


def check_store_codec(store: RetrievalStore, codec, where: str) -> None:
    """A store whose token ids come from another codec would draft (and, under verify-skip,
    execute) wrong actions: refuse it."""
    c = store.meta.get("codec") or {}
    want = {"vocab_size": codec.vocab_size, "n_bins": codec.n_bins}
    for k, v in want.items():
        if k in c and int(c[k]) != v:
            raise ValueError(f"{where}: field 'meta.codec.{k}': expected {v} (the engines' codec), got {c[k]}; "
                             f"rebuild it with `python -m calib retrieval --engines ...`")
    mine = codec.stats.to_json()
    if "action" in c and any(c["action"].get(k) != mine[k] for k in ("q01", "q99", "mask")):
        raise ValueError(f"{where}: field 'meta.codec.action': the store was built with other action statistics "
                         f"than the engines' codec; rebuild it with `python -m calib retrieval --engines ...`")


def apply_dyq_file(cfg: KinematicConfig) -> KinematicConfig:
    """``cfg`` with its DyQ calibration applied: when ``use_dyq`` and ``dyq_file`` are set, the file's
    scales, windows, ladder and downgrade delay replace the ``dyq_*`` fields (a bad file raises
    ``DyQFileError`` naming it)."""
    if not (cfg.use_dyq and cfg.dyq_file):
        return cfg
    from edge.dyq_file import read_dyq_file

    cal = read_dyq_file(cfg.dyq_file)
    log.info("DyQ calibration %s: mu_max %.4f m, nu_max %.4f rad, ladder %s bounds %s", cfg.dyq_file,
             cal.mu_max_m, cal.nu_max_rad, list(cal.levels), list(cal.bounds))
    return dataclasses.replace(cfg, dyq_mu_max_m=cal.mu_max_m, dyq_nu_max_rad=cal.nu_max_rad,
                               dyq_w_macro=cal.w_macro, dyq_w_micro=cal.w_micro, dyq_lambda=cal.lam,
                               dyq_levels=cal.levels, dyq_bounds=cal.bounds,
                               dyq_downgrade_delay=cal.downgrade_delay)


def precisions_needed(cfg: KinematicConfig) -> list[str]:
    return list(dict.fromkeys(cfg.dyq_levels)) if cfg.use_dyq else [cfg.precision]


def build_layer(cfg: KinematicConfig, codec, kerv_overrides: Mapping | None = None) -> KinematicLayer:
    """A layer with its calibration files loaded (``codec``: the model's ``ActionCodec``)."""
    from edge.kerv import load_kerv_config
    from edge.retrieval import load_retrieval_config

    kerv = retrieval = store = dyq = None
    if cfg.use_kerv:
        if not cfg.kerv_file:
            raise ValueError("kinematic.use_kerv: needs kinematic.kerv_file (write it with `python -m calib kerv`)")
        kerv = load_kerv_config(cfg.kerv_file, **dict(kerv_overrides or {}))
    if cfg.use_retrieval:
        if not cfg.retrieval_file:
            raise ValueError("kinematic.use_retrieval: needs kinematic.retrieval_file "
                             "(write it with `python -m calib retrieval`)")
        retrieval = load_retrieval_config(cfg.retrieval_file)
        store = RetrievalStore.load(retrieval.store_path)
        check_store_codec(store, codec, retrieval.store_path)
    if cfg.use_dyq:
        dyq = DyQConfig(tuple(cfg.dyq_levels), tuple(cfg.dyq_bounds), cfg.dyq_downgrade_delay)
    return KinematicLayer(cfg, codec.first_action_token, codec.n_bins, kerv, retrieval, store, dyq,
                          action_decode=lambda t: codec.decode(np.asarray(t, np.int64)))
