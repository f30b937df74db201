"""Fault injection on a link's outgoing bytes, seeded and counted.

``FaultInjector(spec, seed)`` is a ``tx_filter`` for ``transport.Link``: given one encoded frame
it returns the bytes to put on the wire, after, with the configured probabilities, dropping the
frame, flipping one bit, duplicating it, holding it back to send after the next one
(reordering), delaying it (``delay_ms``), or truncating it. ``parse_spec("drop=0.01,flip=0.01")``
reads the ``--inject`` syntax. ``counts`` records what was done, so a test can check that every
corruption was caught by the receiver's decoder.
"""

from __future__ import annotations

import dataclasses
import random
import time

__all__ = ["FaultSpec", "FaultInjector", "parse_spec"]


@dataclasses.dataclass(frozen=True)
class FaultSpec:
    drop: float = 0.0  # probability a frame is dropped
    flip: float = 0.0  # probability one bit of a frame is flipped
    duplicate: float = 0.0  # probability a frame is sent twice
    reorder: float = 0.0  # probability a frame is held back and sent after the next one
    truncate: float = 0.0  # probability a frame loses its tail (and its delimiter)
    delay: float = 0.0  # probability a frame is delayed by delay_ms
    delay_ms: float = 5.0


def parse_spec(text: str) -> FaultSpec:
    fields = {f.name for f in dataclasses.fields(FaultSpec)}
    kw = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise ValueError(f"--inject {part!r}: expected NAME=PROBABILITY, e.g. flip=0.01")
        k, v = part.split("=", 1)
        if k not in fields:
            raise ValueError(f"--inject: unknown fault {k!r}; valid: {sorted(fields)}")
        kw[k] = float(v)
    return FaultSpec(**kw)


class FaultInjector:
    def __init__(self, spec: FaultSpec, seed: int = 0):
        self.spec = spec
        self.rng = random.Random(seed)
        self.held: bytes | None = None
        self.counts = {k: 0 for k in ("frames", "drop", "flip", "duplicate", "reorder", "truncate", "delay")}

    def __call__(self, frame: bytes) -> bytes:
        s, r = self.spec, self.rng
        self.counts["frames"] += 1
        out = frame
        if r.random() < s.drop:
            self.counts["drop"] += 1
            out = b""
        elif r.random() < s.flip:
            self.counts["flip"] += 1
            b = bytearray(frame)
            i = r.randrange(len(b) - 1)  # never the delimiter itself
            b[i] ^= 1 << r.randrange(8)
            out = bytes(b)
        elif r.random() < s.truncate:
            self.counts["truncate"] += 1
            out = frame[: r.randrange(1, len(frame) - 1)]
        if out and r.random() < s.duplicate:
            self.counts["duplicate"] += 1
            out = out + out
        if out and r.random() < s.delay:
            self.counts["delay"] += 1
            time.sleep(s.delay_ms / 1000)
        if out and self.held is None and r.random() < s.reorder:
            self.counts["reorder"] += 1
            self.held = out
            return b""
        if self.held is not None:
            out, self.held = out + self.held, None
        return out
