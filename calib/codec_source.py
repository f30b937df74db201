"""Where a fitting command gets its action codec from: one set of flags for every ``calib`` fitter.

``add_codec_args(parser)`` adds ``--engines DIR`` | ``--manifest FILE`` | ``--action-stats FILE``
(mutually exclusive) and ``--vocab-size``. ``codec_from_args(args, actions)`` returns the codec
and a JSON description of its source:

- ``--engines``: the codec recorded in the engine set's ``engines.json`` (``source.codec``),
- ``--manifest``: the artifact manifest's ``codec``,
- ``--action-stats`` or, with none of the three, statistics fitted from ``actions`` (as
  ``calib stats``), with 256 bins; token ids are those of a ``--vocab-size`` vocabulary (the
  model's), or bin-only ids (vocab 256) with a warning when it is not given. Fitters that work in
  bins (KERV) are unaffected by the ids; fitters that store token ids (retrieval) need the model's.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from edge.codec import ActionCodec, ActionStats
from edge.files import read_json

__all__ = ["add_codec_args", "codec_from_args"]

log = logging.getLogger(__name__)
N_BINS = 256


def add_codec_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--engines", help="engine set directory: use the codec in its engines.json (source.codec)")
    src.add_argument("--manifest", help="artifact manifest.json: use its codec")
    src.add_argument("--action-stats", help="action statistics JSON from `python -m calib stats` (with --vocab-size)")
    p.add_argument("--vocab-size", type=int, help="model vocabulary size for --action-stats or fitted statistics")


def codec_from_args(args: argparse.Namespace, actions: list[np.ndarray], warn_ids: bool = True) -> tuple[ActionCodec, dict]:
    """The codec that turns actions into tokens, and a description of where it came from."""
    if getattr(args, "engines", None) or getattr(args, "manifest", None):
        if getattr(args, "engines", None):
            path = Path(args.engines) / "engines.json"
            doc = read_json(path, ValueError, "not found (build it with `python -m export.build_engines`)")
            c, where = doc.get("source", {}).get("codec"), f"{path}:source.codec"
        else:
            path = Path(args.manifest)
            doc = read_json(path, ValueError)
            c, where = doc.get("codec") or doc.get("source", {}).get("codec"), f"{path}:codec"
        if not isinstance(c, dict) or not {"action", "vocab_size", "n_bins"} <= set(c):
            raise ValueError(f"{where}: expected an object with action, vocab_size and n_bins, got {c!r}")
        stats, vocab, n_bins = ActionStats.from_json(c["action"], f"{where}.action"), int(c["vocab_size"]), int(c["n_bins"])
    else:
        if getattr(args, "action_stats", None):
            stats, where = ActionStats.load(args.action_stats), f"action stats {args.action_stats}"
        else:
            stats, where = ActionStats.from_actions(np.concatenate(actions)), "fitted from the data (as calib stats)"
        n_bins = N_BINS
        vocab = int(args.vocab_size) if getattr(args, "vocab_size", None) else n_bins
        if not getattr(args, "vocab_size", None) and warn_ids:
            log.warning("no --vocab-size: token ids are those of a %d-id vocabulary (bins only); "
                        "use --engines or --manifest for a model's token ids", n_bins)
    return ActionCodec(stats, vocab, n_bins), {"from": where, "vocab_size": vocab, "n_bins": n_bins,
                                               "action": stats.to_json()}
