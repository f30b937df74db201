"""``python -m vla.train grounding``: pretrain the verifier's vision stem (with FiLM) and word embeddings alone
on where the instruction's block and its destination are (``sim.tasks.stage_targets``), on the rows before
an episode's first grasp (the block has not moved), several times faster a step than the whole model;
writes grounding.pt (``vision.*``, ``embed.weight``, ``word_pos`` with ``film_order``, and the head,
``ground_head.*``) for ``verifier --init-vision`` (and ``--ground-weight``, which keeps asking the stem
that question). With ``--init`` it starts from a trained verifier's stem and words (grown to the config,
e.g. ``film_order``).
"""

from __future__ import annotations

import json
import time

import torch
from tqdm import tqdm

from edge.codec import ActionCodec
from edge.tokenizer import Tokenizer
from vla.artifact import load_state
from vla.data import Samples, dataset_instructions, load_samples
from vla.losses import grounding_head, stem_grounding_loss
from vla.model import Verifier
from vla.rows import before_first_switch, steps_in_episode
from vla.train_common import GROUND_HEAD, optimizer_step, start_run, widen_inputs


def grounding_loss(model: Verifier, head: torch.nn.Module, s: Samples, idx: torch.Tensor,
                   pick_ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``stem_grounding_loss`` of rows ``idx`` of ``s``, from the FiLM-modulated visual tokens alone."""
    tokens = model.vision(s.images[idx], model.instruction_embedding(s.prompt[idx]))
    return stem_grounding_loss(head, tokens, s.aux[idx], pick_ok[idx])


@torch.no_grad()
def first_step_block_error_cm(model: Verifier, head: torch.nn.Module, s: Samples) -> float:
    """Median distance (cm) between the block the grounding head reads off the visual tokens and the one
    the instruction names, at each episode's first step (arm at home: the hardest case)."""
    idx = torch.nonzero((steps_in_episode(s.episode) == 0) & torch.isfinite(s.aux).all(-1)).squeeze(1)
    if len(idx) == 0:
        return float("nan")
    _, pred = grounding_loss(model, head, s, idx, torch.ones(len(s), dtype=torch.bool))
    return float((pred[:, :2] - s.aux[idx][:, :2]).norm(dim=-1).median() * 100)


def train_grounding(args) -> int:
    out, cfg, stats, _ = start_run(args)
    tok = Tokenizer.build(dataset_instructions(args.data), cfg.n_text)  # the verifier's word ids (same build)
    s = load_samples(args.data, tok, ActionCodec(stats, cfg.vocab_size, cfg.n_bins), cfg.n_views, stage_targets=True)
    known = torch.isfinite(s.aux).all(-1)
    pick_ok = before_first_switch(s.episode, s.actions[:, -1]) & known
    held = s.episode % args.holdout_every == 0
    # rows before the first grasp only (on all rows the block's label reaches about 1 row in 4)
    train_idx = torch.nonzero(pick_ok & ~held).squeeze(1)
    first = steps_in_episode(s.episode) == 0
    held_idx = torch.nonzero(first & held & known).squeeze(1)  # an episode's first step: the hardest case
    if len(train_idx) == 0:
        raise SystemExit(f"{args.data}: no rows with stage targets (expert episodes with seeds)")
    model = Verifier(cfg)
    if args.init:  # a trained verifier's stem and words (grown to ``cfg``), e.g. to teach FiLM word order
        model.load_state_dict(widen_inputs(load_state(args.init), model.state_dict()))
    head = grounding_head(cfg.n_visual, cfg.d_model)
    params = list(model.vision.parameters()) + list(model.embed.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(args.seed)
    held_first = s.subset(held_idx)  # one row per held-out episode
    t0 = time.monotonic()
    bar = tqdm(range(args.steps), desc="grounding", dynamic_ncols=True)
    for step in bar:
        idx = train_idx[torch.randint(0, len(train_idx), (args.batch,), generator=gen)]
        loss, _ = grounding_loss(model, head, s, idx, pick_ok)
        optimizer_step(opt, loss, params, step, args, clip=1.0)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if args.eval_every and (step + 1) % args.eval_every == 0:
            err = first_step_block_error_cm(model, head, held_first)
            bar.write(f"step {step + 1}: held-out first-step block error, median {err:.1f} cm")
    # word_pos (``film_order``'s gates) is saved as it was built or loaded, not trained here: its seeded random
    # values already tell word orders apart, FiLM learns to read them, and the verifier trains them on
    keep = {k: v for k, v in model.state_dict().items() if k.startswith(("vision.", "embed.")) or k == "word_pos"}
    keep.update({f"{GROUND_HEAD}{k}": v for k, v in head.state_dict().items()})  # for verifier --ground-weight
    tmp = out / "grounding.tmp"
    torch.save({k: v.detach().clone() for k, v in keep.items()}, tmp)
    tmp.replace(out / "grounding.pt")
    metrics = {"steps": args.steps, "train_seconds": round(time.monotonic() - t0, 1), "train_rows": len(train_idx),
               "heldout_first_steps": len(held_idx),
               "heldout_first_step_block_error_cm_median": first_step_block_error_cm(model, head, held_first)}
    print(json.dumps(metrics, indent=1))
    return 0
