"""``python -m vla.train verifier|grounding|drafter --data DIR --out DIR``: train the reference models.

verifier  (``vla.train_verifier``) fits the codec statistics and the tokenizer from the dataset, then
          trains the verifier by teacher-forced cross-entropy on the 7 action tokens of every step;
          writes verifier.pt, tokenizer.json and manifest.json into --out.
grounding (``vla.train_grounding``) pretrains the vision stem (with FiLM) and word embeddings alone on
          where the instruction's block and its destination are; writes grounding.pt for
          ``verifier --init-vision``.
drafter   (``vla.train_drafter``) Spec-VLA's self-distillation on the verifier's greedy tokens; adds
          drafter.pt and its accepted lengths to the manifest.

Episodes are split into train and held-out by episode index (every k-th episode held out), with
fixed seeds; a checkpoint is written every --ckpt-every steps and --resume continues from it.
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch


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
    p.add_argument("--unroll", type=int, default=1,
                   help="drafter: train on its own chained features, this many passes (6 = exactly the runtime's "
                        "chain of 6; 1 = teacher features only, Spec-VLA's)")
    p.add_argument("--p-weight", type=float, default=0.1,
                   help="drafter: weight of the cross-entropy against the verifier's distribution (Spec-VLA: 0.1)")
    p.add_argument("--p-temperature", type=float, default=1.0,
                   help="drafter: temperature of the verifier's distribution in that cross-entropy (1 = Spec-VLA's; "
                        "below 1 sharpens it towards the verifier's argmax, which exact acceptance checks)")
    p.add_argument("--drafter-ffn", type=int, default=0,
                   help="drafter: SwiGLU inner size of its layer (0 = the artifact's drafter's, else the verifier's); "
                        "with --init from a narrower drafter it is widened without changing its function")
    p.add_argument("--features-cache", default="",
                   help="drafter: keep the verifier's labels and features of the training rows in this file and reuse "
                        "them when the verifier, data and row selection match (a mismatch is refused)")
    p.add_argument("--eval-every", type=int, default=2000)
    p.add_argument("--eval-samples", type=int, default=2000, help="held-out samples for accept-length (drafter)")
    p.add_argument("--max-train-samples", type=int, default=0,
                   help="drafter: distil on a random subset of this many training samples (0 = all)")
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.add_argument("--resume", action="store_true", help="continue from --out/ckpt_verifier.pt (weights, optimizer, step)")
    p.add_argument("--init", default="", help="verifier, grounding: start from these weights (a verifier.pt; grounding "
                   "takes its stem and words); drafter: from a drafter.pt "
                   "(one distilled for the verifier this one was fine-tuned from); fresh optimizer")
    p.add_argument("--action-stats", default="",
                   help="verifier, grounding: the action codec's statistics from this file (an artifact's manifest.json "
                        "or a `calib` action-stats JSON) instead of fitted to --data, so a verifier fine-tuned on other "
                        "data keeps its bins")
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
    p.add_argument("--ground-weight", type=float, default=0.0,
                   help="verifier: weight of the stem grounding loss (the block and destination read off the visual "
                        "tokens alone, as `grounding` trains it; the head starts from --init-vision's) (0 = off)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model-json", default="", help="VLAConfig overrides as JSON (verifier)")
    args = p.parse_args(argv)
    if args.label_sigma_bins < 0:
        p.error(f"--label-sigma-bins: expected >= 0, got {args.label_sigma_bins}")
    if args.label_sigma_bins > 0 and args.label_smoothing > 0:  # action_loss would drop the smoothing
        p.error("--label-smoothing and --label-sigma-bins: expected one of them, got both "
                f"({args.label_smoothing}, {args.label_sigma_bins})")
    for name in ("aux_weight", "ground_weight", "drafter_ffn"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')}: expected >= 0, got {getattr(args, name)}")
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
    if args.which == "verifier":
        from vla.train_verifier import train_verifier as run
    elif args.which == "grounding":
        from vla.train_grounding import train_grounding as run
    else:
        from vla.train_drafter import train_drafter as run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
