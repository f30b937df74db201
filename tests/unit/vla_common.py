"""Shared pieces of the reference VLA's unit tests: a tiny config and a random batch."""

import torch

from vla.model import VLAConfig

CFG = VLAConfig(d_model=64, n_layers=2, n_heads=4, ffn_dim=128, n_text=48)


def batch(B=3, P=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (B, CFG.n_views, 64, 64, 3), generator=g, dtype=torch.uint8)
    prompt = torch.randint(4, CFG.n_text, (B, P), generator=g)
    acts = torch.randint(CFG.n_text, CFG.vocab_size, (B, 7), generator=g)
    return img, prompt, acts
