"""A Hugging Face Llama-family backbone from a local directory as the verifier.

``load_hf_verifier(path)`` reads ``config.json`` and the weights with
``LlamaForCausalLM.from_pretrained(path, local_files_only=True)`` (never a download), checks
that the architecture is one the contract graphs implement (Llama: RMSNorm, SwiGLU, RoPE
without scaling, no attention bias, as many KV heads as query heads, as Llama-2-7B), and maps
the weights into ``vla.model.Verifier`` so the same export, graphs and parity checks apply:

- q/k projection rows are permuted per head from HF's rotate-half layout to the interleaved
  pairs ``vla.model.rope`` uses (dimension i pairs with i + Dh/2 there, with 2i+1 here); scores
  are unchanged because q and k are permuted alike;
- gate and up projections are stacked into ``gate_up``; q, k, v into ``qkv``;
- the last 256 ids of the vocabulary are the action bins (OpenVLA overwrites the last 256
  Llama-2 tokens), so ``n_text = vocab_size - 256``.

The vision side (OpenVLA's fused DINOv2/SigLIP + projector) is not part of a Llama checkpoint:
``vision.pt`` in the same directory is loaded into the conv encoder when present, otherwise a
seeded initialisation is used and the manifest says so. ``hf_parity`` compares the mapped model
with the Hugging Face model itself on the same input embeddings.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from vla.model import VLAConfig, Verifier

log = logging.getLogger(__name__)

__all__ = ["load_hf_verifier", "hf_parity", "HFRouteError"]


class HFRouteError(ValueError):
    """A Hugging Face checkpoint this route cannot map, naming the field."""


def _check_config(c, path: Path) -> None:
    def need(ok: bool, what: str):
        if not ok:
            raise HFRouteError(f"{path}/config.json: {what}")

    need(getattr(c, "model_type", "") == "llama", f"model_type: expected 'llama', got {getattr(c, 'model_type', None)!r}")
    kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    need(kv == c.num_attention_heads, f"num_key_value_heads: expected {c.num_attention_heads} (no GQA), got {kv}")
    need(getattr(c, "hidden_act", "silu") == "silu", f"hidden_act: expected 'silu', got {c.hidden_act!r}")
    need(not getattr(c, "attention_bias", False), "attention_bias: expected false")
    need(not getattr(c, "mlp_bias", False), "mlp_bias: expected false")
    scaling = getattr(c, "rope_scaling", None)
    need(not scaling or scaling.get("rope_type", scaling.get("type")) in (None, "default"),
         f"rope_scaling: expected none, got {scaling!r}")
    need(c.vocab_size > 256, f"vocab_size: expected > 256 (the last 256 ids are action bins), got {c.vocab_size}")


def _rope_theta(c) -> float:
    theta = getattr(c, "rope_theta", None)
    if theta is None:
        params = getattr(c, "rope_parameters", None) or {}
        theta = params.get("rope_theta", 10000.0)
    return float(theta)


def _interleave_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    d_out, d_in = w.shape
    dh = d_out // n_heads
    perm = torch.stack([torch.arange(dh // 2), torch.arange(dh // 2) + dh // 2], dim=1).reshape(-1)
    return w.view(n_heads, dh, d_in)[:, perm].reshape(d_out, d_in)


def load_hf_verifier(path: str | Path, n_views: int = 2, image_size_px: int = 64, seed: int = 0):
    try:
        from transformers import AutoConfig, LlamaForCausalLM
    except ImportError as exc:
        raise HFRouteError(f"the Hugging Face route needs transformers: pip install transformers ({exc})") from None
    path = Path(path)
    if not (path / "config.json").is_file():
        raise HFRouteError(f"{path}/config.json: not found (expected a local Hugging Face model directory)")
    c = AutoConfig.from_pretrained(path, local_files_only=True)
    _check_config(c, path)
    hf = LlamaForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()
    cfg = VLAConfig(n_text=c.vocab_size - 256, d_model=c.hidden_size, n_layers=c.num_hidden_layers,
                    n_heads=c.num_attention_heads, ffn_dim=c.intermediate_size, image_size_px=image_size_px,
                    n_views=n_views, max_seq=min(int(c.max_position_embeddings), 4096),
                    rope_theta=_rope_theta(c), norm_eps=float(c.rms_norm_eps))
    torch.manual_seed(seed)
    v = Verifier(cfg).eval()
    sd = hf.state_dict()
    with torch.no_grad():
        v.embed.weight.copy_(sd["model.embed_tokens.weight"])
        v.lm_head.weight.copy_(sd.get("lm_head.weight", sd["model.embed_tokens.weight"]))
        v.norm.weight.copy_(sd["model.norm.weight"])
        for i, layer in enumerate(v.layers):
            p = f"model.layers.{i}."
            q = _interleave_rows(sd[p + "self_attn.q_proj.weight"], cfg.n_heads)
            k = _interleave_rows(sd[p + "self_attn.k_proj.weight"], cfg.n_heads)
            layer.qkv.weight.copy_(torch.cat([q, k, sd[p + "self_attn.v_proj.weight"]]))
            layer.o.weight.copy_(sd[p + "self_attn.o_proj.weight"])
            layer.gate_up.weight.copy_(torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]]))
            layer.down.weight.copy_(sd[p + "mlp.down_proj.weight"])
            layer.attn_norm.weight.copy_(sd[p + "input_layernorm.weight"])
            layer.ffn_norm.weight.copy_(sd[p + "post_attention_layernorm.weight"])
    vision = path / "vision.pt"
    if vision.is_file():
        v.vision.load_state_dict(torch.load(vision, map_location="cpu", weights_only=True))
    meta = {"hf_path": str(path), "vision": str(vision) if vision.is_file() else f"seeded init (seed {seed})",
            "model": cfg.__dict__, "codec": {"vocab_size": cfg.vocab_size, "n_bins": cfg.n_bins}}
    v._hf = hf  # kept for hf_parity
    return v, meta


@torch.no_grad()
def hf_parity(v: Verifier, n: int = 4, prompt_len: int = 10, seed: int = 0) -> dict:
    """Max |logit difference| and argmax agreement between the mapped model and HF's own."""
    g = torch.Generator().manual_seed(seed)
    cfg = v.cfg
    worst, agree, total = 0.0, 0, 0
    for _ in range(n):
        img = torch.randint(0, 256, (1, cfg.n_views, cfg.image_size_px, cfg.image_size_px, 3), generator=g,
                            dtype=torch.uint8)
        prompt = torch.randint(4, cfg.n_text, (1, prompt_len), generator=g)
        x = v.prefix_embeds(img, prompt)
        T = x.shape[1]
        ours, _, _ = v.forward_embeds(x, torch.arange(T)[None], torch.tril(torch.ones(T, T, dtype=torch.bool))[None],
                                      v.empty_kv(1))
        theirs = v._hf(inputs_embeds=x, position_ids=torch.arange(T)[None]).logits
        worst = max(worst, float((ours - theirs).abs().max()))
        agree += int((ours.argmax(-1) == theirs.argmax(-1)).sum())
        total += T
    return {"max_abs_logit_diff": worst, "argmax_agreement": agree / total}
