"""calib stats: fitting q01/q99 from a small dataset in the documented format, and errors."""

import json

import numpy as np
import pytest

from calib.__main__ import main
from calib.dataset import DatasetError, iter_episodes
from edge.codec import ActionStats


def make_dataset(root, n=3, T=20, fail=(1,)):
    (root / "meta").mkdir(parents=True)
    (root / "data").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        a = rng.normal(scale=0.01, size=(T, 7)).astype(np.float32)
        a[:, 6] = (np.arange(T) < T // 2).astype(np.float32)
        if i in fail:
            a[:, :6] += 100.0  # a failed episode must not move the statistics
        np.savez(root / "data" / f"episode_{i:06d}.npz", action=a)
        lines.append(json.dumps({"index": i, "success": i not in fail}))
    (root / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")


def test_stats_command_writes_loadable_file(tmp_path, capsys):
    make_dataset(tmp_path / "ds")
    out = tmp_path / "stats.json"
    assert main(["stats", "--data", str(tmp_path / "ds"), "--out", str(out)]) == 0
    s = ActionStats.load(out)
    assert s.num_samples == 40 and s.mask[-1] is False
    assert max(s.q99[:6]) < 1.0  # failed episode excluded
    assert "2 episodes / 40 steps" in capsys.readouterr().out


def test_missing_dataset_and_arrays(tmp_path, capsys):
    assert main(["stats", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "s.json")]) == 2
    assert "episodes.jsonl: not found" in capsys.readouterr().err
    make_dataset(tmp_path / "ds", fail=())
    (tmp_path / "ds" / "data" / "episode_000002.npz").unlink()
    with pytest.raises(DatasetError, match="episode_000002.npz: listed in meta/episodes.jsonl but missing"):
        list(iter_episodes(tmp_path / "ds"))
    with pytest.raises(DatasetError, match="missing array 'image'"):
        list(iter_episodes(tmp_path / "ds", ("image",)))
