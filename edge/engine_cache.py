"""Engine set manifest and the cache key of device engines (written by export, checked by edge).

An engine set directory holds ONNX graphs (portable) and, on a device with TensorRT, engines
(tied to the GPU and the TensorRT version). ``engines.json`` lists every file with its sha256,
graph name, precision and, for a TensorRT engine, its ``EngineKey``. The robot runs an engine
only when the key matches what it sees now; otherwise it rebuilds (when allowed) or refuses.

The key: TensorRT version, GPU compute capability and name, the sha256 of the ONNX graph the
engine came from, and the build settings (precision, optimisation profiles, workspace).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from edge.files import read_json, sha256_file

__all__ = ["EngineKey", "EngineSetError", "sha256_file", "read_engine_set", "check_engine_key", "MANIFEST"]

MANIFEST = "engines.json"
FORMAT_VERSION = 1


class EngineSetError(ValueError):
    """A missing, corrupt or mismatched engine set, naming the file and the field."""


@dataclasses.dataclass(frozen=True)
class EngineKey:
    tensorrt_version: str  # e.g. "10.3.0"
    compute_capability: str  # e.g. "8.7" (Jetson AGX Orin)
    gpu_name: str  # e.g. "Orin"
    onnx_sha256: str  # hash of the graph the engine was built from
    settings: str  # canonical JSON of the build settings (precision, profiles, workspace)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def mismatches(self, other: "EngineKey") -> list[str]:
        return [f"{f.name}: engine has {getattr(self, f.name)!r}, this device needs {getattr(other, f.name)!r}"
                for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(other, f.name)]


def read_engine_set(root: str | Path, check_hashes: bool = True) -> dict:
    """Load and verify ``engines.json``: every listed file exists and matches its hash."""
    root = Path(root)
    path = root / MANIFEST
    man = read_json(path, EngineSetError, "not found (build it with `python -m export.build_engines`)")
    if man.get("format_version") != FORMAT_VERSION:
        raise EngineSetError(f"{path}: format_version: expected {FORMAT_VERSION}, got {man.get('format_version')!r}")
    for entry in man.get("files", []):
        p = root / entry["file"]
        if not p.is_file():
            raise EngineSetError(f"{p}: listed in {MANIFEST} but missing")
        if check_hashes and sha256_file(p) != entry["sha256"]:
            raise EngineSetError(f"{p}: sha256 does not match {MANIFEST} (corrupt or replaced)")
    return man


def check_engine_key(entry: dict, current: EngineKey) -> None:
    """Raise ``EngineSetError`` listing every field where a TensorRT engine's key differs."""
    if "key" not in entry:
        raise EngineSetError(f"{entry.get('file')}: TensorRT engine without a cache key; refusing to run it")
    built = EngineKey(**entry["key"])
    problems = built.mismatches(current)
    if problems:
        raise EngineSetError(f"{entry.get('file')}: built for another device or graph: " + "; ".join(problems))
