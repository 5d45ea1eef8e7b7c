"""Wheel encoders past gpiozero's default ±16 steps, and odometry on the mock robot."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from hardware.mock import make_mock_robot
from hardware.pi import WheelEncoders


def _step(a: Any, b: Any, forward: bool) -> None:
    """One quadrature cycle on pulled-up encoder pins, as gpiozero's RotaryEncoder decodes it."""
    first, second = (a, b) if forward else (b, a)
    first.drive_low()
    second.drive_low()
    first.drive_high()
    second.drive_high()


def test_encoders_count_beyond_16_steps(plain_factory: Any) -> None:
    enc = WheelEncoders(24, 25, 26, 16, pin_factory=plain_factory)
    try:
        la, lb, ra, rb = (plain_factory.pin(n) for n in (24, 25, 26, 16))
        for _ in range(100):
            _step(la, lb, forward=True)
        for _ in range(40):
            _step(ra, rb, forward=False)
        assert enc.steps() == (100, -40)
    finally:
        enc.close()


def _drive(
    robot: Any, clock: Any, action: tuple[float, float], seconds: float, rate: float = 20.0
) -> dict[str, np.ndarray]:
    obs = robot.get_observation()
    for _ in range(round(seconds * rate)):
        robot.send_action(action)
        clock.advance(1.0 / rate)
        obs = robot.get_observation()
    return obs


def test_straight_line_odometry_from_encoders(rover: Any, clock: Any) -> None:
    robot = make_mock_robot(rover, clock=clock)
    with robot:
        obs = _drive(robot, clock, (1.0, 1.0), seconds=1.0)
        steps = robot.encoders.steps()
        assert steps[0] == steps[1] > 16
        r, tpr = rover.geometry.wheel_radius, rover.encoders.ticks_per_rev
        x, y, th = obs["pose"]
        assert x == pytest.approx(robot.true_wheel_angle[0] * r, abs=2 * math.tau / tpr * r)
        assert abs(y) < 1e-6 and abs(th) < 1e-6
        # wheel speed settles near max_wheel_speed (0.08 s motor lag << 1 s)
        assert obs["wheel_speed"] == pytest.approx([rover.motors.max_wheel_speed] * 2, rel=0.05)


def test_spin_in_place_odometry_from_encoders(rover: Any, clock: Any) -> None:
    robot = make_mock_robot(rover, clock=clock)
    with robot:
        obs = _drive(robot, clock, (-0.5, 0.5), seconds=0.5)
        left, right = robot.encoders.steps()
        assert abs(left + right) <= 1 and right > 16  # quantization of the two wheels
        g = rover.geometry
        expected = 2 * g.wheel_radius * robot.true_wheel_angle[1] / g.track_width
        expected = (expected + math.pi) % math.tau - math.pi
        x, y, th = obs["pose"]
        assert th == pytest.approx(expected, abs=0.03)
        assert abs(x) < 1e-3 and abs(y) < 1e-3
        assert obs["wheel_speed"][0] < 0 < obs["wheel_speed"][1]


def test_without_encoders_pose_integrates_the_applied_command(make_desc: Any, clock: Any) -> None:
    desc = make_desc(encoders={"enabled": False}, motors={"deadband": 0.0})
    robot = make_mock_robot(desc, clock=clock)
    with robot:
        assert robot.encoders is None
        obs = _drive(robot, clock, (0.5, 0.5), seconds=1.0)
        expected = 0.5 * desc.motors.max_wheel_speed * desc.geometry.wheel_radius * 1.0
        assert obs["pose"][0] == pytest.approx(expected, rel=1e-4)
        assert obs["wheel_speed"] == pytest.approx([0.5 * desc.motors.max_wheel_speed] * 2)


def test_reset_odometry_sets_the_pose(rover: Any, clock: Any) -> None:
    robot = make_mock_robot(rover, clock=clock)
    with robot:
        _drive(robot, clock, (1.0, 1.0), seconds=0.5)
        robot.reset_odometry((1.0, 2.0, 0.5))
        robot.stop()
        obs = robot.get_observation()
        assert obs["pose"] == pytest.approx([1.0, 2.0, 0.5], abs=0.02)  # only the coast-down after
