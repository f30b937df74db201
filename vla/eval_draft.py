"""Teacher-forced drafter quality: accepted length of 6-token drafter chains (PyTorch reference).

``chain_accept_lengths(verifier, drafter, images, prompt_ids, r)`` runs, per sample, exactly one
speculative round as the runtime does: verifier prefill -> token 1 (argmax); the drafter
(prefix pass + 5 chained steps on its own features) proposes tokens 2..7; one verifier pass over
``[t1, d2..d7]`` gives the verifier's greedy token after each draft prefix; a draft is accepted
while ``|d_k - y_k| <= r`` (Spec-VLA's relaxed rule; r = 0 is exact match). Returns ``[B]`` int
accepted drafts (0..6); tokens advanced by the pass are that + 1 (the bonus token).
"""

from __future__ import annotations

import torch

from vla.model import causal_mask


@torch.no_grad()
def draft_chain(verifier, drafter, hidden, x, valid, first_token, n: int = 6):
    """Drafter proposals ``[B, n]`` following ``first_token`` after a verifier prefill."""
    B, T, _ = hidden.shape
    next_emb = torch.cat([x[:, 1:], verifier.embed(first_token)[:, None]], dim=1)
    pos = valid.long().cumsum(1) - 1
    mask = causal_mask(T, 0, B) & valid[:, None, :]
    f, dkv = drafter(hidden, next_emb, pos, mask, drafter.empty_kv(B))
    f = f[:, -1:]
    start = valid.long().sum(1, keepdim=True)
    drafts = []
    for j in range(n):
        tok = verifier.lm_head(f[:, -1]).argmax(-1)
        drafts.append(tok)
        if j == n - 1:
            break
        keys = torch.cat([valid, torch.ones(B, j + 1, dtype=torch.bool)], dim=1)
        f, dkv = drafter(f, verifier.embed(tok)[:, None], start + j, keys[:, None, :], dkv)
    return torch.stack(drafts, dim=1)


@torch.no_grad()
def chain_accept_lengths(verifier, drafter, images, prompt_ids, r: int = 0, batch: int = 256) -> torch.Tensor:
    """Rows are grouped by prompt length and their padding stripped, so every row is decoded
    exactly as the runtime decodes its unpadded prompt."""
    out = torch.zeros(images.shape[0], dtype=torch.long)
    n_pad = (prompt_ids == verifier.PAD).sum(1)
    for p in n_pad.unique().tolist():
        rows = torch.nonzero(n_pad == p).squeeze(1)
        for i in range(0, rows.numel(), batch):
            sel = rows[i:i + batch]
            out[sel] = _accept_lengths(verifier, drafter, images[sel], prompt_ids[sel, p:], r)
    return out


def _accept_lengths(verifier, drafter, images, prompt_ids, r: int) -> torch.Tensor:
    logits, hidden, kv, valid, x = verifier.prefill(images, prompt_ids)
    t1 = logits[:, -1].argmax(-1)
    drafts = draft_chain(verifier, drafter, hidden, x, valid, t1)
    vlogits, _, _ = verifier.extend(torch.cat([t1[:, None], drafts], dim=1), kv, valid)
    y = vlogits[:, :-1].argmax(-1)  # verifier's token after each prefix [t1, d2..d_k]
    ok = (drafts - y).abs() <= r
    return ok.long().cumprod(dim=1).sum(dim=1)
