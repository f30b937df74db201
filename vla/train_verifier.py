"""``python -m vla.train verifier``: fit the codec statistics and the tokenizer from the dataset, then train
the verifier by teacher-forced cross-entropy on the 7 action tokens of every step (random-shift
augmentation, optional row weights, Gaussian bin targets, the auxiliary stage-target loss and a weight
average); writes verifier.pt, tokenizer.json and manifest.json into ``--out``, a checkpoint every
``--ckpt-every`` steps (``--resume`` continues from it).
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time

import torch
from tqdm import tqdm

from edge.codec import ActionCodec
from edge.tokenizer import StateSpec, Tokenizer
from vla.artifact import load_state, save_state, write_manifest
from vla.data import Samples, augment_shift, dataset_instructions, load_samples
from vla.losses import action_loss, grounding_head, label_sigmas, stage_target_loss, stem_grounding_loss
from vla.model import Verifier
from vla.rows import before_first_switch, near_switch, sample_weights, split
from vla.train_grounding import first_step_block_error_cm
from vla.train_common import ema_update, load_vision_init, optimizer_step, start_run, widen_inputs

log = logging.getLogger(__name__)


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


def train_verifier(args) -> int:
    out, cfg, stats, stats_report = start_run(args)
    tok = Tokenizer.build(dataset_instructions(args.data), cfg.n_text,
                          StateSpec(vocab_size=cfg.vocab_size, n_bins=cfg.n_bins) if args.state_tokens else None)
    codec = ActionCodec(stats, cfg.vocab_size, cfg.n_bins)
    samples = load_samples(args.data, tok, codec, cfg.n_views, stage_targets=args.aux_weight > 0 or args.ground_weight > 0)
    train, held = split(samples, args.holdout_every)
    log.info("samples: %d train, %d held-out (every %d-th episode)", len(train), len(held), args.holdout_every)
    model = Verifier(cfg)
    if args.init:  # continue from saved weights (e.g. a committed fp16 verifier.pt) with a fresh optimizer
        model.load_state_dict(widen_inputs(load_state(args.init), model.state_dict()))
        log.info("verifier initialised from %s", args.init)
    ground_head = grounding_head(cfg.n_visual, cfg.d_model)  # training only, as aux_head
    if args.init_vision:
        head_state = load_vision_init(model, args.init_vision)
        if head_state:
            ground_head.load_state_dict(head_state)
        log.info("vision stem and word embeddings from %s%s", args.init_vision, " (and its grounding head)" * bool(head_state))
    use_ground = args.ground_weight > 0
    visual = {}  # the last forward's visual tokens, for the stem grounding loss
    if use_ground:
        model.vision.register_forward_hook(lambda _m, _i, out: visual.__setitem__("tokens", out))
        pick_ok = before_first_switch(train.episode, train.actions[:, -1])
    aux_head = torch.nn.Linear(cfg.d_model, 4)  # training only: never part of verifier.pt
    kp_head = torch.nn.Linear(2 * model.vision.view_embed.shape[-1], 4)  # the same from the front view's keypoints
    use_kp = args.aux_weight > 0 and cfg.keypoints
    params = list(model.parameters()) + (list(aux_head.parameters()) if args.aux_weight > 0 else []) \
        + (list(kp_head.parameters()) if use_kp else []) + (list(ground_head.parameters()) if use_ground else [])
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
        if "ground" in state:
            ground_head.load_state_dict(state["ground"])
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
        if use_ground:  # the stem keeps saying where the named block is (a short path, as in pretraining)
            g_loss, _ = stem_grounding_loss(ground_head, visual["tokens"], train.aux[idx], pick_ok[idx])
            loss = loss + args.ground_weight * g_loss
        optimizer_step(opt, loss, model.parameters(), step, args, clip=1.0)
        if ema is not None:
            ema_update(ema, model, args.ema)
        step += 1
        bar.update(1)
        last_loss = loss.item()
        bar.set_postfix(loss=f"{last_loss:.3f}")
        if step % args.ckpt_every == 0 or step == args.steps:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "aux": aux_head.state_dict(),
                        "aux_kp": kp_head.state_dict(), "ground": ground_head.state_dict(),
                        **({"ema": ema} if ema is not None else {})}, ckpt)
        if args.eval_every and step % args.eval_every == 0 and len(held):
            bar.write(f"step {step}: held-out token accuracy {token_accuracy(model, held)['token_acc']:.3f}"
                      + (f", first-step block error {first_step_block_error_cm(model, ground_head, held):.1f} cm"
                         if use_ground else ""))
    bar.close()
    if ema is not None:  # the artifact holds the averaged weights; the checkpoint keeps the last ones
        model.load_state_dict(ema)
    metrics = {"final_loss": last_loss, "train_seconds": round(time.monotonic() - t0, 1), "steps": step,
               "train_samples": len(train), "heldout_samples": len(held)}
    if len(held):
        metrics.update({f"heldout_{k}": v for k, v in token_accuracy(model, held).items()})
    if use_ground and len(held):  # the last step's head on the saved weights' stem: a guide, not a guarantee
        metrics["heldout_first_step_block_error_cm_median"] = first_step_block_error_cm(model, ground_head, held)
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
