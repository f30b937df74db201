"""The runtime service's configuration (``python -m edge run --config robot.yaml``).

Frozen, typed dataclasses read by ``edge.config.load``; units in field names, one comment per
field. ``deploy/configs/embedded_default.yaml`` is the embedded default (the simulated world's
camera and controller emulator, ONNX Runtime on the CPU, the reference model).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from edge.policy import PolicyConfig

__all__ = ["CameraConfig", "SerialConfig", "ControlConfig", "InferenceConfig", "TelemetryConfig", "WorldConfig",
           "JobConfig", "ServiceConfig", "RunConfig"]


@dataclasses.dataclass(frozen=True)
class CameraConfig:
    uri: str = "sim://"  # sim://SOCKET (empty: the world's), v4l2:///dev/video0, gst://PIPELINE, file://EPISODE.npz
    max_age_ms: float = 250.0  # a frame older than this is stale: no action is computed from it
    stale_stop_ms: float = 1000.0  # no fresh frame for this long: safe stop (frozen or lost camera)
    replay_fps: float = 10.0  # file:// replay rate
    image_size_px: int = 64  # v4l2/gst frames are resized to this square size


@dataclasses.dataclass(frozen=True)
class SerialConfig:
    url: str = ""  # controller serial URL (/dev/ttyTHS0, a pty path); empty: the world's emulator pty
    baudrate: int = 1_000_000  # serial speed
    heartbeat_period_ms: float = 20.0  # host heartbeat period
    state_max_age_ms: float = 100.0  # an older JointState refuses commands and e-stops
    handshake_timeout_ms: float = 3000.0  # wait for HelloAck and the first state


@dataclasses.dataclass(frozen=True)
class ControlConfig:
    command_period_ms: float = 10.0  # joint command period of the control thread (100 Hz)
    policy_period_ms: float = 100.0  # one action = one end-effector delta per this period (the model's 10 Hz)
    interpolation: Literal["linear", "step", "minjerk"] = "linear"  # tool pose between actions: ramp over a policy
    # period, jump, or minimum jerk from rest to rest over the longer of a policy period and what the joint limits
    # allow (for inference.observe: after_motion, where every action starts from rest)
    ramp_limit_share: float = 0.8  # minjerk: plan for this share of the joints' velocity and acceleration limits
    overrun_policy: Literal["skip", "catch_up"] = "skip"  # late tick: drop missed deadlines, or run them back to back
    max_consecutive_overruns: int = 20  # this many late ticks in a row is a fault (safe stop)
    action_max_age_ms: float = 400.0  # no new action for this long: hold the last pose (counted)
    stale_stop_ms: float = 2000.0  # holding for lack of actions this long: safe stop (inference stalled)
    ik_max_iters: int = 8  # damped least squares iterations per command (warm started)
    workspace_min_m: tuple[float, float, float] = (0.2, -0.4, 0.045)  # commanded tool point box, base frame
    workspace_max_m: tuple[float, float, float] = (0.8, 0.4, 0.45)
    max_delta_m: float = 0.05  # largest translation per action, per axis
    max_delta_rad: float = 0.3  # largest rotation per action, per axis
    rt_priority: int = 0  # SCHED_FIFO priority of the control thread only (0: normal scheduling)
    switch_interval_s: float = 2e-4  # sys.setswitchinterval: short GIL slices keep the loop on time

    def __post_init__(self):
        if not 0 < self.ramp_limit_share <= 1:
            raise ValueError(f"ramp_limit_share: expected a share in (0, 1], got {self.ramp_limit_share}")


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    cpu_work: Literal["overlapped", "serial", "ab"] = "overlapped"  # step CPU work (telemetry, forward kinematics)
    # while the verifier runs, before it, or alternating per step to measure how much of it is hidden (ab)
    observe: Literal["after_motion", "newest"] = "newest"  # the frame an action is computed from: the newest one at
    # each policy period (free-running), or one captured after the previous action's commanded motion ended and at
    # least observe_min_ms after its first command (after_motion), as a model trained on stepped simulation saw
    # them (sim.env: one policy period of motion, then the image)
    observe_min_ms: float = 100.0  # after_motion: the frame is captured at least this long after the previous
    # action's first command (sim.env's physics time per action)
    observe_wait_max_ms: float = 400.0  # after_motion: wait at most this long after the previous action's first
    # command for its motion to end (counted as observe_timeouts)

    def __post_init__(self):
        for name in ("observe_min_ms", "observe_wait_max_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: expected a positive number, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class TelemetryConfig:
    summary_period_s: float = 10.0  # one summary log line every this many seconds
    steps_jsonl: str = "runs/edge_steps.jsonl"  # per-step JSON lines ("" disables)
    status_line: bool = True  # live status line on stderr when it is a terminal
    window: int = 2000  # samples kept per stage for the percentiles


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    command: tuple[str, ...] = ()  # start the simulated world (python -m sim.world ...); empty: none started
    control_socket: str = ""  # or connect to a running world's control socket; both empty: a real robot
    ready_timeout_s: float = 120.0  # wait for the world's banner line


@dataclasses.dataclass(frozen=True)
class JobConfig:
    suites: tuple[str, ...] = ("spatial", "object", "goal", "long")  # with a world: suites to run episodes of
    episodes_per_suite: int = 1  # episodes per suite (tasks in turn, seeds consecutive)
    seed_start: int = 100_000  # evaluation seeds, disjoint from the demonstrations'
    instruction: str = ""  # without a world: the instruction to follow until stopped
    max_steps: int = 0  # with a world: cap on policy steps per episode (0: the task's own budget)
    duration_s: float = 0.0  # without a world: stop after this long (0: until SIGTERM)


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    watchdog_healthy_cycles: int = 10  # WATCHDOG=1 only after this many healthy control cycles in a row
    stop_timeout_s: float = 3.0  # joining threads on stop


@dataclasses.dataclass(frozen=True)
class RunConfig:
    policy: PolicyConfig = dataclasses.field(default_factory=PolicyConfig)  # engines and decoder
    camera: CameraConfig = dataclasses.field(default_factory=CameraConfig)
    serial: SerialConfig = dataclasses.field(default_factory=SerialConfig)
    control: ControlConfig = dataclasses.field(default_factory=ControlConfig)
    inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)
    telemetry: TelemetryConfig = dataclasses.field(default_factory=TelemetryConfig)
    world: WorldConfig = dataclasses.field(default_factory=WorldConfig)
    job: JobConfig = dataclasses.field(default_factory=JobConfig)
    service: ServiceConfig = dataclasses.field(default_factory=ServiceConfig)
