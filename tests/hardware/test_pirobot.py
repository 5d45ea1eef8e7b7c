"""The PiRobot contract on gpiozero mock pins (the ``--backend mock`` robot)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

from hardware.errors import DeviceError
from hardware.mock import make_mock_robot
from hardware.pi import PiRobot
from hardware.robot import robot_observation_features


def _all_motor_pins(robot: Any) -> list[Any]:
    return [p for side in robot.motor_pins.values() for p in side.values()]


def test_features_and_observation_match_the_contract(rover: Any, clock: Any) -> None:
    # The mock echo is timed with real sleeps: under load a reading comes out long (about 17 cm per
    # ms of scheduling delay), never short. A near obstacle leaves ~10 ms of slack before 2 m.
    robot = make_mock_robot(rover, clock=clock, echo_distance=0.3)
    assert robot.observation_features == robot_observation_features(rover)
    with robot:
        obs = robot.get_observation()
        feats = robot.observation_features
        assert list(obs) == list(feats)
        for key, feat in feats.items():
            assert obs[key].shape == feat.shape, key
            assert obs[key].dtype == np.dtype(feat.dtype), key
        assert obs["range_valid"][0] == 1.0 and 0.27 < obs["range"][0] < 1.9  # echo at 0.3 m
        assert obs["range_age"][0] == 0.0 and obs["image_age"][0] < 1 / 30 + 1e-6


def test_features_without_camera_and_ultrasonic(make_desc: Any, clock: Any) -> None:
    desc = make_desc(camera={"enabled": False}, ultrasonic={"enabled": False})
    with make_mock_robot(desc, clock=clock) as robot:
        assert set(robot.get_observation()) == {"pose", "wheel_speed"}
        assert robot.observation_features == robot_observation_features(desc)


def test_nothing_opened_before_connect_and_disconnect_is_idempotent(rover: Any, clock: Any) -> None:
    robot = make_mock_robot(rover, clock=clock)
    assert not robot.is_connected and robot.drive is None and robot.pin_factory is None
    with pytest.raises(DeviceError, match="not connected"):
        robot.get_observation()
    with pytest.raises(DeviceError, match="not connected"):
        robot.send_action((0.1, 0.1))
    robot.disconnect()  # before connect: no-op
    robot.connect()
    robot.connect()  # no-op
    robot.send_action((0.4, 0.4))
    robot.disconnect()
    robot.disconnect()
    assert not robot.is_connected and robot.drive is None and robot.ranger is None
    assert all(float(p.state) == 0.0 for p in _all_motor_pins(robot))
    # every gpiozero device was closed: the same pins can be claimed again
    from gpiozero import Button, Motor, RotaryEncoder

    Motor(17, 18, pin_factory=robot.factory).close()
    RotaryEncoder(24, 25, pin_factory=robot.factory).close()
    Button(robot.estop_pin_number, pin_factory=robot.factory).close()
    # and the robot reconnects
    with robot:
        assert robot.get_observation()["range_valid"][0] == 1.0


def test_context_manager_disconnects_on_error(rover: Any, clock: Any) -> None:
    robot = make_mock_robot(rover, clock=clock)
    with pytest.raises(RuntimeError), robot:
        robot.send_action((0.5, 0.5))
        raise RuntimeError("boom")
    assert not robot.is_connected
    assert all(float(p.state) == 0.0 for p in _all_motor_pins(robot))


def test_send_action_sanitizes_nan_clamps_and_stops(make_desc: Any, clock: Any) -> None:
    robot = make_mock_robot(make_desc(safety={"max_duty": 0.6}), clock=clock)
    with robot:
        pins = robot.motor_pins
        assert np.array_equal(robot.send_action((0.5, -2.0)), [0.5, -0.6])
        assert float(pins["left"]["forward"].state) == 0.5
        assert float(pins["right"]["backward"].state) == 0.6
        applied = robot.send_action((float("nan"), 0.3))
        assert np.array_equal(applied, [0.0, 0.0])
        assert all(float(p.state) == 0.0 for p in _all_motor_pins(robot))  # stopped, not "last"
        robot.send_action((0.3, 0.3))
        robot.stop()
        assert all(float(p.state) == 0.0 for p in _all_motor_pins(robot))
        with pytest.raises(ValueError):
            robot.send_action((0.1, 0.2, 0.3))


def test_no_echo_and_stale_range_are_reported(rover: Any, clock: Any) -> None:
    robot = make_mock_robot(rover, clock=clock, echo_distance=None)
    with robot:
        obs = robot.get_observation()
        assert obs["range_valid"][0] == 0.0 and obs["range"][0] == rover.ultrasonic.max_distance
        robot.set_echo_distance(0.3)
        robot.ranger.measure()
        obs = robot.get_observation()
        assert obs["range_valid"][0] == 1.0 and obs["range"][0] < rover.ultrasonic.max_distance
        robot.freeze_range()
        robot.ranger.measure()
        clock.advance(0.5)
        assert robot.get_observation()["range_age"][0] == pytest.approx(0.5)
        robot.freeze_range(False)


def test_stale_camera_is_reported_as_age(rover: Any, clock: Any) -> None:
    with make_mock_robot(rover, clock=clock) as robot:
        robot.freeze_camera()
        clock.advance(0.4)
        assert robot.get_observation()["image_age"][0] == pytest.approx(0.4, abs=1 / 30)


def test_phase_enable_robot_on_mock_pins(make_desc: Any, clock: Any) -> None:
    desc = make_desc(
        motors={
            "driver": "phase_enable",
            "left": {"forward": None, "backward": None, "phase": 17, "enable": 12},
            "right": {"forward": None, "backward": None, "phase": 22, "enable": 13},
        }
    )
    with make_mock_robot(desc, clock=clock) as robot:
        robot.send_action((0.6, -0.6))
        pins = robot.motor_pins
        assert not pins["left"]["phase"].state and float(pins["left"]["enable"].state) == 0.6
        assert pins["right"]["phase"].state and float(pins["right"]["enable"].state) == 0.6
        clock.advance(0.5)
        obs = robot.get_observation()
        assert obs["wheel_speed"][0] > 0 > obs["wheel_speed"][1]


def test_digital_sensors(make_desc: Any, clock: Any) -> None:
    desc = make_desc(
        sensors=[
            {"name": "line_left", "kind": "line", "pin": 6, "active_high": True},
            {"name": "light", "kind": "light", "pin": 7, "active_high": False},
        ]
    )
    with make_mock_robot(desc, clock=clock) as robot:
        robot.factory.pin(6).drive_high()
        robot.factory.pin(7).drive_high()
        assert robot.sensor_values() == {"line_left": 1, "light": 0}
        robot.factory.pin(7).drive_low()
        assert robot.sensor_values()["light"] == 1


def test_real_backend_without_lgpio_fails_at_connect(
    rover: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "lgpio", None)
    monkeypatch.setitem(sys.modules, "gpiozero.pins.lgpio", None)
    robot = PiRobot(rover)  # constructing touches nothing
    with pytest.raises(DeviceError, match="python3-lgpio"):
        robot.connect()
    assert not robot.is_connected
