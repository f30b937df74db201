"""Instruction tokenizer shipped with the reference model (word level, JSON on disk).

Pure Python: the robot runtime tokenizes instructions with it; the trainer builds it.

Contract:
- Ids 0..3 are ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``; words follow in a fixed order built
  from the training instructions and OpenVLA's prompt template. The text vocabulary occupies
  ids ``[0, n_text)``; action bins are the last 256 ids of the model vocabulary, never words.
- ``prompt_ids(instruction)`` tokenizes OpenVLA's prompt
  ``"In: What action should the robot take to {instruction}?\\nOut:"``, lower-cased, punctuation
  as separate words. Unknown words map to ``<unk>`` and are reported by ``unknown_words``.
- ``decode(encode(text)) == normalize(text)`` for text made of known words.
- Optional proprioception (``StateSpec``, saved in the same JSON): ``prompt_ids(instruction, obs)``
  then starts with one token per state value (the tool point ``ee_pos`` x, y, z in metres, base
  frame, and the finger opening ``gripper`` in metres), each its value's bin among ``n_bins`` equal
  bins over ``[lo, hi]`` (clipped), written as an action-bin id (``vocab_size - 1 - bin``), as
  pi0-FAST writes the robot state into its prompt. The model's input signature does not change.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Iterable

import numpy as np

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def normalize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclasses.dataclass(frozen=True)
class StateSpec:
    """Proprioceptive state written into the prompt as bin tokens (see the module contract)."""

    lo: tuple[float, ...] = (0.25, -0.35, 0.0, 0.0)  # ee x, y, z (m), finger opening (m)
    hi: tuple[float, ...] = (0.75, 0.35, 0.5, 0.085)
    vocab_size: int = 384  # the model's vocabulary; the last n_bins ids are the bins
    n_bins: int = 256

    def __post_init__(self):
        if len(self.lo) != 4 or len(self.hi) != 4 or not all(h > l for l, h in zip(self.lo, self.hi)):
            raise ValueError(f"state: expected 4 ranges lo < hi (ee x, y, z, gripper), got lo={self.lo} hi={self.hi}")

    def ids(self, obs: dict) -> list[int]:
        """State tokens of an observation with ``ee_pos`` [3] and ``gripper`` (m)."""
        missing = [k for k in ("ee_pos", "gripper") if k not in obs]
        if missing:
            raise ValueError(f"observation: the model reads the arm state, missing {missing} (has {sorted(obs)})")
        v = np.append(np.asarray(obs["ee_pos"], np.float64).reshape(3), float(obs["gripper"]))
        if not np.all(np.isfinite(v)):
            raise ValueError(f"observation: state must be finite, got ee_pos={obs['ee_pos']} gripper={obs['gripper']}")
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        b = np.clip(np.rint((v - lo) / (hi - lo) * (self.n_bins - 1)), 0, self.n_bins - 1).astype(np.int64)
        return [int(self.vocab_size - 1 - x) for x in b]

    def to_json(self) -> dict:
        return {"keys": ["ee_pos.x", "ee_pos.y", "ee_pos.z", "gripper"], "lo": list(self.lo), "hi": list(self.hi),
                "vocab_size": self.vocab_size, "n_bins": self.n_bins}

    @classmethod
    def from_json(cls, d: dict) -> "StateSpec":
        return cls(tuple(d["lo"]), tuple(d["hi"]), int(d["vocab_size"]), int(d["n_bins"]))


class Tokenizer:
    def __init__(self, words: Iterable[str], n_text: int, state: StateSpec | None = None):
        self.itos = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        if len(self.itos) > n_text:
            raise ValueError(f"tokenizer: {len(self.itos)} words do not fit n_text={n_text}")
        self.n_text = n_text
        self.state = state
        if state is not None and state.vocab_size - state.n_bins < n_text:
            raise ValueError(f"state: bin ids must lie above the text ids (n_text={n_text}), "
                             f"got vocab_size={state.vocab_size} n_bins={state.n_bins}")
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, instructions: Iterable[str], n_text: int, state: StateSpec | None = None) -> "Tokenizer":
        words: list[str] = []
        for text in [PROMPT.format(instruction="")] + sorted(set(instructions)):
            for w in normalize(text):
                if w not in words:
                    words.append(w)
        return cls(words, n_text, state)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(w, 3) for w in normalize(text)]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] if 0 <= i < len(self.itos) else "<unk>" for i in ids]

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in normalize(text) if w not in self.stoi]

    def text_ids(self, instruction: str) -> list[int]:
        """The prompt's words (no state tokens)."""
        return self.encode(PROMPT.format(instruction=instruction))

    def prompt_ids(self, instruction: str, obs: dict | None = None) -> list[int]:
        """The prompt's ids; with a ``StateSpec``, led by the state tokens of ``obs`` (required)."""
        text = self.text_ids(instruction)
        if self.state is None:
            return text
        if obs is None:
            raise ValueError("prompt_ids: this tokenizer writes the arm state into the prompt; pass the observation")
        return self.state.ids(obs) + text

    def to_json(self) -> dict:
        d = {"kind": "word", "n_text": self.n_text, "specials": list(SPECIALS), "itos": self.itos, "prompt": PROMPT}
        if self.state is not None:
            d["state"] = self.state.to_json()
        return d

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read tokenizer: {exc}") from None
        if d.get("kind") != "word" or d.get("itos", [])[: len(SPECIALS)] != list(SPECIALS):
            raise ValueError(f"{path}: not a word tokenizer of this project (kind={d.get('kind')!r})")
        try:
            state = StateSpec.from_json(d["state"]) if d.get("state") is not None else None
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: field 'state': expected lo, hi, vocab_size, n_bins ({exc})") from None
        return cls(d["itos"][len(SPECIALS):], int(d["n_text"]), state)
