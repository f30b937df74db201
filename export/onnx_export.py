"""Export a contract graph to ONNX and check it against its PyTorch module.

``export_graph`` traces a wrapper of ``export.graphs`` with ``edge.io_contract``'s names and
dynamic axes, checks the model with ``onnx.checker`` and stores weights as external data when
the graph is larger than ``external_data_min_mb`` (a 7B verifier does not fit a 2 GB protobuf).

``check_feeds`` builds the fixed check set from the PyTorch model itself (seeded images, real
prompts when a tokenizer is given, the model's own KV caches and features) so the verify and
draft graphs are checked on realistic caches, not noise. ``compare`` runs an ONNX Runtime session
on it and returns max |logit difference| and argmax agreement per position.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from edge.io_contract import GraphSpec

log = logging.getLogger(__name__)

__all__ = ["export_graph", "check_feeds", "compare", "ExportError"]


class ExportError(RuntimeError):
    """An export that failed, naming the graph and the problem."""


def export_graph(module: torch.nn.Module, spec: GraphSpec, example: tuple, path: Path, opset: int = 17,
                 external_data_min_mb: float = 512.0) -> Path:
    import onnx

    path = Path(path)
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, example, str(path), input_names=spec.input_names,
                              output_names=spec.output_names, dynamic_axes=spec.dynamic_axes(),
                              opset_version=opset, dynamo=False, do_constant_folding=True)
        except Exception as exc:  # the exporter raises many types (unsupported operator, tracing)
            raise ExportError(f"{spec.name}: torch.onnx.export failed: {exc}") from exc
    size_mb = path.stat().st_size / 2**20
    if size_mb > external_data_min_mb:
        model = onnx.load(str(path))
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    onnx.checker.check_model(str(path))
    return path


def _chain_mask(k: int) -> torch.Tensor:
    return torch.tril(torch.ones(k, k, dtype=torch.bool))[None]


@torch.no_grad()
def check_feeds(verifier, drafter=None, prompts: list[list[int]] | None = None, n: int = 6, seed: int = 1234):
    """Fixed check set: ``{graph: [tuple of torch inputs, ...]}`` in contract order."""
    from export.graphs import PrefillGraph

    cfg = verifier.cfg
    g = torch.Generator().manual_seed(seed)
    pre = PrefillGraph(verifier).eval()
    sets = {"prefill": [], "verify": [], "draft": []}
    for i in range(n):
        images = torch.randint(0, 256, (1, cfg.n_views, cfg.image_size_px, cfg.image_size_px, 3), generator=g,
                               dtype=torch.uint8)
        if prompts:
            prompt = torch.tensor([prompts[i % len(prompts)]])
        else:
            prompt = torch.randint(4, cfg.n_text, (1, 8 + i % 5), generator=g)
        k = (0, 3, 7)[i % 3]
        drafts = torch.randint(cfg.n_text, cfg.vocab_size, (1, k), generator=g)
        sets["prefill"].append((images, prompt, drafts, _chain_mask(k), torch.arange(k)[None]))
        logits, hidden, embeds, kv = pre(images, prompt, drafts[:, :0], _chain_mask(0), torch.zeros(1, 0, dtype=torch.long))
        T = kv.shape[0]
        first = logits[:, -1].argmax(-1, keepdim=True)
        toks = torch.cat([first, torch.randint(cfg.n_text, cfg.vocab_size, (1, 6), generator=g)], dim=1)
        if i % 2:  # a small tree: root, two children, a grandchild under the first child
            tree = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]], dtype=torch.bool)[None]
            sets["verify"].append((toks[:, :4], T + torch.tensor([[0, 1, 1, 2]]), tree, kv))
        else:
            sets["verify"].append((toks, T + torch.arange(7)[None], _chain_mask(7), kv))
        if drafter is not None:
            nxt = torch.cat([embeds[:, 1:], verifier.embed(first)], dim=1)
            empty = torch.zeros(0, 2, cfg.n_heads, cfg.head_dim)
            sets["draft"].append((hidden, nxt, torch.arange(T)[None], _chain_mask(T), empty))
    return sets


def compare(module: torch.nn.Module, session, spec: GraphSpec, feeds: list[tuple]) -> dict:
    """Max |logit difference| and argmax agreement (overall and per position) on ``feeds``."""
    max_diff, agree, total = 0.0, 0, 0
    per_pos: dict[int, list[int]] = {}
    for inputs in feeds:
        with torch.no_grad():
            ref = module(*inputs)[0].numpy()
        out = session.run(["logits"], {n: t.numpy() for n, t in zip(spec.input_names, inputs)})[0]
        if out.shape != ref.shape:
            raise ExportError(f"{spec.name}: logits shape {out.shape} != PyTorch {ref.shape}")
        if out.size:
            max_diff = max(max_diff, float(np.abs(out - ref).max()))
        same = out.argmax(-1)[0] == ref.argmax(-1)[0]
        for p, s in enumerate(same):
            per_pos.setdefault(p, [0, 0])
            per_pos[p][0] += int(s)
            per_pos[p][1] += 1
        agree += int(same.sum())
        total += same.size
    return {"max_abs_logit_diff": max_diff, "argmax_agreement": agree / max(total, 1),
            "agreement_per_position": [a / n for _, (a, n) in sorted(per_pos.items())], "positions": total}
