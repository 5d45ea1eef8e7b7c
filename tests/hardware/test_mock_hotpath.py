"""The per-tick fast paths of PiRobot / MockRobot keep their contract."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import hardware.mock as mock
from hardware.description import load_description
from hardware.mock import make_mock_robot
from hardware.pi import target_wheel_speed, wheel_speed_for_duty
from hardware.robot import sanitize_action

MOTORS = load_description("rover").motors


@settings(max_examples=300, deadline=None)
@given(
    duty=st.floats(-1.0, 1.0, allow_nan=False),
    deadband=st.floats(0.0, 0.9),
    max_speed=st.floats(0.5, 200.0),
)
def test_scalar_motor_model_matches_the_vector_one(
    duty: float, deadband: float, max_speed: float
) -> None:
    motors = dataclasses.replace(MOTORS, deadband=deadband, max_wheel_speed=max_speed)
    want = target_wheel_speed(np.array([duty, -duty]), motors)
    got = [wheel_speed_for_duty(duty, motors), wheel_speed_for_duty(-duty, motors)]
    assert got == list(want)  # bit for bit (up to the sign of zero)


@given(
    a=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=2, max_size=2),
    m=st.floats(0.05, 1.0),
)
def test_sanitize_action_checks_finiteness_before_clamping(a: list[float], m: float) -> None:
    out, ok = sanitize_action(a, m)
    assert out.dtype == np.float64 and out.shape == (2,)
    if all(math.isfinite(v) for v in a):
        assert ok and list(out) == list(np.clip(np.array(a), -m, m))
    else:
        assert not ok and list(out) == [0.0, 0.0]


def test_phase_enable_inverted_wheel_model_reads_the_cached_pins(
    make_desc: Any, clock: Any
) -> None:
    desc = make_desc(
        motors={
            "driver": "phase_enable",
            "left": {"forward": None, "backward": None, "phase": 17, "enable": 12},
            "right": {"forward": None, "backward": None, "phase": 22, "enable": 13},
            "invert_left": True,
        }
    )
    with make_mock_robot(desc, clock=clock) as robot:
        robot.send_action((0.5, -0.5))
        assert robot._physical_duty() == (0.5, -0.5)  # software inversion undone by the wiring
        for _ in range(20):
            clock.advance(0.05)
            robot.send_action((0.5, -0.5))
        left, right = robot.encoders.steps()
        assert left > 16 and right < -16


def test_encoder_pin_history_stays_bounded(rover: Any, clock: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(mock, "_MAX_PIN_HISTORY", 200)
    e = rover.encoders
    with make_mock_robot(rover, clock=clock) as robot:
        for _ in range(40):  # 2 s at full duty: ~2000 steps, ~4000 edges per pin
            robot.send_action((1.0, 1.0))
            clock.advance(0.05)
        robot.get_observation()
        steps = robot.encoders.steps()
        assert steps[0] > 1000 and steps == tuple(robot._emitted)  # every step still counted
        for pin in (e.left_a, e.left_b, e.right_a, e.right_b):
            assert len(robot.factory.pin(pin).states) <= 200 + 2
