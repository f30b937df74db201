"""Spec-VLA / EAGLE drafter: ``fc([e_{t+1}; f_t])`` into one decoder layer (METHODS.md 1.2-1.3).

Contract:
- ``f_t`` is the verifier's feature at position t (``hidden`` of ``Verifier.forward_embeds``: the
  LM head's input); ``e_{t+1}`` is the verifier's input embedding at position t+1 (BOS, visual
  token or token embedding: the drafter sees the whole multimodal prefix). The drafter predicts
  ``f_{t+1}``; ``verifier.lm_head(f_hat)`` gives the draft distribution of token t+2.
- The drafter owns only ``fc``, one ``DecoderLayer`` and a norm. The verifier's embedding table
  and LM head are reused frozen (passed in, never copied into the drafter's state dict).
- ``forward(feat, next_emb, positions, mask, past_kv)`` mirrors the verifier's primitive with a
  one-layer cache ``[2, B, H, P, Dh]``.
- ``drafter_inputs`` moves a left-padded prompt's padding to the front and masks it out, so
  training sees exactly the sequences (pairing, positions, keys) the runtime sees.
- ``drafter_config(cfg, ffn_dim)``: the drafter's layer may have its own SwiGLU inner size (the manifest's
  ``drafter.ffn_dim``; absent = the verifier's); ``widen_state`` grows a trained drafter's inner size
  without changing its function (new units' ``down`` columns start at zero), so a wider drafter starts
  from a distilled one.
- ``distill_loss`` is Spec-VLA's: SmoothL1 on features + 0.1 cross-entropy between the verifier's
  and the drafter's token distributions, on the 6 positions that draft action tokens 2..7; with
  ``unroll`` > 1 also on the drafter's own chained features (``unrolled_passes``: after 6 passes
  every position is computed as the runtime's chain computes it, for the accepted tokens).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from vla.model import DecoderLayer, RMSNorm, VLAConfig, causal_mask

__all__ = ["Drafter", "DraftBatch", "distill_loss", "drafter_config", "drafter_inputs", "unrolled_passes",
           "widen_state"]


def drafter_config(cfg: VLAConfig, ffn_dim: int | None = None) -> VLAConfig:
    """The verifier's config with the drafter's own SwiGLU inner size (``None``: the verifier's)."""
    if ffn_dim is None:
        return cfg
    if ffn_dim < 1:
        raise ValueError(f"drafter ffn_dim: expected >= 1, got {ffn_dim}")
    return dataclasses.replace(cfg, ffn_dim=int(ffn_dim))


def widen_state(state: dict, ffn_dim: int, generator: torch.Generator | None = None, init_std: float = 0.02) -> dict:
    """A drafter state dict with the layer's SwiGLU inner size grown to ``ffn_dim``, computing exactly
    the same function: the new units' gate and up rows are small random values, their ``down`` columns
    zero (so their output is zero until trained). Shrinking is refused."""
    gu, down = state["layer.gate_up.weight"], state["layer.down.weight"]
    old = down.shape[1]
    if ffn_dim < old:
        raise ValueError(f"drafter widen: expected ffn_dim >= the drafter's {old}, got {ffn_dim}")
    if ffn_dim == old:
        return dict(state)
    extra, d = ffn_dim - old, gu.shape[1]
    new_rows = (torch.randn(2, extra, d, generator=generator) * init_std).to(gu.dtype)
    gate, up = gu[:old], gu[old:]
    out = dict(state)
    out["layer.gate_up.weight"] = torch.cat([gate, new_rows[0], up, new_rows[1]])
    out["layer.down.weight"] = torch.cat([down, torch.zeros(down.shape[0], extra, dtype=down.dtype)], dim=1)
    return out


class Drafter(nn.Module):
    def __init__(self, cfg: VLAConfig):
        super().__init__()
        self.cfg = cfg
        self.fc = nn.Linear(2 * cfg.d_model, cfg.d_model, bias=True)
        self.layer = DecoderLayer(cfg)
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)

    def empty_kv(self, batch: int, device=None) -> torch.Tensor:
        c = self.cfg
        return torch.zeros(2, batch, c.n_heads, 0, c.head_dim, device=device)

    def forward(self, feat, next_emb, positions, mask, past_kv):
        x = self.fc(torch.cat([next_emb, feat], dim=-1))
        x, k, v = self.layer(x, positions, mask, past_kv[0], past_kv[1])
        return self.norm(x), torch.stack([k, v])


@dataclasses.dataclass
class DraftBatch:
    """Teacher-forced drafter inputs for a batch of (possibly left-padded) sequences.

    Each row is ``[pads, BOS, visual, prompt, a_1..a_7]``: the prompt's padding is moved to the
    front, so the real tokens are contiguous and the EAGLE pairing (``f_t`` with ``e_{t+1}``) is
    the one the runtime sees for the unpadded prompt. ``feat[:, t] = f_t``,
    ``next_emb[:, t] = e_{t+1}`` for t = 0 .. L-2; ``positions`` are numbered without the padding;
    ``key_valid`` marks real keys. ``T = L - 7`` is the prefix length, so the drafter's output at
    t = T-1+k drafts action token k+2."""

    feat: torch.Tensor  # [B, L-1, D]
    next_emb: torch.Tensor  # [B, L-1, D]
    positions: torch.Tensor  # [B, L-1] int64
    key_valid: torch.Tensor  # [B, L-1] bool
    T: int

    def __getitem__(self, idx) -> "DraftBatch":
        return DraftBatch(self.feat[idx], self.next_emb[idx], self.positions[idx], self.key_valid[idx], self.T)

    @staticmethod
    def cat(parts: list["DraftBatch"]) -> "DraftBatch":
        return DraftBatch(*(torch.cat([getattr(p, f) for p in parts]) for f in ("feat", "next_emb", "positions",
                                                                             "key_valid")), parts[0].T)


