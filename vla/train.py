"""``python -m vla.train verifier|drafter --data DIR --out DIR``: train the reference models.

verifier  fits the codec statistics (calib) and the tokenizer from the dataset, then trains the
          verifier by teacher-forced cross-entropy on the 7 action tokens of every step of the
          successful episodes (random-shift augmentation); writes verifier.pt, tokenizer.json and
          manifest.json into --out.
grounding pretrains the verifier's vision stem (with FiLM) and word embeddings alone on where the
          instruction's block and its destination are (``sim.tasks.stage_targets``), on the rows before
          an episode's first grasp (the block has not moved), several times faster a step than the whole model;
          writes grounding.pt (``vision.*`` and ``embed.weight``) for ``verifier --init-vision``.
drafter   self-distillation as Spec-VLA: runs the verifier (from --out) greedily on the dataset,
          trains the drafter on its own greedy tokens (SmoothL1 on features + 0.1 CE), reports
          the accepted length of 6-token chains on held-out episodes at r = 0, 3, 5, 9, and adds
          drafter.pt and the metrics to the manifest.

Episodes are split into train and held-out by episode index (every k-th episode held out), with
fixed seeds; a checkpoint is written every --ckpt-every steps and --resume continues from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from calib.stats import fit_action_stats
from edge.codec import ActionCodec
from vla.artifact import load_manifest, load_state, load_verifier, save_state, write_manifest, load_tokenizer, load_codec
from vla.data import Samples, augment_shift, dataset_instructions, load_samples
from vla.drafter import DraftBatch, Drafter, distill_loss, drafter_inputs
from vla.eval_draft import chain_accept_lengths
from vla.model import VLAConfig, Verifier
from edge.tokenizer import StateSpec, Tokenizer

log = logging.getLogger(__name__)


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def split(samples: Samples, holdout_every: int) -> tuple[Samples, Samples]:
    held = samples.episode % holdout_every == 0
    return samples.subset(torch.nonzero(~held).squeeze(1)), samples.subset(torch.nonzero(held).squeeze(1))


def random_subset(s: Samples, n: int, seed: int) -> Samples:
    """At most ``n`` rows of ``s`` drawn without replacement (seeded), kept in their original order."""
    if n <= 0 or len(s) <= n:
        return s
    pick = torch.randperm(len(s), generator=torch.Generator().manual_seed(seed))
    return s.subset(pick[:n].sort().values)


def steps_in_episode(episode: torch.Tensor) -> torch.Tensor:
    """Index of each row within its episode (rows of an episode are contiguous, in time order)."""
    n = episode.shape[0]
    start = torch.ones(n, dtype=torch.bool)
    start[1:] = episode[1:] != episode[:-1]
    first = torch.cummax(torch.where(start, torch.arange(n), torch.zeros(n, dtype=torch.long)), 0).values
    return torch.arange(n) - first


def near_switch(episode: torch.Tensor, gripper: torch.Tensor, steps: int) -> torch.Tensor:
    """Rows within ``steps`` rows (before or after) of a row whose ``gripper`` token differs from the
    previous row's in the same episode; a boolean mask (all False for ``steps <= 0``)."""
    n = episode.shape[0]
    mask = torch.zeros(n, dtype=torch.bool)
    if steps <= 0:
        return mask
    switch = torch.zeros(n, dtype=torch.bool)
    switch[1:] = (episode[1:] == episode[:-1]) & (gripper[1:] != gripper[:-1])
    at = torch.nonzero(switch).flatten()
    for off in range(-steps, steps + 1):
        j = at + off
        ok = (j >= 0) & (j < n)
        j, src = j[ok], at[ok]
        mask[j[episode[j] == episode[src]]] = True
    return mask


