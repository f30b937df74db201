"""``python -m bench`` end to end on a tiny engine set: every method runs on the same seeds from
the runtime's own policy, with its calibration files written by ``calib``; the table, the Jetson
projection and the plots come out of one command."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def calib_files(tiny_engine_set, tmp_path_factory):
    from calib.__main__ import main as calib_main
    from sim.collect import main as collect

    root = tmp_path_factory.mktemp("bench_calib")
    assert collect(["--suite", "goal", "--episodes", "4", "--out", str(root / "ds")]) == 0
    assert calib_main(["kerv", "--data", str(root / "ds"), "--out", str(root / "kerv.json"),
                       "--engines", str(tiny_engine_set), "--holdout-every", "2"]) == 0
    assert calib_main(["retrieval", "--data", str(root / "ds"), "--out", str(root / "retrieval"),
                       "--engines", str(tiny_engine_set), "--holdout-every", "2"]) == 0
    return root / "kerv.json", next((root / "retrieval").glob("*.json"))


def test_bench_quick_every_method(tiny_engine_set, calib_files, tmp_path):
    from bench.__main__ import main

    kerv, retrieval = calib_files
    out = tmp_path / "bench"
    assert main(["--quick", "--suite", "goal", "--methods", "ar,tree-r0,specvla,kerv,heisd,full",
                 "--engines", str(tiny_engine_set), "--kerv", str(kerv), "--retrieval", str(retrieval),
                 "--dyq-levels", "fp32", "--dyq-bounds", "", "--threads", "1", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    s = res["summary"]
    assert s["ar"]["verifier_passes_per_action"] == 7.0  # prefill + 6 decode passes, every action
    assert s["tree-r0"]["verifier_passes_per_action"] <= 7.0
    eps = {m: [r for r in res["episodes"] if r["method"] == m] for m in res["methods"]}
    assert [(r["task"], r["seed"]) for r in eps["ar"]] == [(r["task"], r["seed"]) for r in eps["full"]]
    assert {st["mode"] for r in eps["full"] for st in r["steps"]} <= {"skip", "onepass", "drafter", "ar"}
    assert "paired_success_vs_ar" in s["full"] and s["full"]["rss_mb"] > 0
    table = (out / "table.md").read_text()
    assert all(f"| {m} |" in table for m in res["methods"])
    assert "actions/s" in (out / "jetson.md").read_text()
    for png in ("pareto.png", "accepted_hist.png", "timeline.png"):
        assert (out / png).stat().st_size > 1000


def test_unknown_method_and_missing_file_are_refused(tiny_engine_set, tmp_path):
    from bench.methods import MethodFiles, method_config
    from edge.policy import PolicyConfig

    with pytest.raises(ValueError, match="expected ar, specvla"):
        method_config("kerf", PolicyConfig(), MethodFiles())
    with pytest.raises(ValueError, match="python -m calib kerv"):
        method_config("kerv", PolicyConfig(), MethodFiles(kerv=str(tmp_path / "none.json")))
