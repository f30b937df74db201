"""Reference verifier: a small OpenVLA-shaped VLA (PyTorch, host only).

Contract:
- Sequence layout: ``[BOS, v_1 .. v_N, prompt tokens, a_1 .. a_7]``. ``v_i`` are visual tokens
  (a conv stem per camera view, then a linear projector); the rest are token embeddings. With
  ``film`` the stem's channels are scaled and shifted by the mean embedding of the prompt's real
  words (RT-1's FiLM; padding and arm-state bin tokens, ``edge.tokenizer.StateSpec``, left out;
  with ``film_norm`` divided by its RMS first; with ``film_order`` also by their mean weighted by a learned
  vector per word place, so word order reaches the stem),
  so the prefill still takes only ``(images, prompt_ids)``.
- Vocabulary: ``vocab_size = n_text + n_bins``; the last ``n_bins`` ids are the action bins, so
  ``edge.codec.ActionCodec(stats, vocab_size)`` encodes and decodes them (token = vocab - bin).
- The decoder is Llama-style: RMSNorm, rotary position embeddings, SwiGLU, no biases.
- ``forward_embeds(x, positions, mask, past_kv)`` is the one primitive everything else uses:
  ``x`` ``[B, T, D]``, ``positions`` ``[B, T]`` int64, ``mask`` ``[B, T, P + T]`` bool (True =
  may attend), ``past_kv`` ``[L, 2, B, H, P, Dh]`` (P may be 0). It returns ``logits [B, T, V]``,
  ``hidden [B, T, D]`` (after the final norm: the LM head's input, EAGLE's feature) and the
  present cache ``[L, 2, B, H, P + T, Dh]``. A prefill, a chain verify and a tree verify are the
  same call with different masks and positions.
- ``prefill`` / ``extend`` handle left-padded prompts (padding masked out, positions numbered
  without it) and chain or tree continuations.
- ``greedy_actions(image, prompt_ids)`` is the plain reference decoder (prefill + 6 decode steps
  with the KV cache, argmax over the whole vocabulary as OpenVLA does);
  ``full_recompute_greedy`` is its cache-free twin (unpadded prompts) used by tests.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["VLAConfig", "Verifier", "causal_mask", "RMSNorm", "DecoderLayer", "rope"]


@dataclasses.dataclass(frozen=True)
class VLAConfig:
    n_text: int = 128  # text vocabulary size (specials + words); action bins come after
    n_bins: int = 256  # action bins (OpenVLA: 256)
    action_dim: int = 7  # tokens per action
    d_model: int = 192  # hidden size
    n_layers: int = 8  # decoder layers
    n_heads: int = 6  # attention heads
    ffn_dim: int = 512  # SwiGLU inner size
    image_size_px: int = 64  # square input images
    n_views: int = 2  # camera views (third-person, wrist)
    patch_grid: int = 4  # visual tokens per view = patch_grid ** 2
    coord_channels: bool = False  # CoordConv: x/y pixel coordinates appended to the image before the stem
    keypoints: bool = False  # spatial-softmax keypoints (x/y per stem channel) added to each view's tokens
    film: bool = False  # FiLM (RT-1): the instruction scales and shifts every stem channel, so the visual
    #                     tokens already say where the block the instruction names is
    film_norm: bool = False  # FiLM reads the instruction embedding divided by its RMS, and starts from the
    #                          verifier's small random init instead of zero: with 0.02-scale embeddings and a
    #                          zeroed FiLM each one's gradient is the other's tiny value, and grounding stalls
    film_order: bool = False  # FiLM also reads the words' mean weighted by a learned vector per word position:
    #                           the plain mean is a bag of words, and "stack the blue block on the red block and
    #                           then put the green block on the plate" pools to the same vector as "put the green
    #                           block on the plate and then stack the red block on the blue block"
    max_seq: int = 128  # longest sequence (prefix + action + draft tree)
    rope_theta: float = 10000.0  # rotary base
    norm_eps: float = 1e-6  # RMSNorm epsilon

    @property
    def vocab_size(self) -> int:
        return self.n_text + self.n_bins

    @property
    def n_visual(self) -> int:
        return self.n_views * self.patch_grid**2

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding of ``x`` ``[B, H, T, Dh]`` at integer ``positions`` ``[B, T]``."""
    dh = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, dh, 2, dtype=torch.float32, device=x.device) / dh))
    ang = positions.to(torch.float32)[:, None, :, None] * inv  # [B, 1, T, Dh/2]
    cos, sin = torch.cos(ang), torch.sin(ang)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.reshape(x.shape)  # not flatten(-2): a -1 reshape fails on zero new tokens in ONNX