def sample_weights(episode: torch.Tensor, early_steps: int, early_weight: float,
                   switch: torch.Tensor | None = None, switch_weight: float = 1.0) -> torch.Tensor:
    """Sampling weight per row: ``early_weight`` for the first ``early_steps`` steps of each
    episode, ``switch_weight`` on the rows of the mask ``switch`` (rows near a gripper switch,
    ``near_switch``), the larger where both apply, 1 elsewhere.

    The first frames (arm at home) are the only ones where the target's position in the image is
    the sole cue for the direction of motion; they are about 2% of the rows, and a policy that gets
    them wrong starts every episode heading the wrong way. The frames around a gripper switch are
    about as rare (a few per grasp or release) and a policy that misses them never closes."""
    w = torch.ones(episode.shape[0])
    if early_steps > 0:
        w[steps_in_episode(episode) < early_steps] = float(early_weight)
    if switch is not None:
        w[switch] = torch.maximum(w[switch], torch.tensor(float(switch_weight)))
    return w


def gaussian_bin_targets(tokens: torch.Tensor, vocab_size: int, n_bins: int, sigma_bins) -> torch.Tensor:
    """Soft targets ``[..., A, vocab_size]`` for action tokens ``[..., A]``: a Gaussian over the action-bin
    ids centred on each target (standard deviation ``sigma_bins``, a number or one per action dimension
    ``[A]``; truncated to the bin range and renormalised), zero on text ids. A dimension whose sigma is
    ``<= 0`` gets a one-hot target.

    With 256 bins over a 4 cm range a bin is 0.14 mm, so one-hot cross-entropy scores a prediction one bin
    off exactly as badly as one 100 bins off; the Gaussian tells the model which errors are small (the
    "histogram loss" of Imani & White, 2018). Decoding is unchanged: still the argmax token."""
    ids = torch.arange(vocab_size, dtype=torch.float32)
    sigma = torch.as_tensor(sigma_bins, dtype=torch.float32).expand(tokens.shape)
    d = ids - tokens[..., None].to(torch.float32)
    w = torch.where(sigma[..., None] > 0, torch.exp(-0.5 * (d / sigma.clamp_min(1e-6)[..., None]) ** 2),
                    (d == 0).to(torch.float32))
    w = w * (ids >= vocab_size - n_bins)
    return w / w.sum(-1, keepdim=True)


def label_sigmas(stats, sigma_bins: float) -> torch.Tensor:
    """Per-dimension Gaussian width: ``sigma_bins`` for the continuous dimensions (normalised by the codec
    and not constant in the data), 0 (one-hot) for categorical ones (the gripper) and constant ones
    (an arm that never rolls): their tokens are exact classes, and speculative decoding checks the
    gripper token exactly."""
    d = stats.to_json()
    cont = [bool(m) and hi > lo for m, lo, hi in zip(d["mask"], d["q01"], d["q99"])]
    return torch.tensor([sigma_bins if c else 0.0 for c in cont])


