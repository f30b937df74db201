"""The YAML -> frozen dataclass loader: types, defaults, unknown keys, overrides."""

import dataclasses
from typing import Literal, Optional

import pytest

from edge import config as cfgmod
from edge.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Control:
    period_ms: float = 20.0  # control period
    max_vel_rad_s: tuple[float, ...] = (1.0, 2.0)  # per joint
    mode: Literal["position", "velocity"] = "position"  # command mode


@dataclasses.dataclass(frozen=True)
class Robot:
    name: str  # required
    control: Control = dataclasses.field(default_factory=Control)
    port_url: Optional[str] = None  # serial URL
    spare: Optional[Control] = None  # an optional nested block
    retries: int = 3
    enabled: bool = True

    def __post_init__(self):
        if self.retries < 0:
            raise ValueError(f"retries: expected >= 0, got {self.retries}")


def write(tmp_path, text):
    p = tmp_path / "robot.yaml"
    p.write_text(text)
    return p


def test_loads_nested_with_defaults(tmp_path):
    cfg = cfgmod.load(Robot, write(tmp_path, "name: arm\ncontrol:\n  period_ms: 10\n"))
    assert cfg.name == "arm"
    assert cfg.control.period_ms == 10.0 and isinstance(cfg.control.period_ms, float)
    assert cfg.control.max_vel_rad_s == (1.0, 2.0)
    assert cfg.port_url is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "other"


def test_unknown_key_suggests(tmp_path):
    p = write(tmp_path, "name: arm\ncontrol:\n  period_sm: 10\n")
    with pytest.raises(ConfigError) as e:
        cfgmod.load(Robot, p)
    msg = str(e.value)
    assert str(p) in msg and "control.period_sm" in msg and "did you mean 'period_ms'" in msg


def test_unknown_key_in_optional_block_suggests(tmp_path):
    assert cfgmod.load(Robot, write(tmp_path, "name: arm\nspare:\n  period_ms: 5\n")).spare.period_ms == 5.0
    with pytest.raises(ConfigError, match=r"spare.period_sm' \(did you mean 'period_ms'\?\)"):
        cfgmod.load(Robot, write(tmp_path, "name: arm\nspare:\n  period_sm: 5\n"))


def test_wrong_type_names_field_expected_and_got(tmp_path):
    with pytest.raises(ConfigError, match=r"control.period_ms: expected float, got 'fast'"):
        cfgmod.load(Robot, write(tmp_path, "name: arm\ncontrol: {period_ms: fast}\n"))
    with pytest.raises(ConfigError, match=r"retries: expected int, got True"):
        cfgmod.load(Robot, write(tmp_path, "name: arm\nretries: true\n"))
    with pytest.raises(ConfigError, match=r"expected one of \['position', 'velocity'\]"):
        cfgmod.load(Robot, write(tmp_path, "name: arm\ncontrol: {mode: torque}\n"))


def test_missing_required_and_validation(tmp_path):
    with pytest.raises(ConfigError, match="name: required field is missing"):
        cfgmod.load(Robot, write(tmp_path, "retries: 1\n"))
    with pytest.raises(ConfigError, match="retries: expected >= 0"):
        cfgmod.load(Robot, write(tmp_path, "name: a\nretries: -1\n"))


def test_overrides_are_type_checked(tmp_path):
    p = write(tmp_path, "name: arm\n")
    cfg = cfgmod.load(Robot, p, ["control.period_ms=5", "port_url=pty://", "control.max_vel_rad_s=[1, 1, 1]"])
    assert cfg.control.period_ms == 5.0 and cfg.port_url == "pty://"
    assert cfg.control.max_vel_rad_s == (1.0, 1.0, 1.0)
    with pytest.raises(ConfigError, match="control.period_ms: expected float, got 'abc'"):
        cfgmod.load(Robot, p, ["control.period_ms=abc"])
    with pytest.raises(ConfigError, match="did you mean 'control.period_ms'|did you mean 'period_ms'"):
        cfgmod.load(Robot, p, ["control.periodms=3"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        cfgmod.load(Robot, p, ["control.period_ms"])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        cfgmod.load(Robot, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected a mapping at top level"):
        cfgmod.load(Robot, write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        cfgmod.load(Robot, write(tmp_path, "name: [unclosed\n"))


def test_to_dict_round_trip(tmp_path):
    cfg = cfgmod.load(Robot, write(tmp_path, "name: arm\n"))
    again = cfgmod.from_dict(Robot, cfgmod.to_dict(cfg))
    assert again == cfg
