"""Fixtures for the runtime tests: tiny ONNX bundles built with ``onnx.helper`` (no torch), a fake
clock, simple command sources, and a pin-level robot double on gpiozero's ``MockFactory``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploy.bundle import write_bundle_json
from hardware.description import RobotDescription
from hardware.robot import Robot, robot_observation_features
from hardware.spec import Feature
from hardware.tasks import task_spec

# ---------------------------------------------------------------------------------- ONNX bundles


def _inputs(spec_obs: dict[str, Feature], history: int) -> list[Any]:
    from onnx import TensorProto, helper

    out = []
    for key, f in spec_obs.items():
        et = TensorProto.UINT8 if f.dtype == "uint8" else TensorProto.FLOAT
        out.append(helper.make_tensor_value_info(key, et, ["batch", history, *f.shape]))
    return out


def _save(
    nodes: list[Any],
    inits: list[Any],
    path: Path,
    desc: RobotDescription,
    task: str,
    history: int,
    name: str,
) -> Path:
    from onnx import TensorProto, checker, helper, save

    spec = task_spec(task, desc)
    graph = helper.make_graph(
        nodes,
        name,
        _inputs(spec.observation, history),
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    checker.check_model(model)
    path.mkdir(parents=True, exist_ok=True)
    save(model, str(path / "policy.onnx"))
    write_bundle_json(
        path,
        spec,
        history,
        policy={"arch": name, "head": "deterministic"},
        training={"dataset": "none", "steps": 0},
    )
    return path


def make_reach_bundle(
    path: Path,
    desc: RobotDescription,
    *,
    history: int = 2,
    kv: float = 2.0,
    kw: float = 1.2,
    creep: float = 0.25,
) -> Path:
    """A proportional go-to-goal controller on the newest observation of the window. With the goal
    error (ef along the heading, el across it, distance d):
    forward = kv * relu(ef) + creep * relu(ef / d) (the creep beats the motor deadband near the
    goal), turn = kw * el / (d + 0.05) (~ sine of the heading error); left/right = forward ∓ turn."""
    from onnx import helper, numpy_helper

    c = numpy_helper.from_array
    inits = [
        c(np.array(-1, np.int64), "last"),
        c(np.array([0], np.int64), "i0"),
        c(np.array([1], np.int64), "i1"),
        c(np.array([2], np.int64), "i2"),
        c(np.array([3], np.int64), "i3"),
        c(np.array([4], np.int64), "i4"),
        c(np.array([1], np.int64), "ax1"),
        c(np.array(kv, np.float32), "kv"),
        c(np.array(kw, np.float32), "kw"),
        c(np.array(creep, np.float32), "creep"),
        c(np.array(0.05, np.float32), "eps"),
        c(np.array(-1.0, np.float32), "lo"),
        c(np.array(1.0, np.float32), "hi"),
    ]
    n = helper.make_node
    nodes = [
        n("Gather", ["observation", "last"], ["o"], axis=1),
        n("Gather", ["achieved_goal", "last"], ["ag"], axis=1),
        n("Gather", ["desired_goal", "last"], ["dg"], axis=1),
        n("Sub", ["dg", "ag"], ["d"]),
        n("Slice", ["d", "i0", "i1", "ax1"], ["dx"]),
        n("Slice", ["d", "i1", "i2", "ax1"], ["dy"]),
        n("Slice", ["o", "i2", "i3", "ax1"], ["cs"]),
        n("Slice", ["o", "i3", "i4", "ax1"], ["sn"]),
        n("Mul", ["cs", "dx"], ["a1"]),
        n("Mul", ["sn", "dy"], ["a2"]),
        n("Add", ["a1", "a2"], ["ef"]),
        n("Mul", ["cs", "dy"], ["b1"]),
        n("Mul", ["sn", "dx"], ["b2"]),
        n("Sub", ["b1", "b2"], ["el"]),
        n("Mul", ["d", "d"], ["d2"]),
        n("ReduceSum", ["d2", "ax1"], ["dd"], keepdims=1),
        n("Sqrt", ["dd"], ["dist"]),
        n("Add", ["dist", "eps"], ["dist_e"]),
        n("Relu", ["ef"], ["ef_p"]),
        n("Mul", ["ef_p", "kv"], ["v1"]),
        n("Div", ["ef_p", "dist_e"], ["cos_p"]),
        n("Mul", ["cos_p", "creep"], ["v2"]),
        n("Add", ["v1", "v2"], ["v"]),
        n("Div", ["el", "dist_e"], ["sin_e"]),
        n("Mul", ["sin_e", "kw"], ["w"]),
        n("Sub", ["v", "w"], ["left"]),
        n("Add", ["v", "w"], ["right"]),
        n("Concat", ["left", "right"], ["raw"], axis=1),
        n("Clip", ["raw", "lo", "hi"], ["action"]),
    ]
    return _save(nodes, inits, path, desc, "reach", history, "p-controller")


def make_constant_bundle(
    path: Path,
    desc: RobotDescription,
    value: tuple[float, float],
    *,
    task: str = "reach",
    history: int = 1,
) -> Path:
    """A policy that always outputs ``value`` (NaN / inf allowed: no clip, like a broken net)."""
    from onnx import helper, numpy_helper

    c = numpy_helper.from_array
    inits = [
        c(np.array(-1, np.int64), "last"),
        c(np.array([0], np.int64), "i0"),
        c(np.array([1], np.int64), "i1"),
        c(np.array(0.0, np.float32), "zero"),
        c(np.array([value], np.float32), "value"),
    ]
    n = helper.make_node
    nodes = [
        n("Gather", ["observation", "last"], ["o"], axis=1),
        n("Slice", ["o", "i0", "i1", "i1"], ["o0"]),
        n("Mul", ["o0", "zero"], ["z"]),
        n("Add", ["z", "value"], ["action"]),
    ]
    return _save(nodes, inits, path, desc, task, history, "constant")


# ---------------------------------------------------------------------------------- clock


class FakeClock:
    """An injected monotonic clock; ``sleep`` advances it."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt

    def sleep(self, dt: float) -> None:
        self.t += max(0.0, dt)


