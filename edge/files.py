"""Small file helpers shared by the manifests and calibration files: content hashes, JSON reading
with clear errors, and atomic JSON writing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

__all__ = ["sha256_file", "read_json", "read_versioned_json", "field_error", "write_json_atomic"]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: str | Path, error: type[Exception], missing: str = "not found"):
    """Parse a JSON file; a missing or malformed file raises ``error`` naming the path."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON: {exc}") from None


def field_error(path: str | Path, error: type[Exception]):
    """``fail(field, expected, got)`` raising ``error`` as "<path>: field 'f': expected e, got g"."""

    def fail(field: str, expected, got):
        raise error(f"{path}: field '{field}': expected {expected}, got {got!r}")

    return fail


def read_versioned_json(path: str | Path, error: type[Exception], kind: str, version: int,
                        missing: str = "not found") -> dict:
    """Read a calibration-style document: a JSON object whose ``kind`` and ``version`` match."""
    doc = read_json(path, error, missing)
    fail = field_error(path, error)
    if not isinstance(doc, dict):
        fail("<root>", "a JSON object", type(doc).__name__)
    if doc.get("kind") != kind:
        fail("kind", repr(kind), doc.get("kind", "missing"))
    if doc.get("version") != version:
        fail("version", version, doc.get("version", "missing"))
    return doc


def write_json_atomic(doc, path: str | Path, indent: int = 2) -> Path:
    """Write ``doc`` as JSON to ``path`` through a temporary file renamed into place (a reader never
    sees half a file); creates the parent directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=indent))
    tmp.replace(path)
    return path
