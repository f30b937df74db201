"""YAML configuration into frozen, typed dataclasses.

Contract:
- ``load(cls, path, overrides)`` reads a YAML mapping and builds ``cls`` (a frozen dataclass,
  possibly nested). Every key must name a field: an unknown key is a ``ConfigError`` that names
  the file, the dotted key and the closest valid field ("did you mean ...").
- Values are type-checked against the field annotations (int, float, bool, str, Optional[...],
  tuple[...] / list[...] of scalars, Literal[...], nested dataclasses, dict[str, X]). An int is
  accepted for a float field; a bool is never accepted for a number.
- ``overrides`` are strings ``a.b=value`` (from ``--set``); the value is parsed as YAML and then
  checked like any other value, so ``--set control.period_ms=abc`` fails with the field's type.
- Missing fields take their dataclass default; a missing field without a default is an error.

The module has no knowledge of any particular configuration: each package declares its own
dataclasses (units in field names, a comment on each field) and calls ``load``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")

__all__ = ["ConfigError", "load", "from_dict", "apply_overrides", "to_dict"]


class ConfigError(ValueError):
    """A configuration problem, with where it was found and what was expected."""


def _suggest(name: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp`` and convert containers; raise ConfigError."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, where)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        if len(errors) == 1:  # Optional[X]: X's own error names the field (and a "did you mean")
            raise ConfigError(errors[0])
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"{where}: expected one of {list(allowed)}, got {value!r}{_suggest(str(value), map(str, allowed))}"
            )
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            items = [_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items)  # frozen configs hold tuples, never lists
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        ktp, vtp = get_args(tp) or (Any, Any)
        return {
            _convert(k, ktp, f"{where} key"): _convert(v, vtp, f"{where}.{k}") for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected bool, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected str, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _build(cls: type[T], data: dict, where: str) -> T:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            dotted = f"{where}.{key}" if where else str(key)
            raise ConfigError(f"unknown key '{dotted}'{_suggest(str(key), fields)}")
    kwargs = {}
    for name, field in fields.items():
        sub = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], sub)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{sub}: required field is missing")
        elif dataclasses.is_dataclass(hints[name]) and field.default_factory is not dataclasses.MISSING:
            kwargs[name] = field.default_factory()
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # __post_init__ validation
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def to_dict(cfg: Any) -> dict:
    """A plain nested dict of a config dataclass (tuples become lists), for logging and YAML."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def apply_overrides(data: dict, overrides: typing.Iterable[str], cls: type | None = None) -> dict:
    """Apply ``a.b=value`` strings to a nested dict (in a copy). Paths are checked against
    ``cls`` when given, so a typo in ``--set`` gets the same "did you mean" as in the file."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. control.period_ms=20")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node, tp = out, cls
        for i, part in enumerate(parts):
            if tp is not None and dataclasses.is_dataclass(tp):
                names = [f.name for f in dataclasses.fields(tp)]
                if part not in names:
                    raise ConfigError(
                        f"--set {key}: unknown key '{'.'.join(parts[: i + 1])}'{_suggest(part, names)}"
                    )
                tp = get_type_hints(tp)[part]
            else:
                tp = None
            if i == len(parts) - 1:
                node[part] = yaml.safe_load(raw)
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node = child
    return out


def from_dict(cls: type[T], data: dict | None, source: str = "<dict>") -> T:
    """Build ``cls`` from a mapping; errors are prefixed with ``source``."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at top level, got {type(data).__name__}")
    try:
        return _build(cls, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load(cls: type[T], path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> T:
    """Load ``cls`` from a YAML file (or defaults when ``path`` is None) plus ``--set`` overrides."""
    data: dict = {}
    source = "<defaults>"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at top level, got {type(data).__name__}")
    overrides = list(overrides)
    if overrides:
        try:
            data = apply_overrides(data, overrides, cls)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return from_dict(cls, data, source)