def key_mask(key_valid: torch.Tensor) -> torch.Tensor:
    """``[B, L, L]`` causal attention over real keys; a padding row sees itself only (finite garbage,
    never attended by a real row), so no row is all-masked."""
    B, L = key_valid.shape
    eye = torch.eye(L, dtype=torch.bool, device=key_valid.device)
    return (causal_mask(L, 0, B, key_valid.device) & key_valid[:, None, :]) | eye


@torch.no_grad()
def drafter_inputs(verifier, images, prompt_ids, action_tokens) -> DraftBatch:
    """One teacher-forced verifier pass over ``[prefix, a_1..a_7]`` with the padding moved first."""
    x = torch.cat([verifier.prefix_embeds(images, prompt_ids), verifier.embed(action_tokens)], dim=1)
    B, L, _ = x.shape
    nv = 1 + verifier.cfg.n_visual
    valid = torch.ones(B, L, dtype=torch.bool, device=x.device)
    valid[:, nv : nv + prompt_ids.shape[1]] = prompt_ids != verifier.PAD
    order = torch.sort(valid.to(torch.int8), dim=1, stable=True).indices  # pads first, order kept
    x = torch.gather(x, 1, order[:, :, None].expand_as(x))
    valid = torch.gather(valid, 1, order)
    pos = (valid.long().cumsum(1) - 1).clamp(min=0)
    _, hidden, _ = verifier.forward_embeds(x, pos, key_mask(valid), verifier.empty_kv(B, x.device))
    return DraftBatch(hidden[:, :-1], x[:, 1:], pos[:, :-1], valid[:, :-1], L - action_tokens.shape[1])


def unrolled_passes(drafter: Drafter, batch: DraftBatch, feat_in: torch.Tensor, passes: int):
    """Yield the drafter's output ``[B, L-1, D]`` of each pass; pass j > 0 reads pass j-1's
    predictions ``f_hat_T .. f_hat_{T+5}`` in place of ``feat_in``'s action positions."""
    if passes < 1:
        raise ValueError(f"drafter unroll: expected at least 1 pass, got {passes}")
    T, B = batch.T, feat_in.shape[0]
    mask = key_mask(batch.key_valid)
    cur = feat_in
    for j in range(passes):
        if j:
            cur = torch.cat([feat_in[:, :T], pred[:, T - 1 : T + 5]], dim=1)
        pred, _ = drafter(cur, batch.next_emb, batch.positions, mask, drafter.empty_kv(B, feat_in.device))
        yield pred


def distill_loss(drafter: Drafter, verifier, batch: DraftBatch, noise: float = 0.0, p_weight: float = 0.1,
                 unroll: int = 1, p_temperature: float = 1.0):
    """Spec-VLA loss on the positions that draft tokens 2..7; returns ``(loss, stats)``.

    ``p_temperature`` divides the verifier's logits before the cross-entropy target's softmax: 1 is
    Spec-VLA's target; below 1 sharpens it towards the verifier's argmax (what exact acceptance
    checks), which matters when the verifier's distribution over neighbouring bins is broad.

    ``unroll`` > 1 trains on the drafter's own features as the runtime's chain feeds them: pass j
    replaces the inputs at the action positions (``f_T .. f_{T+5}``) with pass j-1's predictions
    (gradients flow through), so after k+1 passes the output drafting token k+2 is computed exactly
    as ``draft_chain`` computes it. The loss is the mean over passes; ``top1`` is the last pass's."""
    if not p_temperature > 0:
        raise ValueError(f"drafter distill_loss: p_temperature must be > 0, got {p_temperature}")
    feat, T = batch.feat, batch.T
    inp = feat + noise * (torch.rand_like(feat) - 0.5) if noise > 0 else feat
    sel = slice(T - 1, T + 5)  # outputs predicting f_T .. f_{T+5} -> tokens a_2 .. a_7
    target_f = feat[:, T : T + 6]
    with torch.no_grad():
        target_p = (verifier.lm_head(target_f) / p_temperature).softmax(-1)
    total = 0.0
    for pred in unrolled_passes(drafter, batch, inp, unroll):
        pred_f = pred[:, sel]
        v_loss = F.smooth_l1_loss(pred_f, target_f)
        logp = verifier.lm_head(pred_f).log_softmax(-1)
        p_loss = -(target_p * logp).sum(-1).mean()
        total = total + v_loss + p_weight * p_loss
    with torch.no_grad():
        acc = (logp.argmax(-1) == target_p.argmax(-1)).float().mean().item()
    return total / unroll, {"v_loss": v_loss.item(), "p_loss": p_loss.item(), "top1": acc}
