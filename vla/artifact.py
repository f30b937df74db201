"""The reference model artifact: files plus a manifest that says what they are and how they came.

Layout of an artifact directory::

    manifest.json        format version, files (sha256, bytes), model config, codec (vocab_size,
                         n_bins, action statistics), tokenizer file, data hash, training commands,
                         metrics
    verifier.pt          verifier state dict (fp16)
    drafter.pt           drafter state dict (fp16), optional until the drafter is trained
    tokenizer.json       instruction tokenizer

``load_manifest`` checks every listed file exists and matches its hash, and raises
``ArtifactError`` naming the file otherwise; ``load_verifier`` / ``load_drafter`` build the
PyTorch modules in fp32. Writers go through ``write_manifest`` which records hashes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from edge.codec import ActionCodec, ActionStats
from edge.files import read_json, sha256_file
from vla.model import VLAConfig, Verifier
from edge.tokenizer import Tokenizer

FORMAT_VERSION = 1
REFERENCE_DIR = Path(__file__).resolve().parent.parent / "artifacts" / "reference"

__all__ = ["ArtifactError", "write_manifest", "load_manifest", "load_verifier", "load_drafter",
           "load_codec", "load_tokenizer", "save_state", "load_state", "REFERENCE_DIR"]


class ArtifactError(ValueError):
    """A missing, corrupt or inconsistent artifact file."""


def save_state(module: torch.nn.Module, path: Path, dtype=torch.float16) -> None:
    state = {k: v.detach().to(dtype) if v.is_floating_point() else v for k, v in module.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def write_manifest(root: Path, cfg: VLAConfig, stats: ActionStats, extra: dict) -> dict:
    """(Re)write ``manifest.json`` for the files present in ``root``, merging ``extra``."""
    root = Path(root)
    old = json.loads((root / "manifest.json").read_text()) if (root / "manifest.json").exists() else {}
    files = {}
    for name in ("verifier.pt", "drafter.pt", "tokenizer.json"):
        p = root / name
        if p.exists():
            files[name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    man = {**old, **extra}
    man.update({
        "format_version": FORMAT_VERSION,
        "files": files,
        "model": dataclasses.asdict(cfg),
        "codec": {"vocab_size": cfg.vocab_size, "n_bins": cfg.n_bins, "action": stats.to_json()},
    })
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps(man, indent=2))
    tmp.replace(root / "manifest.json")
    return man


def load_manifest(root: str | Path = REFERENCE_DIR, check_hashes: bool = True) -> dict:
    root = Path(root)
    path = root / "manifest.json"
    man = read_json(path, ArtifactError, f"manifest not found (is {root} a model artifact?)")
    if man.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: format_version: expected {FORMAT_VERSION}, got {man.get('format_version')!r}")
    for key in ("files", "model", "codec"):
        if key not in man:
            raise ArtifactError(f"{path}: missing field '{key}'")
    for name, meta in man["files"].items():
        p = root / name
        if not p.is_file():
            raise ArtifactError(f"{p}: listed in the manifest but missing")
        if check_hashes and sha256_file(p) != meta["sha256"]:
            raise ArtifactError(f"{p}: sha256 does not match the manifest (corrupt or replaced file)")
    cfg = VLAConfig(**man["model"])
    if man["codec"]["vocab_size"] != cfg.vocab_size or man["codec"]["n_bins"] != cfg.n_bins:
        raise ArtifactError(
            f"{path}: codec: vocab_size/n_bins {man['codec']['vocab_size']}/{man['codec']['n_bins']} "
            f"do not match the model's {cfg.vocab_size}/{cfg.n_bins}")
    return man


def load_state(path: str | Path) -> dict:
    """A saved state dict (fp16 or fp32) as fp32 tensors; ``ArtifactError`` naming the file if unreadable."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt pickle/zip
        raise ArtifactError(f"{path}: cannot load checkpoint: {exc}") from None
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_verifier(root: str | Path = REFERENCE_DIR) -> tuple[Verifier, dict]:
    root = Path(root)
    man = load_manifest(root)
    model = Verifier(VLAConfig(**man["model"]))
    state = load_state(root / "verifier.pt")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ArtifactError(f"{root / 'verifier.pt'}: does not match the manifest's model config: {exc}") from None
    return model.eval(), man


def load_drafter(root: str | Path = REFERENCE_DIR):
    from vla.drafter import Drafter, drafter_config

    root = Path(root)
    man = load_manifest(root)
    if "drafter.pt" not in man["files"]:
        raise ArtifactError(f"{root}: the manifest lists no drafter.pt (train it with `python -m vla.train drafter`)")
    d = Drafter(drafter_config(VLAConfig(**man["model"]), man.get("drafter", {}).get("ffn_dim")))
    state = load_state(root / "drafter.pt")
    try:
        d.load_state_dict(state)
    except RuntimeError as exc:
        raise ArtifactError(f"{root / 'drafter.pt'}: does not match the manifest's model config: {exc}") from None
    return d.eval()


def load_codec(man: dict) -> ActionCodec:
    c = man["codec"]
    return ActionCodec(ActionStats.from_json(c["action"], "manifest.json:codec.action"), c["vocab_size"], c["n_bins"])


def load_tokenizer(root: str | Path = REFERENCE_DIR) -> Tokenizer:
    return Tokenizer.load(Path(root) / "tokenizer.json")
