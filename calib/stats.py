"""Action normalisation statistics (OpenVLA q01/q99) fitted from a recorded dataset.

``fit_action_stats(root)`` returns ``(ActionStats, report)``; ``python -m calib stats`` writes
them as versioned JSON (``{"version": 1, "kind": "action_stats", "action": {...}, "source": ...}``)
which the model manifest embeds and ``edge.codec.ActionStats.load`` reads.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from calib.dataset import iter_episodes
from edge.codec import ActionStats

FORMAT_VERSION = 1


def fit_action_stats(root: str | Path) -> tuple[ActionStats, dict]:
    actions, episodes = [], 0
    digest = hashlib.sha256()
    for rec, arrays in iter_episodes(root, ("action",)):
        a = np.asarray(arrays["action"], dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != 7:
            raise ValueError(f"{root}: episode {rec['index']}: action: expected [T, 7], got {a.shape}")
        actions.append(a)
        digest.update(a.tobytes())
        episodes += 1
    if not actions:
        raise ValueError(f"{root}: no successful episodes to fit action statistics from")
    stats = ActionStats.from_actions(np.concatenate(actions))
    report = {"episodes": episodes, "steps": stats.num_samples, "actions_sha256": digest.hexdigest()}
    return stats, report


def write_action_stats(stats: ActionStats, report: dict, out: str | Path, source: str) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"version": FORMAT_VERSION, "kind": "action_stats", "source": source, **report, "action": stats.to_json()}
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(out)
    return out
