"""What the reference training runs share (PyTorch, host only): the learning-rate schedule, a run's start
(seed, output directory, model config, codec statistics), the weight average, and starting a model from
earlier weights (``widen_inputs`` for a grown config, ``load_vision_init`` for a pretrained vision stem).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch

from calib.stats import fit_action_stats
from edge.codec import ActionStats
from edge.files import read_json
from vla.artifact import load_state
from vla.model import VLAConfig, Verifier

log = logging.getLogger(__name__)


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params, step: int, args, clip: float) -> None:
    """One update: the scheduled learning rate (``lr_at`` from ``args.steps``, ``args.lr``, ``args.warmup``),
    gradients of ``loss`` clipped to norm ``clip`` over ``params``, then the optimizer's step."""
    for g in opt.param_groups:
        g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()


def start_run(args) -> tuple[Path, VLAConfig, object, dict]:
    """Seed, output directory, model config and codec statistics of a verifier or grounding run: fitted to
    ``args.data``, or read from ``args.action_stats`` (a manifest.json's ``codec.action`` or a calib
    action-stats file's ``action``) when given; the report (data hash, counts) is always ``args.data``'s."""
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = VLAConfig(**json.loads(args.model_json)) if args.model_json else VLAConfig()
    stats, report = fit_action_stats(args.data)
    if getattr(args, "action_stats", ""):
        stats = read_action_stats(args.action_stats)
        report = {**report, "action_stats_from": str(args.action_stats)}
    return out, cfg, stats, report


def read_action_stats(path) -> ActionStats:
    """The action statistics of an artifact manifest (``codec.action``) or a calib file (``action``); a missing
    or malformed file, or one with neither, is an error naming it."""
    doc = read_json(path, ValueError)
    data = doc["codec"].get("action") if isinstance(doc.get("codec"), dict) else doc.get("action")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a manifest with codec.action or an action-stats file with action, "
                         f"got keys {sorted(doc)}")
    return ActionStats.from_json(data, source=str(path))


@torch.no_grad()
def ema_update(ema: dict, model: torch.nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * weights`` for the floating-point entries of ``model``'s state
    (integer buffers are copied). The average of the last ~1 / (1 - decay) steps' weights is a smoother
    policy than the last step's weights."""
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            ema[k].lerp_(v, 1.0 - decay)
        else:
            ema[k].copy_(v)


@torch.no_grad()
def widen_inputs(state: dict, target: dict) -> dict:
    """``state`` fitted to ``target``, the freshly built model's state: a conv that gained input channels
    (coordinates added) or a linear layer that gained inputs (FiLM's word order) gets zeros there, and
    parameters ``state`` lacks (keypoints added) keep the fresh model's values, zero-initialised by design
    or read only through those zeros, so the grown model computes what the old one did."""
    out = dict(state)
    for k in target.keys() - state.keys():
        out[k] = target[k]
        log.info("%s: not in the initial weights, starts as built", k)
    for k, w in state.items():
        t = target.get(k)
        if t is not None and w.dim() in (2, 4) and t.dim() == w.dim() and t.shape[0] == w.shape[0] \
                and t.shape[1] > w.shape[1] and t.shape[2:] == w.shape[2:]:
            pad = torch.zeros(t.shape[0], t.shape[1] - w.shape[1], *t.shape[2:], dtype=w.dtype)
            out[k] = torch.cat([w, pad], dim=1)
            log.info("%s: %d inputs widened to %d (zeros)", k, w.shape[1], t.shape[1])
    return out


GROUND_HEAD = "ground_head."  # grounding.pt's keys of the grounding head (not part of the verifier)


def load_vision_init(model: Verifier, path) -> dict:
    """Overwrite ``model``'s vision stem, the embeddings of its words (ids below ``n_text``) and, with
    ``film_order``, its word-place gates with a ``grounding.pt``'s; the action-bin embeddings stay
    ``model``'s own (grounding never trains them, and a verifier started from trained weights keeps them).
    Returns the grounding head's state (``{}`` if the file has none). A key the model lacks or a shape that
    differs is an error naming it (the configs must match)."""
    state, own = dict(load_state(path)), model.state_dict()
    head = {k[len(GROUND_HEAD):]: state.pop(k) for k in list(state) if k.startswith(GROUND_HEAD)}
    for k, v in state.items():
        if k not in own or own[k].shape != v.shape:
            raise ValueError(f"{path}: {k}: expected {tuple(own[k].shape) if k in own else 'no such parameter'} "
                             f"(model {model.cfg}), got {tuple(v.shape)}")
    if "embed.weight" in state:
        words = state["embed.weight"][: model.cfg.n_text]
        state["embed.weight"] = torch.cat([words.to(own["embed.weight"].dtype), own["embed.weight"][model.cfg.n_text:]])
    model.load_state_dict({**own, **state})
    return head
