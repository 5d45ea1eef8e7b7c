"""Pin-factory selection: explicit lgpio on a Pi, a DeviceError with the fix otherwise."""

from __future__ import annotations

import sys

import pytest

from hardware.errors import DeviceError
from hardware.pins import make_pin_factory


def test_mock_backend_is_gpiozero_mockfactory_with_pwm_pins() -> None:
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    factory = make_pin_factory("mock")
    try:
        assert isinstance(factory, MockFactory)
        assert factory.pin_class is MockPWMPin
    finally:
        factory.close()


def test_pi_backend_without_lgpio_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    # make both lgpio and gpiozero's lgpio module unimportable, whatever this machine has
    monkeypatch.setitem(sys.modules, "lgpio", None)
    monkeypatch.setitem(sys.modules, "gpiozero.pins.lgpio", None)
    with pytest.raises(DeviceError) as err:
        make_pin_factory("pi")
    msg = str(err.value)
    assert "sudo apt install python3-lgpio" in msg
    assert "--system-site-packages" in msg


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(DeviceError, match="unknown pin backend"):
        make_pin_factory("rpigpio")  # type: ignore[arg-type]
