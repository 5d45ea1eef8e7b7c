"""Pin-factory selection for the gpiozero drivers.

Backends are chosen explicitly and injected (``pin_factory=``) into every driver; nothing here runs
at import time and nothing sets gpiozero's global ``Device.pin_factory``.

- ``"pi"``: gpiozero's lgpio factory (``gpiozero.pins.lgpio.LGPIOFactory``), the one that works on
  every Pi from the 1 to the 5 on current Raspberry Pi OS. If it cannot load we raise
  :class:`~hardware.errors.DeviceError` with the fix; we never fall back silently to another
  factory (a silent fallback to e.g. the native factory or to mock pins would let a robot "run"
  without driving its motors, or with different PWM behaviour than the one tested).
- ``"mock"``: gpiozero's ``MockFactory`` with ``MockPWMPin`` as the default pin class, so motor pins
  support PWM and tests can assert on pin states.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

from hardware.errors import DeviceError

if TYPE_CHECKING:
    from gpiozero.pins import Factory

log = logging.getLogger(__name__)

Backend = Literal["pi", "mock"]

LGPIO_FIX = (
    "Install lgpio from Raspberry Pi OS with `sudo apt install python3-lgpio` and run sim2pi from a "
    "virtual environment created with `python3 -m venv --system-site-packages` so it can see the "
    "system package (pip builds of lgpio need the liblgpio C library too). Your user also needs "
    "read/write access to /dev/gpiochip* (add it to the 'gpio' group)."
)


def make_pin_factory(backend: Backend = "pi", *, chip: int | None = None) -> Factory:
    """Return a new gpiozero pin factory for ``backend`` (``"pi"`` or ``"mock"``).

    Args:
        backend: ``"pi"`` for real GPIO through lgpio, ``"mock"`` for gpiozero's ``MockFactory``
            with ``MockPWMPin`` pins.
        chip: gpiochip number for lgpio (``None`` lets gpiozero pick: 4 on a Pi 5 with an old
            kernel, else 0). Ignored for ``"mock"``.

    Raises:
        DeviceError: lgpio cannot be imported or the gpiochip cannot be opened (the message says
            how to fix it), or ``backend`` is unknown.
    """
    if backend == "mock":
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        log.info("pin factory: gpiozero MockFactory (pin_class=MockPWMPin)")
        return MockFactory(pin_class=MockPWMPin)
    if backend == "pi":
        try:
            from gpiozero.pins.lgpio import LGPIOFactory
        except ImportError as e:
            raise DeviceError(f"cannot load gpiozero's lgpio pin factory ({e}). {LGPIO_FIX}") from e
        try:
            factory = LGPIOFactory(chip=chip)
        except Exception as e:  # lgpio raises its own `lgpio.error` and OSError subclasses
            raise DeviceError(
                f"gpiozero's lgpio pin factory could not open the GPIO chip "
                f"({type(e).__name__}: {e}). Is this a Raspberry Pi? {LGPIO_FIX}"
            ) from e
        log.info("pin factory: gpiozero LGPIOFactory on /dev/gpiochip%s", factory.chip)
        return factory
    raise DeviceError(f"unknown pin backend {backend!r}; use 'pi' (real GPIO via lgpio) or 'mock'")
