"""Training losses of the reference verifier (PyTorch, host only).

Contract: pure functions of tensors. ``action_loss`` is the action tokens' cross-entropy (one-hot, or
against Gaussian targets over neighbouring bins, ``gaussian_bin_targets``, with per-dimension widths from
``label_sigmas``); ``stage_target_loss`` is the auxiliary "where is the named block and where does it go"
regression on ``sim.tasks.stage_targets`` labels (metres, normalised by ``AUX_CENTRE_M``/``AUX_SCALE_M``)
from a decoder position, ``stem_grounding_loss`` the same question asked of the visual tokens alone (through
``grounding_head``), the block only on rows where it has not moved yet.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


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


def grounding_head(n_visual: int, d_model: int) -> nn.Module:
    """The small MLP that reads the stage targets (normalised) off all visual tokens, flattened."""
    return nn.Sequential(nn.Linear(n_visual * d_model, 256), nn.GELU(), nn.Linear(256, 4))


def stem_grounding_loss(head: nn.Module, tokens: torch.Tensor, target_m: torch.Tensor,
                        pick: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, predicted stage targets [B, 4] in m)`` from the visual tokens ``[B, N, D]``: SmoothL1 on the
    destination of every row and on the block of the rows of ``pick`` ``[B]`` (before the first grasp: the
    block is still where the label says); NaN labels are left out (0 when nothing is left)."""
    pred = head(tokens.flatten(1))
    w = torch.isfinite(target_m)
    w[:, :2] &= pick[:, None]
    err = F.smooth_l1_loss(pred, torch.nan_to_num((target_m - AUX_CENTRE_M) / AUX_SCALE_M), beta=0.1, reduction="none")
    err = torch.where(w, err, torch.zeros_like(err))
    return err.sum() / w.sum().clamp_min(1), pred.detach() * AUX_SCALE_M + AUX_CENTRE_M
