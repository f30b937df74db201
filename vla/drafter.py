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
- ``distill_loss`` is Spec-VLA's: SmoothL1 on features + 0.1 cross-entropy between the verifier's
  and the drafter's token distributions, on the 6 positions that draft action tokens 2..7.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vla.model import DecoderLayer, RMSNorm, VLAConfig, causal_mask

__all__ = ["Drafter", "distill_loss", "drafter_inputs"]


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


def drafter_inputs(verifier, images, prompt_ids, action_tokens):
    """Teacher-forced verifier pass over ``[prefix, a_1..a_7]``: returns ``(feat, next_emb, T)``
    with ``feat[:, t] = f_t`` and ``next_emb[:, t] = e_{t+1}`` for t = 0 .. T+5, where T is the
    prefix length (the drafter's output at t = T-1+k drafts action token k+2)."""
    with torch.no_grad():
        prefix = verifier.prefix_embeds(images, prompt_ids)
        x = torch.cat([prefix, verifier.embed(action_tokens)], dim=1)
        B, L, _ = x.shape
        pos = torch.arange(L).expand(B, L)
        _, hidden, _ = verifier.forward_embeds(x, pos, causal_mask(L, 0, B), verifier.empty_kv(B))
    return hidden[:, :-1], x[:, 1:], prefix.shape[1]


def distill_loss(drafter: Drafter, verifier, feat, next_emb, T: int, noise: float = 0.0,
                 p_weight: float = 0.1):
    """Spec-VLA loss on the positions that draft tokens 2..7; returns ``(loss, stats)``."""
    B, L, _ = feat.shape
    inp = feat + noise * (torch.rand_like(feat) - 0.5) if noise > 0 else feat
    pos = torch.arange(L).expand(B, L)
    pred, _ = drafter(inp, next_emb, pos, causal_mask(L, 0, B), drafter.empty_kv(B))
    sel = slice(T - 1, T + 5)  # outputs predicting f_T .. f_{T+5} -> tokens a_2 .. a_7
    target_f = feat[:, T : T + 6]
    pred_f = pred[:, sel]
    v_loss = F.smooth_l1_loss(pred_f, target_f)
    with torch.no_grad():
        target_p = verifier.lm_head(target_f).softmax(-1)
    logp = verifier.lm_head(pred_f).log_softmax(-1)
    p_loss = -(target_p * logp).sum(-1).mean()
    with torch.no_grad():
        acc = (logp.argmax(-1) == target_p.argmax(-1)).float().mean().item()
    return v_loss + p_weight * p_loss, {"v_loss": v_loss.item(), "p_loss": p_loss.item(), "top1": acc}
