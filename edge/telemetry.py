"""Runtime telemetry: per-stage percentiles, counters, histograms, a summary line, JSON lines.

``Telemetry(cfg)`` is shared by the threads (one lock, cheap calls):
- ``sample(stage, ms)``: a duration or latency sample (windowed for the summary, and kept for
  the run report up to ``RUN_CAP`` samples);
- ``count(name, n=1)``; ``tally(kind, key)`` for mixes (precision, drafting mode);
- ``step(record)``: one policy step: accepted lengths, verifier passes per action, and a JSON line
  in ``steps_jsonl``;
- ``summary_line()``: accepted-length histogram, verifier passes per action, per-stage p50/p99,
  overruns, CRC errors, clamps, precision and mode mix; ``maybe_log_summary()`` logs it every
  ``summary_period_s``; ``status_line()`` is the short live line;
- ``report()``: the run's percentiles (p50/p99/max) per stage and the counters, as a dict.
``close()`` flushes and closes the JSON-lines file.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time

import numpy as np

from edge.run_config import TelemetryConfig

log = logging.getLogger(__name__)

__all__ = ["Telemetry", "percentiles"]

RUN_CAP = 200_000


def percentiles(xs) -> dict:
    a = np.asarray(list(xs), float)
    if a.size == 0:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan"), "mean": float("nan")}
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max()), "mean": float(a.mean())}


class Telemetry:
    def __init__(self, cfg: TelemetryConfig = TelemetryConfig()):
        self.cfg = cfg
        self._lock = threading.Lock()
        self.window: dict[str, collections.deque] = {}
        self.run: dict[str, collections.deque] = {}
        self.counters: collections.Counter = collections.Counter()
        self.mix: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.accept_hist: collections.Counter = collections.Counter()
        self.passes: collections.deque = collections.deque(maxlen=RUN_CAP)
        self.t0 = time.monotonic()
        self._last_summary = self.t0
        self._rates_at = (self.t0, 0, 0)  # (t, commands, policy steps) of the status line's rate window
        self._file = None
        if cfg.steps_jsonl:
            os.makedirs(os.path.dirname(cfg.steps_jsonl) or ".", exist_ok=True)
            self._file = open(cfg.steps_jsonl, "a", buffering=1 << 16)

    def sample(self, stage: str, ms: float) -> None:
        with self._lock:
            if stage not in self.window:
                self.window[stage] = collections.deque(maxlen=self.cfg.window)
                self.run[stage] = collections.deque(maxlen=RUN_CAP)
            self.window[stage].append(ms)
            self.run[stage].append(ms)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def tally(self, kind: str, key: str) -> None:
        with self._lock:
            self.mix[kind][key] += 1

    def step(self, record: dict) -> None:
        with self._lock:
            for a in record.get("accepted", []):
                self.accept_hist[int(a)] += 1
            if "verifier_passes" in record:
                self.passes.append(record["verifier_passes"])
            self.counters["policy_steps"] += 1
            if self._file is not None:
                self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def _p(self, stage: str) -> str:
        xs = self.window.get(stage)
        if not xs:
            return f"{stage} -"
        a = np.asarray(xs)
        return f"{stage} {np.percentile(a, 50):.1f}/{np.percentile(a, 99):.1f}"

    def summary_line(self, extra: dict | None = None) -> str:
        with self._lock:
            hist = " ".join(f"{k}:{v}" for k, v in sorted(self.accept_hist.items())) or "-"
            passes = f"{np.mean(self.passes):.2f}" if self.passes else "-"
            stages = ", ".join(self._p(s) for s in sorted(self.window))
            c = self.counters
            mixes = "; ".join(f"{k} " + " ".join(f"{kk}:{vv}" for kk, vv in v.most_common()) for k, v in self.mix.items())
            line = (f"steps {c['policy_steps']} commands {c['commands']} | accepted-length hist {hist} | "
                    f"verifier passes/action {passes} | p50/p99 ms: {stages} | overruns {c['overruns']} "
                    f"crc_errors {c['crc_errors']} clamps {c['clamps']} holds {c['holds']} | {mixes or 'mix -'}")
        if extra:
            line += " | " + " ".join(f"{k} {v}" for k, v in extra.items())
        return line

    def maybe_log_summary(self, extra: dict | None = None) -> None:
        now = time.monotonic()
        if now - self._last_summary >= self.cfg.summary_period_s:
            self._last_summary = now
            log.info("summary: %s", self.summary_line(extra))

    def status_line(self) -> str:
        """Rates since the previous call (at least 1 s back), latency and acceptance so far."""
        with self._lock:
            c = self.counters
            now = time.monotonic()
            t, n_cmd, n_pol = self._rates_at
            dt = max(now - t, 1e-9)
            cmd_hz, pol_hz = (c["commands"] - n_cmd) / dt, (c["policy_steps"] - n_pol) / dt
            if dt >= 1.0:
                self._rates_at = (now, c["commands"], c["policy_steps"])
            f2w = self.window.get("frame_to_wire_ms")
            lat = f"{np.percentile(np.asarray(f2w), 50):.0f}ms" if f2w else "-"
            acc = sum(k * v for k, v in self.accept_hist.items()) / max(sum(self.accept_hist.values()), 1)
            return (f"cmd {cmd_hz:5.1f} Hz  policy {pol_hz:4.1f} Hz  "
                    f"frame->wire p50 {lat}  accepted {acc:.2f}  overruns {c['overruns']}  clamps {c['clamps']}")

    def report(self) -> dict:
        with self._lock:
            return {"stages": {k: percentiles(v) for k, v in self.run.items()},
                    "counters": dict(self.counters),
                    "accepted_length_hist": {str(k): v for k, v in sorted(self.accept_hist.items())},
                    "verifier_passes_per_action": float(np.mean(self.passes)) if self.passes else None,
                    "mix": {k: dict(v) for k, v in self.mix.items()},
                    "wall_s": time.monotonic() - self.t0}

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