class DecoderLayer(nn.Module):
    def __init__(self, cfg: VLAConfig):
        super().__init__()
        d, self.h, self.dh, self.theta = cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.rope_theta
        self.attn_norm = RMSNorm(d, cfg.norm_eps)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.ffn_norm = RMSNorm(d, cfg.norm_eps)
        self.gate_up = nn.Linear(d, 2 * cfg.ffn_dim, bias=False)
        self.down = nn.Linear(cfg.ffn_dim, d, bias=False)

    def forward(self, x, positions, mask, past_k, past_v):
        B, T, D = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).split(D, dim=-1)
        q = rope(q.view(B, T, self.h, self.dh).transpose(1, 2), positions, self.theta)
        k = rope(k.view(B, T, self.h, self.dh).transpose(1, 2), positions, self.theta)
        v = v.view(B, T, self.h, self.dh).transpose(1, 2)
        k = torch.cat([past_k, k], dim=2)
        v = torch.cat([past_v, v], dim=2)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.dh)
        att = att.masked_fill(~mask[:, None, :, :], float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, D)
        x = x + self.o(y)
        g, u = self.gate_up(self.ffn_norm(x)).chunk(2, dim=-1)
        x = x + self.down(F.silu(g) * u)
        return x, k, v


class VisionEncoder(nn.Module):
    """Conv stem per view: ``[B, V, H, W, 3]`` uint8 -> ``[B, V * G * G, D]`` visual tokens."""

    def __init__(self, cfg: VLAConfig):
        super().__init__()
        self.cfg = cfg
        c = 64
        # Each token averages a (64 / patch_grid)-pixel cell; without coordinates the pooled features of
        # translation-equivariant convolutions barely say where in its cell a block lies.
        n_in = 3 + (2 if cfg.coord_channels else 0)
        if cfg.coord_channels:
            ramp = torch.linspace(-1.0, 1.0, cfg.image_size_px)
            yy, xx = torch.meshgrid(ramp, ramp, indexing="ij")
            self.register_buffer("coords", torch.stack([xx, yy])[None], persistent=False)
        self.stem = nn.Sequential(
            nn.Conv2d(n_in, 32, 5, stride=2, padding=2), nn.GELU(),
            nn.Conv2d(32, c, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(c, c, 3, stride=1, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(cfg.patch_grid),
        )
        if cfg.film:  # (1 + gamma, beta) per channel of each conv, from the pooled instruction embedding
            self.film_channels = [m.out_channels for m in self.stem if isinstance(m, nn.Conv2d)]
            n_text_in = cfg.d_model * (2 if cfg.film_order else 1)  # [mean ; position-weighted mean]
            self.film = nn.Linear(n_text_in, 2 * sum(self.film_channels))  # zeroed by Verifier after its init
        self.view_embed = nn.Parameter(torch.zeros(cfg.n_views, 1, c))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.patch_grid**2, c))
        self.proj = nn.Sequential(nn.Linear(c, cfg.d_model), nn.GELU(), nn.Linear(cfg.d_model, cfg.d_model))
        if cfg.keypoints:  # Levine et al.'s spatial soft-argmax: where each channel fires, as coordinates
            g = cfg.image_size_px // 4  # the stem's two stride-2 convolutions
            ramp = torch.linspace(-1.0, 1.0, g)
            yy, xx = torch.meshgrid(ramp, ramp, indexing="ij")
            self.register_buffer("kp_grid", torch.stack([xx.flatten(), yy.flatten()], dim=1), persistent=False)
            self.kp_log_temp = nn.Parameter(torch.zeros(c))
            self.kp_proj = nn.Linear(2 * c, cfg.d_model)  # zeroed by Verifier after its init

    def forward(self, images: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """``images`` ``[B, V, H, W, 3]`` uint8; ``text`` ``[B, D]`` (``[B, 2D]`` with ``film_order``), the
        pooled instruction embedding (used by FiLM only)."""
        B, V = images.shape[:2]
        x = images.reshape(B * V, *images.shape[2:]).permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0
        if self.cfg.coord_channels:
            x = torch.cat([x, self.coords.to(x.dtype).expand(x.shape[0], -1, -1, -1)], dim=1)
        if self.cfg.film and self.cfg.film_norm:  # each D-wide part by its own RMS
            parts = text.reshape(B, -1, self.cfg.d_model)
            text = (parts * torch.rsqrt(parts.pow(2).mean(-1, keepdim=True) + self.cfg.norm_eps)).reshape(B, -1)
        mods = iter(self.film(text).repeat_interleave(V, dim=0).split(
            [n for n in self.film_channels for _ in range(2)], dim=1)) if self.cfg.film else None
        fm = x
        for m in self.stem[:-1]:  # -> [B*V, c, H/4, W/4]
            fm = m(fm)
            if mods is not None and isinstance(m, nn.GELU):  # FiLM after each activation
                gamma, beta = next(mods), next(mods)
                fm = fm * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
        f = self.stem[-1](fm).flatten(2).transpose(1, 2)  # [B*V, G*G, c]
        f = f.reshape(B, V, -1, f.shape[-1]) + self.view_embed[None] + self.pos_embed[:, None]
        tokens = self.proj(f)  # [B, V, G*G, D]
        if self.cfg.keypoints:
            attn = torch.softmax(fm.flatten(2) * self.kp_log_temp.exp()[None, :, None], dim=-1)  # [B*V, c, HW]
            kp = (attn @ self.kp_grid.to(attn.dtype)).reshape(B, V, 1, -1)  # [B, V, 1, 2c]
            self.keypoints = kp[:, :, 0]  # [B, V, 2c], the last call's (a training loss may read them)
            tokens = tokens + self.kp_proj(kp)
        return tokens.reshape(B, -1, tokens.shape[-1])


def causal_mask(T: int, past: int = 0, batch: int = 1, device=None) -> torch.Tensor:
    """``[B, T, past + T]`` bool: each new position sees the whole past and earlier new ones."""
    m = torch.ones(T, past + T, dtype=torch.bool, device=device)
    m[:, past:] = torch.tril(torch.ones(T, T, dtype=torch.bool, device=device))
    return m.expand(batch, T, past + T)


class Verifier(nn.Module):
    PAD = 0
    BOS = 1

    def __init__(self, cfg: VLAConfig):
        super().__init__()
        self.cfg = cfg
        self.vision = VisionEncoder(cfg)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.film_order:  # unit-scale gates: the position-weighted mean differs between orders from the start
            self.word_pos = nn.Parameter(torch.randn(cfg.max_seq, cfg.d_model))
        self.apply(self._init)
        if cfg.keypoints:  # zero: a verifier grown from one without keypoints continues unchanged
            nn.init.zeros_(self.vision.kp_proj.weight)
            nn.init.zeros_(self.vision.kp_proj.bias)
        if cfg.film and not cfg.film_norm:  # zero: identity modulation, so a verifier grown from one without FiLM
            #                                 continues unchanged
            nn.init.zeros_(self.vision.film.weight)
            nn.init.zeros_(self.vision.film.bias)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def empty_kv(self, batch: int, device=None) -> torch.Tensor:
        c = self.cfg
        return torch.zeros(c.n_layers, 2, batch, c.n_heads, 0, c.head_dim, device=device)

    def prefix_embeds(self, images: torch.Tensor, prompt_ids: torch.Tensor) -> torch.Tensor:
        """``[B, 1 + N + P, D]``: BOS, visual tokens, prompt token embeddings."""
        B = images.shape[0]
        bos = self.embed(torch.full((B, 1), self.BOS, dtype=torch.long, device=images.device))
        words = self.embed(prompt_ids)
        text = self.instruction_embedding(prompt_ids, words) if self.cfg.film else None
        return torch.cat([bos, self.vision(images, text), words], dim=1)

    def instruction_embedding(self, prompt_ids: torch.Tensor, words: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, D]``, FiLM's input: the mean embedding of the prompt's real words (padding and arm-state bin
        tokens left out); with ``film_order`` ``[B, 2D]``: that mean, then the mean of each word's embedding
        times ``word_pos`` at its place among the real words (so padding does not move it). ``words`` are
        the prompt's embeddings when already computed."""
        words = self.embed(prompt_ids) if words is None else words
        is_real = (prompt_ids != self.PAD) & (prompt_ids < self.cfg.n_text)
        real = is_real.to(words.dtype)[..., None]
        n = real.sum(1).clamp_min(1.0)
        mean = (words * real).sum(1) / n
        if not self.cfg.film_order:
            return mean
        place = (torch.cumsum(is_real.to(torch.int64), dim=1) - 1).clamp(0, self.cfg.max_seq - 1)
        ordered = (words * self.word_pos[place] * real).sum(1) / n
        return torch.cat([mean, ordered], dim=-1)

    def forward_embeds(self, x, positions, mask, past_kv):
        ks, vs = [], []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, positions, mask, past_kv[i, 0], past_kv[i, 1])
            ks.append(k)
            vs.append(v)
        hidden = self.norm(x)
        kv = torch.stack([torch.stack(ks), torch.stack(vs)], dim=1)
        return self.lm_head(hidden), hidden, kv

    def forward_tokens(self, tokens, positions, mask, past_kv):
        return self.forward_embeds(self.embed(tokens), positions, mask, past_kv)

    def teacher_forced(self, images, prompt_ids, action_tokens):
        """Training pass: logits ``[B, 7, V]`` predicting each action token, and all hidden.

        ``prompt_ids`` may be left-padded with ``PAD`` (0): padded keys are masked out and the
        positions of real tokens are numbered as if the padding were absent, so a padded row
        computes exactly what the unpadded sequence would."""
        x = torch.cat([self.prefix_embeds(images, prompt_ids), self.embed(action_tokens)], dim=1)
        B, T, _ = x.shape
        nv = 1 + self.cfg.n_visual
        valid = torch.ones(B, T, dtype=torch.bool, device=x.device)
        valid[:, nv : nv + prompt_ids.shape[1]] = prompt_ids != self.PAD
        pos = valid.long().cumsum(1) - 1
        mask = causal_mask(T, 0, B, x.device) & valid[:, None, :]
        logits, hidden, _ = self.forward_embeds(x, pos, mask, self.empty_kv(B, x.device))
        A = action_tokens.shape[1]
        return logits[:, T - A - 1 : T - 1], hidden

    def prefill(self, images, prompt_ids):
        """Prefix pass with left-padded prompts. Returns ``(logits, hidden, kv, key_valid, x)``:
        ``key_valid`` ``[B, T]`` marks real (non-pad) keys; the next position is
        ``key_valid.sum(1)``; ``x`` are the prefix input embeddings."""
        x = self.prefix_embeds(images, prompt_ids)
        B, T, _ = x.shape
        nv = 1 + self.cfg.n_visual
        valid = torch.ones(B, T, dtype=torch.bool, device=x.device)
        valid[:, nv:] = prompt_ids != self.PAD
        pos = valid.long().cumsum(1) - 1
        mask = causal_mask(T, 0, B, x.device) & valid[:, None, :]
        logits, hidden, kv = self.forward_embeds(x, pos, mask, self.empty_kv(B, x.device))
        return logits, hidden, kv, valid, x

    def extend(self, tokens, kv, key_valid, tree_mask=None, depths=None):
        """Append ``tokens`` ``[B, K]`` after a prefill: a chain (causal) or, with ``tree_mask``
        ``[K, K]`` (True = ancestor or self) and ``depths`` ``[K]``, a draft tree."""
        B, K = tokens.shape
        start = key_valid.long().sum(1, keepdim=True)  # [B, 1] next position
        if tree_mask is None:
            tree_mask = torch.tril(torch.ones(K, K, dtype=torch.bool, device=tokens.device))
            depths = torch.arange(K, device=tokens.device)
        pos = start + depths[None]
        mask = torch.cat([key_valid[:, None, :].expand(B, K, -1), tree_mask.expand(B, K, K)], dim=2)
        return self.forward_tokens(tokens, pos, mask, kv)

    @torch.no_grad()
    def greedy_actions(self, images, prompt_ids):
        """Plain AR greedy with the KV cache: prefill gives token 1, then 6 decode steps."""
        logits, _, kv, valid, _ = self.prefill(images, prompt_ids)
        tok = logits[:, -1].argmax(-1)
        out = [tok]
        for _ in range(self.cfg.action_dim - 1):
            logits, _, kv = self.extend(tok[:, None], kv, valid)
            valid = torch.cat([valid, torch.ones_like(valid[:, :1])], dim=1)
            tok = logits[:, -1].argmax(-1)
            out.append(tok)
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def full_recompute_greedy(self, images, prompt_ids):
        """Cache-free twin of ``greedy_actions`` (recomputes the whole sequence each token)."""
        prefix = self.prefix_embeds(images, prompt_ids)
        B = prefix.shape[0]
        toks = torch.zeros(B, 0, dtype=torch.long, device=prefix.device)
        for _ in range(self.cfg.action_dim):
            x = torch.cat([prefix, self.embed(toks)], dim=1)
            T = x.shape[1]
            pos = torch.arange(T, device=x.device).expand(B, T)
            logits, _, _ = self.forward_embeds(x, pos, causal_mask(T, 0, B, x.device), self.empty_kv(B, x.device))
            toks = torch.cat([toks, logits[:, -1].argmax(-1)[:, None]], dim=1)
        return toks