# ---------------------------------------------------------------------------------- sources


@dataclass
class Cmd:
    """A command (same fields as deploy.teleop.Command)."""

    action: Any
    stamp: float | None
    source: str = "test"


@dataclass
class ScriptedSource:
    """A teleop double: returns ``action`` stamped now while ``alive``; the last command (with its
    old stamp) once silent, like a keyboard whose operator walked away."""

    action: Any = (0.5, 0.5)
    alive: bool = True
    pending_events: list[str] = field(default_factory=list)
    closed: bool = False
    name: str = "teleop"
    _last: Cmd | None = None

    def command(self, ctx: Any) -> Cmd | None:
        if self.alive:
            self._last = Cmd(self.action, ctx.now, self.name)
        return self._last

    def events(self) -> list[str]:
        ev, self.pending_events = self.pending_events, []
        return ev

    def close(self) -> None:
        self.closed = True


# ---------------------------------------------------------------------------------- robot


class PinRobot(Robot):
    """Two gpiozero ``Motor`` objects on ``MockFactory`` PWM pins, with a raw observation the test
    sets directly (fault injection: stale range, no echo, stale camera, sensor exceptions)."""

    def __init__(self, desc: RobotDescription, factory: Any, clock: FakeClock) -> None:
        self.description = desc
        self.factory = factory
        self.clock = clock
        self.left: Any = None
        self.right: Any = None
        self.stops = 0
        self.disconnected = False
        self.fail: Exception | None = None
        self.estop_button = False
        self.raw: dict[str, np.ndarray] = {
            "pose": np.zeros(3, np.float32),
            "wheel_speed": np.zeros(2, np.float32),
            "range": np.array([1.5], np.float32),
            "range_valid": np.array([1.0], np.float32),
            "range_age": np.array([0.01], np.float32),
            "image": np.zeros((desc.camera.height, desc.camera.width, 3), np.uint8),
            "image_age": np.array([0.01], np.float32),
        }
        self.bad_pin_states: list[tuple[float, float, float, float]] = []

    @property
    def observation_features(self) -> dict[str, Feature]:
        return robot_observation_features(self.description)

    @property
    def is_connected(self) -> bool:
        return self.left is not None

    def connect(self) -> None:
        from gpiozero import Motor

        m = self.description.motors
        self.left = Motor(m.left.forward, m.left.backward, pin_factory=self.factory)
        self.right = Motor(m.right.forward, m.right.backward, pin_factory=self.factory)

    def estop_pressed(self) -> bool:
        return self.estop_button

    def get_observation(self) -> dict[str, np.ndarray]:
        if self.fail is not None:
            raise self.fail
        return {k: v.copy() for k, v in self.raw.items()}

    def send_action(self, action: Any) -> np.ndarray:
        a = np.asarray(action, np.float64)
        self.left.value, self.right.value = float(a[0]), float(a[1])
        self._check_pins()
        return a.copy()

    def stop(self) -> None:
        self.stops += 1
        if self.left is not None:
            self.left.stop()
            self.right.stop()

    def disconnect(self) -> None:
        if self.left is not None:
            self.stop()
            self.left.close()
            self.right.close()
            self.left = self.right = None
        self.disconnected = True

    # pin inspection
    def pin_values(self) -> tuple[float, float, float, float]:
        """(left fwd, left bwd, right fwd, right bwd) PWM duty on the mock pins."""
        m = self.description.motors
        pins = (m.left.forward, m.left.backward, m.right.forward, m.right.backward)
        return tuple(float(self.factory.pin(p).state) for p in pins)  # type: ignore[return-value]

    def _check_pins(self) -> None:
        v = self.pin_values()
        if (v[0] > 0 and v[1] > 0) or (v[2] > 0 and v[3] > 0):
            self.bad_pin_states.append(v)
