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
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def normalize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class Tokenizer:
    def __init__(self, words: Iterable[str], n_text: int):
        self.itos = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        if len(self.itos) > n_text:
            raise ValueError(f"tokenizer: {len(self.itos)} words do not fit n_text={n_text}")
        self.n_text = n_text
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, instructions: Iterable[str], n_text: int) -> "Tokenizer":
        words: list[str] = []
        for text in [PROMPT.format(instruction="")] + sorted(set(instructions)):
            for w in normalize(text):
                if w not in words:
                    words.append(w)
        return cls(words, n_text)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(w, 3) for w in normalize(text)]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] if 0 <= i < len(self.itos) else "<unk>" for i in ids]

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in normalize(text) if w not in self.stoi]

    def prompt_ids(self, instruction: str) -> list[int]:
        return self.encode(PROMPT.format(instruction=instruction))

    def to_json(self) -> dict:
        return {"kind": "word", "n_text": self.n_text, "specials": list(SPECIALS), "itos": self.itos,
                "prompt": PROMPT}

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
        return cls(d["itos"][len(SPECIALS):], int(d["n_text"]))
