"""Fixtures for the hardware driver tests: gpiozero's own mock pins, never real GPIO."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from hardware.description import RobotDescription, from_dict, load_description


@pytest.fixture(autouse=True)
def _guard_global_pin_factory() -> Iterator[None]:
    """Save and restore gpiozero's global ``Device.pin_factory``.

    During each test the global factory is a tripwire ``MockFactory``: every driver must use the
    factory it is given, so the tripwire must end the test without a single pin.
    """
    try:
        from gpiozero import Device
        from gpiozero.pins.mock import MockFactory
    except ImportError:  # a train-only install: the description/spec tests still run
        yield
        return
    saved = Device.pin_factory
    tripwire = MockFactory()
    Device.pin_factory = tripwire
    try:
        yield
        assert not tripwire.pins, (
            "a device used gpiozero's global Device.pin_factory instead of the injected one"
        )
    finally:
        Device.pin_factory = saved
        tripwire.close()


@pytest.fixture
def pwm_factory() -> Iterator[Any]:
    """``MockFactory(pin_class=MockPWMPin)``, as the mock backend uses for motors."""
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    factory = MockFactory(pin_class=MockPWMPin)
    yield factory
    factory.close()


@pytest.fixture
def plain_factory() -> Iterator[Any]:
    """``MockFactory()`` with plain ``MockPin`` pins (for ``MockTriggerPin``)."""
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    yield factory
    factory.close()


class FakeClock:
    """A manually advanced clock (seconds)."""

    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def _make_desc(**overrides: Any) -> RobotDescription:
    data = copy.deepcopy(load_description("rover").to_dict())
    return from_dict(_merge(data, overrides))


@pytest.fixture
def make_desc() -> Any:
    """The shipped rover description with nested overrides, e.g. ``make_desc(encoders={...})``."""
    return _make_desc


@pytest.fixture
def rover() -> RobotDescription:
    return load_description("rover")
