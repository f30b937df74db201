"""Read recorded episodes (the on-disk format of ``sim.collect``, documented in sim/README.md).

Contract: ``DIR/meta/episodes.jsonl`` has one JSON object per episode with at least ``index``
and ``success``; ``DIR/data/episode_{index:06d}.npz`` holds per-step arrays, ``action`` ``[T, 7]``
among them. ``iter_episodes`` yields ``(meta, arrays)`` in index order and raises ``DatasetError``
naming the file for anything missing or malformed. Episodes marked ``"relabelled": true``
(``sim.collect --driver``: another policy moved the arm, the expert labelled every state) are not
demonstrations of the arm's motion: they are skipped unless asked for with ``relabelled=True``,
and then kept whether or not the episode succeeded (their labels are right either way).
numpy only: usable on the robot too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["DatasetError", "read_episode_index", "iter_episodes"]


class DatasetError(ValueError):
    """A recorded dataset that cannot be read, with the file and the problem."""


def read_episode_index(root: str | Path) -> list[dict]:
    root = Path(root)
    path = root / "meta" / "episodes.jsonl"
    if not path.is_file():
        raise DatasetError(f"{path}: not found (is {root} a dataset written by `python -m sim.collect`?)")
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{lineno}: not valid JSON: {exc}") from None
        for key in ("index", "success"):
            if key not in rec:
                raise DatasetError(f"{path}:{lineno}: missing field '{key}'")
        out.append(rec)
    if not out:
        raise DatasetError(f"{path}: no episodes")
    return out


def iter_episodes(
    root: str | Path, keys: tuple[str, ...] = ("action",), only_success: bool = True,
    relabelled: bool = False,
) -> Iterator[tuple[dict, dict[str, np.ndarray]]]:
    """Yield ``(meta, {key: array})`` for each (successful, by default) demonstration, and with
    ``relabelled=True`` also each relabelled episode, successful or not."""
    root = Path(root)
    for rec in read_episode_index(root):
        if rec.get("relabelled"):
            if not relabelled:
                continue
        elif only_success and not rec["success"]:
            continue
        path = root / "data" / f"episode_{int(rec['index']):06d}.npz"
        if not path.is_file():
            raise DatasetError(f"{path}: listed in meta/episodes.jsonl but missing")
        try:
            with np.load(path) as z:
                arrays = {}
                for k in keys:
                    if k not in z.files:
                        raise DatasetError(f"{path}: missing array '{k}' (has {sorted(z.files)})")
                    arrays[k] = z[k]
        except (OSError, ValueError) as exc:
            if isinstance(exc, DatasetError):
                raise
            raise DatasetError(f"{path}: cannot read: {exc}") from None
        yield rec, arrays
