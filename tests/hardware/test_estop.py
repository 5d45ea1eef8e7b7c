"""The e-stop button: a gpiozero Button, pulled up, pressed = low."""

from __future__ import annotations

from typing import Any

import numpy as np

from hardware.mock import make_mock_robot
from hardware.pi import EStopButton


def test_button_press_release_and_callback(plain_factory: Any) -> None:
    presses: list[int] = []
    button = EStopButton(21, pin_factory=plain_factory)
    try:
        button.on_press(lambda: presses.append(1))
        pin = plain_factory.pin(21)
        assert pin.pull == "up" and not button.pressed
        pin.drive_low()
        assert button.pressed and presses == [1] and button.press_count == 1
        pin.drive_high()
        assert not button.pressed and button.press_count == 1
    finally:
        button.close()


def test_estop_on_the_robot_stops_the_motors(make_desc: Any, clock: Any) -> None:
    robot = make_mock_robot(make_desc(safety={"estop_pin": 21}), clock=clock)
    seen: list[bool] = []
    with robot:
        robot.on_estop(lambda: seen.append(True))
        robot.send_action((0.8, 0.8))
        pins = robot.motor_pins
        assert float(pins["left"]["forward"].state) == 0.8
        robot.press_estop()
        assert robot.estop_pressed and seen == [True]
        assert all(float(p.state) == 0.0 for side in pins.values() for p in side.values())
        assert np.array_equal(robot.send_action((0.8, 0.8)), [0.0, 0.0])
        assert float(pins["left"]["forward"].state) == 0.0
        robot.release_estop()
        assert not robot.estop_pressed
        assert np.array_equal(robot.send_action((0.8, 0.8)), [0.8, 0.8])


def test_mock_has_an_estop_even_without_one_described(rover: Any, clock: Any) -> None:
    assert rover.safety.estop_pin is None
    robot = make_mock_robot(rover, clock=clock)
    with robot:
        robot.press_estop()
        assert robot.estop_pressed
