"""calib dyq: scales from percentiles, ladder bounds by budget, the file edge reads, bad files refused."""
import json

import numpy as np
import pytest

from calib.dyq import fit_dyq, write_dyq
from calib.__main__ import main as calib_main
from edge.dyq_file import DyQFileError, read_dyq_file
from edge.kinematic import KinematicConfig, apply_dyq_file, precisions_needed


def episode(T, rng):
    """Coarse travel (2 cm steps), then a slow fine approach and a grasp (gripper 1 -> 0)."""
    a = np.zeros((T, 7))
    a[:, 6] = 1.0
    half = T // 2
    a[:half, 0] = 0.02 + 0.001 * rng.standard_normal(half)
    a[half:, 2] = -0.002
    a[half:, 5] = 0.01 * rng.standard_normal(T - half)  # yaw corrections near the block
    a[T - 4:, 6] = 0.0
    return a


def make_dataset(root, n=20, T=30):
    rng = np.random.default_rng(0)
    (root / "data").mkdir(parents=True)
    (root / "meta").mkdir()
    lines = []
    for i in range(n):
        np.savez(root / "data" / f"episode_{i:06d}.npz", action=episode(T, rng))
        lines.append(json.dumps({"index": i, "success": True}))
    (root / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_fit_scales_bounds_and_fine_phases(tmp_path):
    data = make_dataset(tmp_path / "d")
    doc = fit_dyq(data, ("int8", "fp32"), shares=(0.5, 0.5))
    s = doc["sensitivity"]
    assert 0.018 < s["mu_max_m"] < 0.023  # the 95th percentile sits in the coarse 2 cm steps
    assert s["nu_max_rad"] > 0
    (b,) = doc["ladder"]["bounds"]
    assert 0 < b < doc["report"]["S_percentiles"]["95"]
    rep = doc["report"]["heldout"]
    assert rep["steps"] > 0 and rep["fine_steps"] > 0
    # the slow approach and the grasp run at the top precision, the coarse travel mostly lower
    assert rep["share_fine"]["fp32"] > rep["share"]["fp32"]
    assert rep["share_fine"]["fp32"] > 0.9


def test_file_round_trip_and_runtime_config(tmp_path):
    data = make_dataset(tmp_path / "d")
    out = tmp_path / "dyq.json"
    assert calib_main(["dyq", "--data", str(data), "--out", str(out), "--levels", "int4,int8,fp32",
                       "--bounds", "0.2,0.5"]) == 0
    cal = read_dyq_file(out)
    assert cal.levels == ("int4", "int8", "fp32") and cal.bounds == (0.2, 0.5)
    cfg = apply_dyq_file(KinematicConfig(use_dyq=True, dyq_file=str(out)))
    assert cfg.dyq_levels == ("int4", "int8", "fp32") and cfg.dyq_mu_max_m == pytest.approx(cal.mu_max_m)
    assert precisions_needed(cfg) == ["int4", "int8", "fp32"]
    # without use_dyq the file is not read at all
    assert apply_dyq_file(KinematicConfig(dyq_file=str(tmp_path / "missing.json"))).dyq_levels == ("int8", "fp32")


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(kind="kerv"), "field 'kind': expected 'dyq'"),
    (lambda d: d["ladder"].update(bounds=[0.5, 0.2]), "field 'ladder.bounds'"),
    (lambda d: d["ladder"].update(levels=["fp32"]), "field 'ladder.levels'"),
    (lambda d: d["sensitivity"].update(mu_max_m=0), "field 'sensitivity.mu_max_m': expected > 0"),
    (lambda d: d["sensitivity"].pop("w_macro"), "field 'sensitivity.w_macro': expected present"),
])
def test_bad_file_refused(tmp_path, edit, message):
    data = make_dataset(tmp_path / "d")
    doc = fit_dyq(data, ("int4", "int8", "fp32"), bounds=(0.2, 0.5))
    edit(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DyQFileError, match=message):
        read_dyq_file(path)
    with pytest.raises(DyQFileError, match="bad.json"):
        apply_dyq_file(KinematicConfig(use_dyq=True, dyq_file=str(path)))


def test_shares_that_do_not_separate_are_refused(tmp_path):
    data = make_dataset(tmp_path / "d")
    with pytest.raises(ValueError, match="shares: expected 2"):
        fit_dyq(data, ("int8", "fp32"), shares=(1.0,))
