"""The CPU work of one control step that can run while the verifier runs (the overlap).

``StepWork.run(tokens, ee_pos)`` takes the previous step's action tokens and the measured tool
position and updates, in order:

1. the per-DoF Kalman filter over the action tokens (``edge.kalman``, bin units): predict,
   update, one-step forecast (the kinematic draft of the next action);
2. the threshold controller: relaxed-acceptance threshold ``k * sqrt(S)`` (S: innovation
   variance), clipped to ``threshold_bounds_bins``, per DoF;
3. the step policy for the next step: HeiSD's fused metric over the recent tool path picks the
   drafting mode (``retrieval`` when motion is fast and straight, else ``drafter``) and DyQ's
   sensitivity picks the precision level (``edge.motion_metrics``).

It returns a ``StepPlan`` (forecast tokens, thresholds, mode, precision) and its own duration.
Until the kinematic layer lands in the decoder, the plan is advisory: it is logged and counted
(mode and precision mix), and the decoder runs as configured. Everything is numpy on the CPU.
"""

from __future__ import annotations

import collections
import dataclasses
import time

import numpy as np

from edge.kalman import KFParams, kf_forecast, kf_init, kf_predict, kf_update
from edge.motion_metrics import DyQConfig, DyQState, dyq_step, fused_metric, sensitivity
from edge.run_config import InferenceConfig

__all__ = ["StepPlan", "StepWork"]


@dataclasses.dataclass(frozen=True)
class StepPlan:
    forecast_tokens: tuple[int, ...]  # KF one-step prediction of the next action's tokens
    threshold_bins: tuple[int, ...]  # threshold controller output per DoF
    mode: str  # drafting mode for the next step: drafter or retrieval
    precision: str  # DyQ precision level for the next step
    cpu_ms: float  # how long this work took


class StepWork:
    def __init__(self, cfg: InferenceConfig, dyq: DyQConfig = DyQConfig()):
        self.cfg, self.dyq = cfg, dyq
        self.kf = KFParams(cfg.kf_model, (cfg.kf_q_bins2,) * 7, (cfg.kf_r_bins2,) * 7)
        self.reset()

    def reset(self) -> None:
        self.state = None
        self.ee = collections.deque(maxlen=self.cfg.history_steps)
        self.actions = collections.deque(maxlen=self.cfg.history_steps)
        self.dyq_state = DyQState(len(self.dyq.levels) - 1)

    def run(self, tokens, action, ee_pos) -> StepPlan:
        t0 = time.perf_counter()
        z = np.asarray(tokens, float)
        if self.state is None:
            self.state = kf_init(z, self.kf)
            S = np.full(7, self.kf.p0 + self.cfg.kf_r_bins2)
        else:
            self.state, _, S = kf_update(kf_predict(self.state, self.kf), z, self.kf)
        forecast = np.rint(kf_forecast(self.state, self.kf, 1)).astype(int)
        lo, hi = self.cfg.threshold_bounds_bins
        thr = np.clip(np.rint(self.cfg.threshold_k * np.sqrt(S)), lo, hi).astype(int)
        self.ee.append(np.asarray(ee_pos, float))
        self.actions.append(np.asarray(action, float))
        mode = "drafter"
        if len(self.ee) >= 3:
            F, _ = fused_metric(np.asarray(self.ee))
            mode = "retrieval" if F > 0.5 else "drafter"
        precision = self.dyq.levels[self.dyq_state.level]
        if len(self.actions) >= 2:
            s, _ = sensitivity(np.asarray(self.actions), mu_max=0.05, nu_max=0.3)
            self.dyq_state, precision, _ = dyq_step(self.dyq_state, s, self.dyq)
        return StepPlan(tuple(forecast.tolist()), tuple(thr.tolist()), mode, precision,
                        (time.perf_counter() - t0) * 1e3)
