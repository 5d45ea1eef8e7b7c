"""Fixtures for the runtime tests; the helpers live in runtime_helpers.py (a unique module name:
`from conftest import ...` would pick whichever tests/*/conftest.py was imported first)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import FakeClock, PinRobot, make_reach_bundle

from hardware.description import RobotDescription, load_description


@pytest.fixture
def desc() -> RobotDescription:
    return load_description("rover")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def mock_factory() -> Iterator[Any]:
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    saved = Device.pin_factory
    factory = MockFactory(pin_class=MockPWMPin)
    yield factory
    factory.reset()
    factory.close()
    Device.pin_factory = saved


@pytest.fixture
def pin_robot(desc: RobotDescription, mock_factory: Any, clock: FakeClock) -> Iterator[PinRobot]:
    robot = PinRobot(desc, mock_factory, clock)
    robot.connect()
    yield robot
    robot.disconnect()


@pytest.fixture(scope="session")
def reach_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_reach_bundle(tmp_path_factory.mktemp("reach") / "bundle", load_description("rover"))
