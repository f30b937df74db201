"""``python -m vla.train drafter``: Spec-VLA's self-distillation. Runs the verifier (from ``--out``) greedily
on the dataset, trains the drafter on its own greedy tokens (SmoothL1 on features + 0.1 CE), reports the
accepted length of 6-token chains on held-out episodes at r = 0, 3, 5, 9, and adds drafter.pt and the
metrics to the manifest. ``--init DRAFTER.pt`` starts from an earlier drafter (one distilled for the
verifier this one was fine-tuned from), with a fresh optimizer.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from edge.codec import ActionStats
from vla.artifact import (load_codec, load_manifest, load_state, load_tokenizer, load_verifier, save_state,
                          write_manifest)
from vla.data import Samples, load_samples
from vla.drafter import DraftBatch, Drafter, distill_loss, drafter_inputs
from vla.eval_draft import chain_accept_lengths
from vla.model import Verifier
from vla.rows import random_subset, split
from vla.train_common import optimizer_step

log = logging.getLogger(__name__)


@torch.no_grad()
def greedy_labels(verifier: Verifier, s: Samples, batch: int = 256) -> torch.Tensor:
    out = []
    for i in tqdm(range(0, len(s), batch), desc="verifier greedy", dynamic_ncols=True):
        out.append(verifier.greedy_actions(s.images[i:i + batch], s.prompt[i:i + batch]))
    return torch.cat(out)


def train_drafter(args) -> int:
    torch.manual_seed(args.seed)
    out = Path(args.out)
    man = load_manifest(out)
    verifier, _ = load_verifier(out)
    for p in verifier.parameters():
        p.requires_grad_(False)
    cfg = verifier.cfg
    samples = load_samples(args.data, load_tokenizer(out), load_codec(man), cfg.n_views)
    train, held = split(samples, args.holdout_every)
    train = random_subset(train, args.max_train_samples, args.seed)
    held = random_subset(held, args.eval_samples, args.seed + 1)  # across all suites, not the first one
    train.actions = greedy_labels(verifier, train)  # self-distillation targets
    held.actions = greedy_labels(verifier, held)
    # the verifier is frozen: its teacher-forced features are computed once, not every step
    feats = DraftBatch.cat([drafter_inputs(verifier, train.images[i:i + 256], train.prompt[i:i + 256],
                                           train.actions[i:i + 256])
                            for i in tqdm(range(0, len(train), 256), desc="verifier features", dynamic_ncols=True)])
    drafter = Drafter(cfg)
    if args.init:  # re-distil an earlier drafter for a fine-tuned verifier instead of starting from scratch
        drafter.load_state_dict(load_state(args.init))
        log.info("drafter initialised from %s", args.init)
    opt = torch.optim.AdamW(drafter.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.monotonic()
    bar = tqdm(range(args.steps), desc="drafter", dynamic_ncols=True)
    for step in bar:
        idx = torch.randint(0, len(train), (args.batch,), generator=gen)
        b = feats[idx]
        noise = 0.2 * 512 / b.feat.shape[1] * args.noise_scale
        loss, st = distill_loss(drafter, verifier, b, noise=noise, p_weight=args.p_weight, unroll=args.unroll,
                                p_temperature=args.p_temperature)
        optimizer_step(opt, loss, drafter.parameters(), step, args, clip=0.5)
        bar.set_postfix(loss=f"{loss.item():.3f}", top1=f"{st['top1']:.2f}")
    drafter.eval()
    metrics = {"train_seconds": round(time.monotonic() - t0, 1), "steps": args.steps, "final_top1": st["top1"]}
    for r in (0, 3, 5, 9):
        lens = chain_accept_lengths(verifier, drafter, held.images, held.prompt, r)
        metrics[f"heldout_accept_len_r{r}"] = lens.float().mean().item()
        print(f"held-out chains of 6, r={r}: accepted drafts {lens.float().mean():.2f}, "
              f"tokens per verifier pass {lens.float().mean() + 1:.2f}")
    save_state(drafter, out / "drafter.pt")
    training = man.get("training", {})
    training["drafter"] = {"command": "python -m vla.train " + shlex.join(sys.argv[1:]), "args": vars(args),
                           "metrics": metrics}
    write_manifest(out, cfg, ActionStats.from_json(man["codec"]["action"]), {"training": training})
    print(json.dumps(metrics, indent=1))
    return 0