def action_loss(logits: torch.Tensor, tokens: torch.Tensor, n_bins: int, sigma_bins,
                label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of ``logits [B, A, V]`` against ``tokens [B, A]``: against Gaussian bin targets
    when any ``sigma_bins`` (a number or ``[A]``) is positive, else plain cross-entropy with optional
    label smoothing."""
    V = logits.shape[-1]
    if not bool((torch.as_tensor(sigma_bins) > 0).any()):
        return F.cross_entropy(logits.reshape(-1, V), tokens.reshape(-1), label_smoothing=label_smoothing)
    target = gaussian_bin_targets(tokens, V, n_bins, sigma_bins)
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()


AUX_CENTRE_M = torch.tensor([0.5, 0.0, 0.5, 0.0])  # the table's block area (sim.tasks X_RANGE_M, Y_RANGE_M)
AUX_SCALE_M = torch.tensor([0.12, 0.22, 0.12, 0.22])


def stage_target_loss(pred: torch.Tensor, target_m: torch.Tensor) -> torch.Tensor:
    """SmoothL1 between ``pred [B, 4]`` and the stage targets ``[B, 4]`` (m; ``sim.tasks.stage_targets``)
    normalised to about [-1, 1]; rows with NaN labels are left out (0 when there are none).

    The auxiliary task: from the position that predicts the first action token, say where the block
    the instruction names is and where it goes. Cloned actions say this only through the direction of
    a 2 cm step, one of 256 bins, which 2 cores of training did not learn well enough to pick the right
    block (most closed-loop failures)."""
    ok = torch.isfinite(target_m).all(-1)
    if not bool(ok.any()):
        return pred.sum() * 0.0
    t = (target_m[ok] - AUX_CENTRE_M) / AUX_SCALE_M
    return F.smooth_l1_loss(pred[ok], t, beta=0.1)


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
    (coordinates added) gets zeros there, and parameters ``state`` lacks (keypoints added) keep the fresh
    model's values, zero-initialised by design, so the grown model computes what the old one did."""
    out = dict(state)
    for k in target.keys() - state.keys():
        out[k] = target[k]
        log.info("%s: not in the initial weights, starts as built", k)
    for k, w in state.items():
        t = target.get(k)
        if t is not None and w.dim() == 4 and t.shape[0] == w.shape[0] and t.shape[1] > w.shape[1] \
                and t.shape[2:] == w.shape[2:]:
            pad = torch.zeros(t.shape[0], t.shape[1] - w.shape[1], *t.shape[2:], dtype=w.dtype)
            out[k] = torch.cat([w, pad], dim=1)
            log.info("%s: %d input channels widened to %d (zeros)", k, w.shape[1], t.shape[1])
    return out


def token_accuracy(model: Verifier, s: Samples, batch: int = 256) -> dict:
    model.eval()
    correct, total, bin_err = torch.zeros(7), 0, torch.zeros(7)
    for i in range(0, len(s), batch):
        logits, _ = model.teacher_forced(s.images[i:i + batch], s.prompt[i:i + batch], s.actions[i:i + batch])
        pred = logits.argmax(-1)
        tgt = s.actions[i:i + batch]
        correct += (pred == tgt).float().sum(0)
        bin_err += (pred - tgt).abs().float().sum(0)
        total += tgt.shape[0]
    model.train()
    return {"token_acc": (correct / total).mean().item(), "token_acc_per_dim": (correct / total).tolist(),
            "mean_bin_error_per_dim": (bin_err / total).tolist()}


def _start(args) -> tuple[Path, VLAConfig, object, dict]:
    """Seed, output directory, model config and codec statistics of a verifier or grounding run."""
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = VLAConfig(**json.loads(args.model_json)) if args.model_json else VLAConfig()
    return (out, cfg, *fit_action_stats(args.data))


def train_verifier(args) -> int:
    out, cfg, stats, stats_report = _start(args)
    tok = Tokenizer.build(dataset_instructions(args.data), cfg.n_text,
                          StateSpec(vocab_size=cfg.vocab_size, n_bins=cfg.n_bins) if args.state_tokens else None)
    codec = ActionCodec(stats, cfg.vocab_size, cfg.n_bins)
    samples = load_samples(args.data, tok, codec, cfg.n_views, stage_targets=args.aux_weight > 0)
    train, held = split(samples, args.holdout_every)
    log.info("samples: %d train, %d held-out (every %d-th episode)", len(train), len(held), args.holdout_every)
    model = Verifier(cfg)
    if args.init:  # continue from saved weights (e.g. a committed fp16 verifier.pt) with a fresh optimizer
        model.load_state_dict(widen_inputs(load_state(args.init), model.state_dict()))
        log.info("verifier initialised from %s", args.init)
    if args.init_vision:
        load_vision_init(model, args.init_vision)
        log.info("vision stem and word embeddings from %s", args.init_vision)
    aux_head = torch.nn.Linear(cfg.d_model, 4)  # training only: never part of verifier.pt
    kp_head = torch.nn.Linear(2 * model.vision.view_embed.shape[-1], 4)  # the same from the front view's keypoints
    use_kp = args.aux_weight > 0 and cfg.keypoints
    params = list(model.parameters()) + (list(aux_head.parameters()) if args.aux_weight > 0 else []) \
        + (list(kp_head.parameters()) if use_kp else [])
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    step, ckpt, ema = 0, out / "ckpt_verifier.pt", None
    if args.resume and ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"]); opt.load_state_dict(state["opt"]); step = state["step"]
        ema = state.get("ema")
        if "aux" in state:
            aux_head.load_state_dict(state["aux"])
        if "aux_kp" in state:
            kp_head.load_state_dict(state["aux_kp"])
    if args.ema:  # the checkpoint's average, else one starting from the weights training starts from
        ema = ema or {k: v.detach().clone() for k, v in model.state_dict().items()}
    else:
        ema = None
    gen = torch.Generator().manual_seed(args.seed + step)
    switch = near_switch(train.episode, train.actions[:, -1], args.switch_steps)
    weights = sample_weights(train.episode, args.early_steps, args.early_weight, switch, args.switch_weight)
    if args.switch_steps > 0:
        log.info("rows near a gripper switch: %d of %d", int(switch.sum()), len(train))
    sigmas = label_sigmas(stats, args.label_sigma_bins)
    model.train()
    t0 = time.monotonic()
    bar = tqdm(total=args.steps, initial=step, desc="verifier", dynamic_ncols=True)
    last_loss = None  # stays None when a resumed run is already at --steps (it only evaluates and saves)
    while step < args.steps:
        idx = (torch.multinomial(weights, args.batch, replacement=True, generator=gen)
               if args.early_steps > 0 or args.switch_steps > 0
               else torch.randint(0, len(train), (args.batch,), generator=gen))  # the v1 artifact's stream
        imgs = augment_shift(train.images[idx], args.shift_px, gen)
        logits, hidden = model.teacher_forced(imgs, train.prompt[idx], train.actions[idx])
        loss = action_loss(logits, train.actions[idx], cfg.n_bins, sigmas, args.label_smoothing)
        if args.aux_weight > 0:
            aux = stage_target_loss(aux_head(hidden[:, -cfg.action_dim - 1]), train.aux[idx])
            if use_kp:  # a short path: the instruction-modulated stem's keypoints say where the block is
                aux = aux + stage_target_loss(kp_head(model.vision.keypoints[:, 0]), train.aux[idx])
            loss = loss + args.aux_weight * aux
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if ema is not None:
            ema_update(ema, model, args.ema)
        step += 1
        bar.update(1)
        last_loss = loss.item()
        bar.set_postfix(loss=f"{last_loss:.3f}")
        if step % args.ckpt_every == 0 or step == args.steps:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "aux": aux_head.state_dict(),
                        "aux_kp": kp_head.state_dict(),
                        **({"ema": ema} if ema is not None else {})}, ckpt)
        if args.eval_every and step % args.eval_every == 0 and len(held):
            bar.write(f"step {step}: held-out token accuracy {token_accuracy(model, held)['token_acc']:.3f}")
    bar.close()
    if ema is not None:  # the artifact holds the averaged weights; the checkpoint keeps the last ones
        model.load_state_dict(ema)
    metrics = {"final_loss": last_loss, "train_seconds": round(time.monotonic() - t0, 1), "steps": step,
               "train_samples": len(train), "heldout_samples": len(held)}
    if len(held):
        metrics.update({f"heldout_{k}": v for k, v in token_accuracy(model, held).items()})
    save_state(model, out / "verifier.pt")
    tok.save(out / "tokenizer.json")
    write_manifest(out, cfg, stats, {
        "data": {"path": str(args.data), "sha256": samples.data_sha256, **stats_report},
        "instructions": dataset_instructions(args.data),
        "training": {"verifier": {"command": "python -m vla.train " + shlex.join(sys.argv[1:]),
                                  "args": vars(args), "metrics": metrics}},
    })
    print(json.dumps(metrics, indent=1))
    return 0


