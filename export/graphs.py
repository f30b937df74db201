"""PyTorch modules that implement ``edge.io_contract``'s graphs on top of the reference models.

Each wrapper's ``forward`` takes and returns exactly the contract's tensors (batch 1, KV cache
sequence-major), so the same module is both what ``torch.onnx.export`` traces and the PyTorch
reference that parity checks compare against. Any model exposing the ``Verifier`` primitives
(``prefix_embeds``, ``embed``, ``forward_embeds``, ``lm_head``, ``cfg``) can be wrapped, which is
how the Hugging Face route reuses them.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["PrefillGraph", "VerifyGraph", "DraftGraph", "example_inputs"]


def _to_seq_major(kv: torch.Tensor) -> torch.Tensor:
    """``[L, 2, 1, H, S, Dh]`` -> ``[S, L, 2, H, Dh]``."""
    return kv[:, :, 0].permute(3, 0, 1, 2, 4)


def _from_seq_major(kv: torch.Tensor) -> torch.Tensor:
    """``[S, L, 2, H, Dh]`` -> ``[L, 2, 1, H, S, Dh]``."""
    return kv.permute(1, 2, 3, 0, 4).unsqueeze(2)


class PrefillGraph(nn.Module):
    def __init__(self, verifier):
        super().__init__()
        self.v = verifier

    def forward(self, images, prompt_ids, draft_ids, draft_mask, draft_depth):
        v = self.v
        x = v.prefix_embeds(images, prompt_ids)
        T, K = x.shape[1], draft_ids.shape[1]
        xx = torch.cat([x, v.embed(draft_ids)], dim=1)
        ar = torch.arange(T, device=x.device)
        pos = torch.cat([ar, T + draft_depth[0]])[None]
        causal = ar[None, :] <= ar[:, None]  # [T, T]
        top = torch.cat([causal, torch.zeros(T, K, dtype=torch.bool, device=x.device)], dim=1)
        bottom = torch.cat([torch.ones(K, T, dtype=torch.bool, device=x.device), draft_mask[0]], dim=1)
        mask = torch.cat([top, bottom], dim=0)[None]
        cfg = v.cfg
        empty = torch.zeros(cfg.n_layers, 2, 1, cfg.n_heads, 0, cfg.head_dim, device=x.device)
        logits, hidden, kv = v.forward_embeds(xx, pos, mask, empty)
        return logits[:, T - 1 :], hidden, x, _to_seq_major(kv)


class VerifyGraph(nn.Module):
    def __init__(self, verifier):
        super().__init__()
        self.v = verifier

    def forward(self, tokens, positions, tree_mask, past_kv):
        S, K = past_kv.shape[0], tokens.shape[1]
        mask = torch.cat([torch.ones(1, K, S, dtype=torch.bool, device=tokens.device), tree_mask], dim=2)
        logits, hidden, kv = self.v.forward_tokens(tokens, positions, mask, _from_seq_major(past_kv))
        return logits, hidden, _to_seq_major(kv)[S:]


class DraftGraph(nn.Module):
    def __init__(self, drafter, lm_head):
        super().__init__()
        self.d = drafter
        self.lm_head = lm_head

    def forward(self, feat, next_embeds, positions, mask, past_kv):
        S, K = past_kv.shape[0], feat.shape[1]
        full = torch.cat([torch.ones(1, K, S, dtype=torch.bool, device=feat.device), mask], dim=2)
        past = past_kv.permute(1, 2, 0, 3).unsqueeze(1)  # [S, 2, H, Dh] -> [2, 1, H, S, Dh]
        f, kv = self.d(feat, next_embeds, positions, full, past)
        new = kv[:, 0].permute(2, 0, 1, 3)[S:]  # [2, H, S+K, Dh] -> [S+K, 2, H, Dh] -> new rows
        return self.lm_head(f), f, new


def example_inputs(cfg, prompt_len: int = 12, num_draft: int = 3, past_len: int = 40, seed: int = 0):
    """Deterministic example feeds for each graph (used for tracing and for parity)."""
    g = torch.Generator().manual_seed(seed)
    L, H, Dh, D = cfg.n_layers, cfg.n_heads, cfg.head_dim, cfg.d_model
    images = torch.randint(0, 256, (1, cfg.n_views, cfg.image_size_px, cfg.image_size_px, 3), generator=g,
                           dtype=torch.uint8)
    prompt = torch.randint(4, cfg.n_text, (1, prompt_len), generator=g)
    draft = torch.randint(cfg.n_text, cfg.vocab_size, (1, num_draft), generator=g)
    tri = torch.tril(torch.ones(num_draft, num_draft, dtype=torch.bool))[None]
    depth = torch.arange(num_draft)[None]
    return {
        "prefill": (images, prompt, draft, tri, depth),
        "verify": (draft, past_len + depth, tri, torch.randn(past_len, L, 2, H, Dh, generator=g) * 0.5),
        "draft": (torch.randn(1, num_draft, D, generator=g), torch.randn(1, num_draft, D, generator=g) * 0.02,
                  past_len + depth, tri, torch.randn(past_len, 2, H, Dh, generator=g) * 0.5),
    }
