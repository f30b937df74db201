"""Runtime telemetry lines."""

import json

from edge.run_config import TelemetryConfig
from edge.telemetry import Telemetry


def test_summary_line_and_jsonl(tmp_path):
    tm = Telemetry(TelemetryConfig(steps_jsonl=str(tmp_path / "s.jsonl"), summary_period_s=0.0))
    for i in range(20):
        tm.sample("infer_ms", 10.0 + i)
        tm.count("commands", 10)
        tm.step({"step": i, "accepted": [3, 2] if i % 2 else [1], "verifier_passes": 3 if i % 2 else 5})
    tm.count("overruns")
    tm.tally("precision", "fp32")
    tm.tally("mode", "drafter")
    line = tm.summary_line()
    for part in ("accepted-length hist 1:10 2:10 3:10", "verifier passes/action 4.00", "infer_ms 19.5/28.8",
                 "overruns 1", "crc_errors 0", "clamps 0", "precision fp32:1", "mode drafter:1"):
        assert part in line, (part, line)
    rep = tm.report()
    assert rep["stages"]["infer_ms"]["n"] == 20 and rep["stages"]["infer_ms"]["max"] == 29.0
    tm.close()
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    assert len(lines) == 20 and json.loads(lines[3])["step"] == 3