def before_first_switch(episode: torch.Tensor, gripper: torch.Tensor) -> torch.Tensor:
    """Rows before the first change of the ``gripper`` token within their episode (rows of an episode are
    contiguous, in time order): the block an episode picks first has not moved yet."""
    switch = torch.zeros(episode.shape[0], dtype=torch.long)
    switch[1:] = ((episode[1:] == episode[:-1]) & (gripper[1:] != gripper[:-1])).long()
    seen = switch.cumsum(0)
    at_start = torch.arange(episode.shape[0]) - steps_in_episode(episode)
    return seen - seen[at_start] == 0


def grounding_loss(model: Verifier, head: torch.nn.Module, s: Samples, idx: torch.Tensor,
                   pick_ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, predicted stage targets [B, 4] in m)``: SmoothL1 on the destination for every row and on
    the block for the rows of ``pick_ok``, from the FiLM-modulated visual tokens alone."""
    pred = head(model.vision(s.images[idx], model.instruction_embedding(s.prompt[idx])).flatten(1))
    target = (s.aux[idx] - AUX_CENTRE_M) / AUX_SCALE_M
    err = F.smooth_l1_loss(pred, target, beta=0.1, reduction="none")
    w = torch.ones_like(err)
    w[:, :2] = pick_ok[idx, None].to(err.dtype)
    err = torch.where(w > 0, err, torch.zeros_like(err))  # a masked label may be NaN
    return (err * w).sum() / w.sum(), pred.detach() * AUX_SCALE_M + AUX_CENTRE_M


def train_grounding(args) -> int:
    out, cfg, stats, _ = _start(args)
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
    head = torch.nn.Sequential(torch.nn.Linear(cfg.n_visual * cfg.d_model, 256), torch.nn.GELU(), torch.nn.Linear(256, 4))
    params = list(model.vision.parameters()) + list(model.embed.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(args.seed)

    def held_error_cm() -> float:
        if len(held_idx) == 0:
            return float("nan")
        with torch.no_grad():
            _, pred = grounding_loss(model, head, s, held_idx, pick_ok)
        return float((pred[:, :2] - s.aux[held_idx][:, :2]).norm(dim=-1).median() * 100)

    t0 = time.monotonic()
    bar = tqdm(range(args.steps), desc="grounding", dynamic_ncols=True)
    for step in bar:
        idx = train_idx[torch.randint(0, len(train_idx), (args.batch,), generator=gen)]
        loss, _ = grounding_loss(model, head, s, idx, pick_ok)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if args.eval_every and (step + 1) % args.eval_every == 0:
            bar.write(f"step {step + 1}: held-out first-step block error, median {held_error_cm():.1f} cm")
    keep = {k: v for k, v in model.state_dict().items() if k.startswith(("vision.", "embed."))}
    tmp = out / "grounding.tmp"
    torch.save({k: v.detach().clone() for k, v in keep.items()}, tmp)
    tmp.replace(out / "grounding.pt")
    metrics = {"steps": args.steps, "train_seconds": round(time.monotonic() - t0, 1), "train_rows": len(train_idx),
               "heldout_first_steps": len(held_idx), "heldout_first_step_block_error_cm_median": held_error_cm()}
    print(json.dumps(metrics, indent=1))
    return 0


def load_vision_init(model: Verifier, path) -> None:
    """Overwrite ``model``'s vision stem and word embeddings with a ``grounding.pt``; a key the model
    lacks or a shape that differs is an error naming it (the configs must match)."""
    state, own = load_state(path), model.state_dict()
    for k, v in state.items():
        if k not in own or own[k].shape != v.shape:
            raise ValueError(f"{path}: {k}: expected {tuple(own[k].shape) if k in own else 'no such parameter'} "
                             f"(model {model.cfg}), got {tuple(v.shape)}")
    model.load_state_dict({**own, **state})


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
    opt = torch.optim.AdamW(drafter.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.monotonic()
    bar = tqdm(range(args.steps), desc="drafter", dynamic_ncols=True)
    for step in bar:
        idx = torch.randint(0, len(train), (args.batch,), generator=gen)
        b = feats[idx]
        noise = 0.2 * 512 / b.feat.shape[1] * args.noise_scale
        loss, st = distill_loss(drafter, verifier, b, noise=noise)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(drafter.parameters(), 0.5)
        opt.step()
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
    from edge.codec import ActionStats

    write_manifest(out, cfg, ActionStats.from_json(man["codec"]["action"]), {"training": training})
    print(json.dumps(metrics, indent=1))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vla.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", choices=["verifier", "drafter", "grounding"])
    p.add_argument("--data", required=True, help="dataset directory from `python -m sim.collect`")
    p.add_argument("--out", required=True, help="artifact directory (drafter: must hold a trained verifier)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (verifier 12000, drafter 4000)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (verifier 1e-3, drafter 1e-3)")
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--holdout-every", type=int, default=10, help="every k-th episode is held out")
    p.add_argument("--shift-px", type=int, default=3, help="random-shift augmentation (verifier)")
    p.add_argument("--early-steps", type=int, default=0,
                   help="verifier: the first K steps of each episode are sampled --early-weight times as often")
    p.add_argument("--early-weight", type=float, default=1.0)
    p.add_argument("--switch-steps", type=int, default=0,
                   help="verifier: rows within K steps of a gripper switch are sampled --switch-weight times as often")
    p.add_argument("--switch-weight", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--label-sigma-bins", type=float, default=0.0,
                   help="verifier: Gaussian targets over neighbouring action bins with this standard deviation for "
                        "the continuous dimensions (0 = one-hot cross-entropy; the gripper is always one-hot)")
    p.add_argument("--noise-scale", type=float, default=0.1, help="x Spec-VLA's feature noise (drafter)")
    p.add_argument("--eval-every", type=int, default=2000)
    p.add_argument("--eval-samples", type=int, default=2000, help="held-out samples for accept-length (drafter)")
    p.add_argument("--max-train-samples", type=int, default=0,
                   help="drafter: distil on a random subset of this many training samples (0 = all)")
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.add_argument("--resume", action="store_true", help="continue from --out/ckpt_verifier.pt (weights, optimizer, step)")
    p.add_argument("--init", default="", help="verifier: start from these weights (a verifier.pt), fresh optimizer")
    p.add_argument("--init-vision", default="",
                   help="verifier: then take the vision stem and word embeddings from a grounding.pt (`vla.train grounding`)")
    p.add_argument("--ema", type=float, default=0.0,
                   help="verifier: save an exponential moving average of the weights with this decay "
                        "(e.g. 0.999; 0 = the last step's weights)")
    p.add_argument("--state-tokens", action="store_true",
                   help="verifier: write the arm state (tool point, finger opening) into the prompt as bin tokens "
                        "(edge.tokenizer.StateSpec; saved in tokenizer.json, so policies pass their observation)")
    p.add_argument("--aux-weight", type=float, default=0.0,
                   help="verifier: weight of an auxiliary loss predicting the stage's block and place positions "
                        "(sim.tasks.stage_targets) from the first action position, and with keypoints also from the "
                        "front view's keypoints (0 = off)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model-json", default="", help="VLAConfig overrides as JSON (verifier)")
    args = p.parse_args(argv)
    if args.label_sigma_bins < 0:
        p.error(f"--label-sigma-bins: expected >= 0, got {args.label_sigma_bins}")
    if args.label_sigma_bins > 0 and args.label_smoothing > 0:  # action_loss would drop the smoothing
        p.error("--label-smoothing and --label-sigma-bins: expected one of them, got both "
                f"({args.label_smoothing}, {args.label_sigma_bins})")
    if args.aux_weight < 0:
        p.error(f"--aux-weight: expected >= 0, got {args.aux_weight}")
    if not 0.0 <= args.ema < 1.0:
        p.error(f"--ema: expected a decay in [0, 1), got {args.ema}")
    for name in ("early_steps", "switch_steps"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')}: expected >= 0, got {getattr(args, name)}")
    for name in ("early_weight", "switch_weight"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')}: expected > 0, got {getattr(args, name)}")
    if args.steps is None:
        args.steps = {"verifier": 12000, "drafter": 4000, "grounding": 3000}[args.which]
    if args.lr is None:
        args.lr = 1e-3
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    return {"verifier": train_verifier, "drafter": train_drafter, "grounding": train_grounding}[args.which](args)


if __name__ == "__main__":
    sys.exit(main())
