"""``python -m vla.train drafter``: Spec-VLA's self-distillation. Runs the verifier (from ``--out``) greedily
on the dataset, trains the drafter on its own greedy tokens (SmoothL1 on features + 0.1 CE), reports the
accepted length of 6-token chains on held-out episodes at r = 0, 3, 5, 9, and adds drafter.pt and the
metrics to the manifest. ``--init DRAFTER.pt`` starts from an earlier drafter (one distilled for the
verifier this one was fine-tuned from), with a fresh optimizer.

``--features-cache FILE`` keeps the verifier's greedy labels and teacher-forced features of the training
rows (the slow part: about 17 minutes for 60,000 rows on 2 cores) in FILE, so a sweep of drafter
settings computes them once. The cache is keyed by the verifier's sha256, the dataset's hash and the row
selection (seed, held-out split, subset size); a cache built for anything else is refused with the
mismatching field named, never used. Results are identical with and without it.
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
from edge.files import sha256_file
from vla.artifact import (load_codec, load_manifest, load_state, load_tokenizer, load_verifier, save_state,
                          write_manifest)
from vla.data import Samples, load_samples
from vla.drafter import DraftBatch, Drafter, distill_loss, drafter_config, drafter_inputs, widen_state
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


class FeatureCacheError(ValueError):
    """A --features-cache file built for another verifier, dataset or row selection."""


def training_targets(verifier: Verifier, train: Samples, key: dict, cache: str = "") -> tuple[torch.Tensor, DraftBatch]:
    """The verifier's greedy tokens on ``train`` (self-distillation targets) and its teacher-forced
    features over them (the verifier is frozen: computed once, not every step); from ``cache`` when it
    holds them for exactly ``key``, else computed and, with ``cache`` set, written there."""
    path = Path(cache) if cache else None
    if path is not None and path.exists():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        got = blob.get("key", {})
        for field, want in key.items():
            if got.get(field) != want:
                raise FeatureCacheError(f"{path}: features cache built for {field}={got.get(field)!r}, this run "
                                        f"needs {want!r}; delete it or pass another --features-cache")
        log.info("verifier labels and features from %s", path)
        return blob["actions"], DraftBatch(**blob["feats"])
    actions = greedy_labels(verifier, train)
    feats = DraftBatch.cat([drafter_inputs(verifier, train.images[i:i + 256], train.prompt[i:i + 256],
                                           actions[i:i + 256])
                            for i in tqdm(range(0, len(train), 256), desc="verifier features", dynamic_ncols=True)])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"key": key, "actions": actions, "feats": {f: getattr(feats, f) for f in
                    ("feat", "next_emb", "positions", "key_valid", "T")}}, tmp)
        tmp.replace(path)
        log.info("verifier labels and features cached in %s", path)
    return actions, feats


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
    key = {"verifier_sha256": sha256_file(out / "verifier.pt"), "data_sha256": samples.data_sha256,
           "seed": args.seed, "holdout_every": args.holdout_every, "max_train_samples": args.max_train_samples,
           "rows": len(train)}
    train.actions, feats = training_targets(verifier, train, key, args.features_cache)
    ffn = args.drafter_ffn or man.get("drafter", {}).get("ffn_dim") or cfg.ffn_dim
    drafter = Drafter(drafter_config(cfg, ffn))
    if args.init:  # re-distil an earlier drafter for a fine-tuned verifier instead of starting from scratch
        state = load_state(args.init)
        if state["layer.down.weight"].shape[1] != ffn:  # grown to the asked inner size, same function
            state = widen_state(state, ffn, torch.Generator().manual_seed(args.seed))
        drafter.load_state_dict(state)
        log.info("drafter initialised from %s (inner size %d)", args.init, ffn)
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
    write_manifest(out, cfg, ActionStats.from_json(man["codec"]["action"]),
                   {"training": training, "drafter": {"ffn_dim": ffn}})
    print(json.dumps(metrics, indent=1))
    return 0
