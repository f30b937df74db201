"""Load an engine set (``engines.json`` from ``python -m export.build_engines``) into ``Models``.

``load_models(root, precision="fp32", providers=("CPUExecutionProvider",), with_drafter=True)``
verifies the manifest and file hashes, opens the prefill/verify graphs of the requested
precision and the fp32 drafter as ``OrtEngine``s, loads the token embedding table, and sizes the
KV caches from the manifest's ``runtime`` block. A precision that was not built is an error
listing the ones that were.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edge.decoding import Models
from edge.engine import OrtEngine
from edge.engine_cache import EngineSetError, read_engine_set

__all__ = ["load_models", "available_precisions"]


def available_precisions(man: dict, graph: str = "verify") -> list[str]:
    return [f["precision"] for f in man["files"] if f["graph"] == graph and f["kind"] == "onnx"]


def _file(man: dict, root: Path, graph: str, precision: str) -> Path:
    for f in man["files"]:
        if f["graph"] == graph and f["precision"] == precision and f["kind"] == "onnx":
            return root / f["file"]
    raise EngineSetError(f"{root}: no {graph} graph at precision {precision!r}; built: {available_precisions(man, graph)}")


def load_models(root: str | Path, precision: str = "fp32", providers: Sequence = ("CPUExecutionProvider",),
                with_drafter: bool = True, threads: int | None = None) -> tuple[Models, dict]:
    root = Path(root)
    man = read_engine_set(root)
    rt = man["runtime"]
    prefill = OrtEngine(_file(man, root, "prefill", precision), providers, threads, name=f"prefill.{precision}")
    verify = OrtEngine(_file(man, root, "verify", precision), providers, threads, name=f"verify.{precision}")
    draft = None
    if with_drafter:
        draft = OrtEngine(_file(man, root, "draft", "fp32"), providers, threads, name="draft")
    emb = np.load(root / "token_embeddings.npy") if with_drafter else None
    models = Models(prefill, verify, draft, emb, tuple(rt["kv_row_shape"]), tuple(rt["draft_kv_row_shape"]),
                    max_len=rt["max_seq"] + 64)
    return models, man
