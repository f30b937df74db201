"""The main job on a started ``Service``: episodes from each suite, or one instruction until stopped.

``run_episodes(service)``: with a world, the plan is ``episodes_per_suite`` episodes of each of
``job.suites`` (tasks in turn, seeds consecutive from ``seed_start``, as ``sim.rollout``'s
``episode_plan``). Each episode: the world lays out the scene, the arm is put back in position
mode from where it stands, the runtime follows the task's instruction until the world reports
success or the task's step budget (policy steps) is spent. A live status line (stderr, when it
is a terminal) shows the episode, the rates and the latency; the summary log line comes every
``summary_period_s``. Returns the per-episode results; ``summarize(results, report)`` gives
success per suite, control Hz, accepted length and latency percentiles.

``run_instruction(service)``: no world (a real robot): follow ``job.instruction`` until stopped
or ``duration_s``.
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["run_episodes", "run_instruction", "summarize", "format_summary"]


class _ClearLine(logging.Filter):
    """Clears the live status line before a log record is written under it."""

    def filter(self, record) -> bool:
        sys.stderr.write("\r\033[K")
        return True


class _StatusLine:
    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self._last = 0.0
        self._filter = _ClearLine()
        if self.enabled:
            for h in logging.getLogger().handlers:
                h.addFilter(self._filter)

    def show(self, text: str) -> None:
        now = time.monotonic()
        if self.enabled and now - self._last > 0.25:
            self._last = now
            sys.stderr.write("\r\033[K" + text)
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            for h in logging.getLogger().handlers:
                h.removeFilter(self._filter)


def plan_episodes(tasks: list[dict], suites, n: int, seed_start: int) -> list[dict]:
    plan = []
    for suite in suites:
        ts = [t for t in tasks if t["suite"] == suite]
        for i in range(n):
            plan.append({**ts[i % len(ts)], "seed": seed_start + i})
    return plan


def run_episodes(svc) -> list[dict]:
    cfg = svc.cfg.job
    plan = plan_episodes(svc.world.tasks(cfg.suites), cfg.suites, cfg.episodes_per_suite, cfg.seed_start)
    status = _StatusLine(svc.cfg.telemetry.status_line)
    results = []
    for k, ep in enumerate(plan):
        if svc.stopped.is_set():
            break
        info = svc.world.start_episode(ep["suite"], ep["task"], ep["seed"])
        budget = min(info["max_steps"], cfg.max_steps) if cfg.max_steps else info["max_steps"]
        svc.begin(info["instruction"])
        t0, success = time.monotonic(), False
        while not svc.stopped.is_set():
            svc.stopped.wait(0.1)
            success = bool(svc.world.status()["success"]) if not svc.stopped.is_set() else success
            steps = svc.inference.episode_steps
            n_ok = sum(r["success"] for r in results)
            status.show(f"[{k + 1}/{len(plan)}] {ep['suite']}/{ep['task']} step {steps:3d}/{budget}  "
                        f"done {n_ok}/{len(results)} ok  " + svc.tm.status_line())
            svc.tm.maybe_log_summary()
            if success or steps >= budget:
                break
        steps = svc.inference.episode_steps
        svc.end()
        res = {"suite": ep["suite"], "task": ep["task"], "seed": ep["seed"], "success": success,
               "steps": steps, "wall_s": round(time.monotonic() - t0, 2)}
        results.append(res)
        log.info("episode %d/%d %s/%s seed %d: %s in %d steps (%.1f s)", k + 1, len(plan), ep["suite"], ep["task"],
                 ep["seed"], "success" if success else "failure", res["steps"], res["wall_s"])
    status.done()
    return results


def run_instruction(svc) -> None:
    cfg = svc.cfg.job
    if not cfg.instruction:
        raise ValueError("job.instruction is empty and there is no world to give tasks (set job.instruction)")
    svc.begin(cfg.instruction)
    status = _StatusLine(svc.cfg.telemetry.status_line)
    t0 = time.monotonic()
    while not svc.stopped.wait(0.1):
        status.show(svc.tm.status_line())
        svc.tm.maybe_log_summary()
        if cfg.duration_s and time.monotonic() - t0 > cfg.duration_s:
            break
    svc.end()
    status.done()


def summarize(results: list[dict], report: dict) -> dict:
    st, c = report["stages"], report["counters"]
    per_suite = {}
    for r in results:
        s = per_suite.setdefault(r["suite"], {"episodes": 0, "successes": 0})
        s["episodes"] += 1
        s["successes"] += int(r["success"])
    for s in per_suite.values():
        s["success_rate"] = s["successes"] / s["episodes"]
    hist = {int(k): v for k, v in report["accepted_length_hist"].items()}
    rounds = sum(hist.values())
    period = st.get("command_period_ms", {})
    return {"suites": per_suite,
            "success_rate": float(np.mean([r["success"] for r in results])) if results else None,
            "control_hz": 1e3 / period["mean"] if period.get("n") else None,
            "policy_hz": c.get("policy_steps", 0) / max(sum(r["wall_s"] for r in results), 1e-9) if results else None,
            "accepted_per_round": sum(k * v for k, v in hist.items()) / rounds if rounds else None,
            "verifier_passes_per_action": report["verifier_passes_per_action"],
            "latency_ms": {k: st.get(k) for k in ("frame_to_wire_ms", "infer_ms", "command_period_ms", "cpu_work_ms",
                                                  "overlap_hidden_pct", "ik_ms", "observe_wait_ms")},
            "counters": c}


def format_summary(s: dict) -> str:
    lines = ["summary:"]
    for suite, v in s["suites"].items():
        lines.append(f"  {suite:>8}: success {100 * v['success_rate']:5.1f}% ({v['successes']}/{v['episodes']})")
    if s["success_rate"] is not None:
        lines.append(f"  {'all':>8}: success {100 * s['success_rate']:5.1f}%")

    def fmt(x, spec=".1f"):
        return "-" if x is None else format(x, spec)

    lines.append(f"  control {fmt(s['control_hz'])} Hz, policy {fmt(s['policy_hz'])} Hz, accepted drafts/round "
                 f"{fmt(s['accepted_per_round'], '.2f')}, verifier passes/action {fmt(s['verifier_passes_per_action'], '.2f')}")
    for k, v in s["latency_ms"].items():
        if v and v.get("n"):
            lines.append(f"  {k:>22}: p50 {v['p50']:7.2f}  p99 {v['p99']:7.2f}  max {v['max']:7.2f}  (n={v['n']})")
    c = s["counters"]
    lines.append(f"  overruns {c.get('overruns', 0)}, holds {c.get('holds', 0)}, clamps {c.get('clamps', 0)}, "
                 f"crc errors {c.get('crc_errors', 0)}, stale frames {c.get('stale_frames', 0)}, "
                 f"observe timeouts {c.get('observe_timeouts', 0)}")
    return "\n".join(lines)
