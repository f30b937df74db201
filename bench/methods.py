"""Benchmark method names -> ``edge.policy.PolicyConfig`` (the runtime's own configuration).

Names (``python -m bench --methods ...``):

- ``ar``: plain greedy decoding (prefill + 6 decode passes), the baseline.
- ``chain-rR`` / ``tree-rR``: Spec-VLA speculative decoding, chain or EAGLE-2 tree drafts,
  relaxed acceptance at R bins (R = 0: exact). A tree's shape can follow: ``tree-r5-k2-n12`` is
  top_k 2 children per expansion and 12 nodes verified per pass (``-dD`` sets the depth); a chain's
  length as ``chain-r5-l4``. Unset parts keep ``edge.policy.DecoderConfig``'s defaults.
- ``specvla``: ``tree-rR`` at ``--r`` (Spec-VLA relaxed).
- ``kerv``: Spec-VLA + KERV (compensation of rejected tails with the cooldown, Kalman branches in
  the draft trees, the dynamic threshold), from the ``--kerv`` file.
- ``heisd``: Spec-VLA + HeiSD (the top retrieved actions verified in the prefill with the group
  rule, verify-skip under the calibrated bound, the fused-metric switch), from ``--retrieval``.
- ``dyq``: Spec-VLA + DyQ-VLA (per-step verifier precision from the kinematic sensitivity, over
  ``--dyq-levels``).
- ``full``: all of the above plus the Kalman forecast as a one-pass candidate, planned per step,
  with every whole-action candidate (the Kalman forecast, the retrieved actions) checked exactly
  (``candidate_rule: token``, ``candidate_threshold_bins: 0``). The group rule (``heisd``'s, the
  paper's) or a relaxed token rule on candidates cost 12 to 28 points of success in the full stack
  (README "Benchmarks"): an accepted forecast keeps the arm's momentum and its errors add up step
  after step. The drafter's tokens keep the step's relaxed rule (Spec-VLA's, KERV's threshold).

Variants (``--variant NAME=BASE:KEY=VALUE;KEY=VALUE``): method ``BASE`` with ``PolicyConfig``
fields overridden, by the same dotted keys and checks as ``python -m edge run --set`` (e.g.
``full-group=full:kinematic.step.candidate_rule=group;kinematic.step.candidate_threshold_bins=null``,
the full stack with HeiSD's group rule on candidates as it was before exact candidates),
so configurations are compared side by side in one run without new method names in code.

A method whose calibration file is missing is an error naming the file and the command that
writes it (``python -m calib kerv`` / ``python -m calib retrieval``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edge.config import ConfigError, apply_overrides, from_dict, to_dict
from edge.kinematic import KinematicConfig
from edge.policy import DecoderConfig, PolicyConfig
from edge.step_policy import StepPolicyConfig

__all__ = ["MethodFiles", "method_config", "parse_variants", "KINEMATIC_METHODS"]

KINEMATIC_METHODS = ("kerv", "heisd", "dyq", "full")


@dataclasses.dataclass(frozen=True)
class MethodFiles:
    r_bins: int = 5  # Spec-VLA's relaxed threshold for specvla and the kinematic methods' base
    kerv: str = ""  # calib kerv output
    retrieval: str = ""  # calib retrieval calibration JSON
    dyq: str = ""  # calib dyq output; when given it sets the ladder and scales (levels and bounds below unused)
    dyq_levels: tuple[str, ...] = ("int8", "fp32")
    dyq_bounds: tuple[float, ...] = (0.5,)
    variants: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (name, base method, overrides): parse_variants


def _need(path: str, what: str, command: str) -> str:
    if not path or not Path(path).is_file():
        raise ValueError(f"method needs {what}: {path or '(not given)'} not found; write it with `{command}`")
    return path


_SHAPE_KEYS = {"tree": {"k": "top_k", "d": "depth", "n": "total_tokens"}, "chain": {"l": "chain_len"}}


def spec_decoder(name: str) -> DecoderConfig:
    """``chain-rR[-lL]`` / ``tree-rR[-kK][-dD][-nN]`` -> the speculative ``DecoderConfig`` it names."""
    kind, *parts = name.split("-")
    keys = _SHAPE_KEYS[kind]
    expected = f"expected {kind}-rR" + "".join(f"[-{k}N]" for k in keys) + " with integers"
    if not parts or not parts[0].startswith("r") or not parts[0][1:].isdigit():
        raise ValueError(f"method {name!r}: {expected}")
    fields = {"threshold_bins": int(parts[0][1:])}
    for part in parts[1:]:
        key, val = part[:1], part[1:]
        if key not in keys or not val.isdigit() or keys[key] in fields:
            raise ValueError(f"method {name!r}: {part!r}: {expected}")
        fields[keys[key]] = int(val)
    return DecoderConfig(method="speculative", draft=kind, **fields)


def parse_variants(specs) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """``NAME=BASE:KEY=VALUE;KEY=VALUE`` strings -> (name, base, overrides); malformed ones raise."""
    out, seen = [], set()
    for spec in specs:
        name, sep, rest = spec.partition("=")
        base, sep2, sets = rest.partition(":")
        name, base = name.strip(), base.strip()
        overrides = tuple(x.strip() for x in sets.split(";") if x.strip())
        if not sep or not sep2 or not name or not base or not overrides or any("=" not in o for o in overrides):
            raise ValueError(f"--variant {spec!r}: expected NAME=BASE:KEY=VALUE[;KEY=VALUE...], e.g. "
                             "full-tok=full:kinematic.step.candidate_rule=token")
        if name in seen or name == base:
            raise ValueError(f"--variant {spec!r}: the name {name!r} is already used")
        seen.add(name)
        out.append((name, base, overrides))
    return tuple(out)


def method_config(name: str, base: PolicyConfig, files: MethodFiles) -> PolicyConfig:
    for vname, vbase, overrides in files.variants:
        if vname == name:
            cfg = method_config(vbase, base, dataclasses.replace(files, variants=()))
            try:
                data = apply_overrides(to_dict(cfg), overrides, PolicyConfig)
            except ConfigError as exc:
                raise ValueError(f"--variant {name}: {exc}") from None
            return from_dict(PolicyConfig, data, f"--variant {name}")  # a bad value: ConfigError (a ValueError)
    if name == "ar":
        return dataclasses.replace(base, decoder=DecoderConfig(method="ar"), kinematic=None)
    if name == "specvla":
        name = f"tree-r{files.r_bins}"
    if name.startswith(("chain-r", "tree-r")):
        return dataclasses.replace(base, decoder=spec_decoder(name), kinematic=None)
    if name not in KINEMATIC_METHODS:
        raise ValueError(f"method {name!r}: expected ar, specvla, chain-rR, tree-rR or one of {', '.join(KINEMATIC_METHODS)}")
    kerv = name in ("kerv", "full")
    retrieval = name in ("heisd", "full")
    dyq = name in ("dyq", "full")
    full = name == "full"
    step = StepPolicyConfig(onepass=name in ("heisd", "full"), kf_candidate=full,
                            retrieval_candidates=2 if retrieval else 0, verify_skip=retrieval,
                            candidate_rule="token" if full else "group",
                            candidate_threshold_bins=0 if full else None)
    kin = KinematicConfig(
        kerv_file=_need(files.kerv, "a KERV file (--kerv)", "python -m calib kerv") if kerv else "",
        retrieval_file=_need(files.retrieval, "a retrieval file (--retrieval)", "python -m calib retrieval") if retrieval else "",
        precision=base.precision, threshold_bins=files.r_bins, use_kerv=kerv, use_retrieval=retrieval, use_dyq=dyq,
        dyq_file=_need(files.dyq, "a DyQ file (--dyq)", "python -m calib dyq") if dyq and files.dyq else "",
        dyq_levels=tuple(files.dyq_levels), dyq_bounds=tuple(files.dyq_bounds), step=step)
    return dataclasses.replace(base, decoder=DecoderConfig(method="speculative", threshold_bins=files.r_bins),
                               kinematic=kin)
