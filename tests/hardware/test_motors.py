"""Motors on gpiozero MockPWMPin: duty on the right pins, inversion, phase/enable, and the H-bridge
rule that forward and backward are never driven together, even mid-reversal."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.pi import DriveTrain


def _states(drive_pins: dict[str, Any]) -> dict[str, float]:
    return {k: float(p.state) for k, p in drive_pins.items()}


def test_motor_driver_duty_lands_on_the_described_pins(pwm_factory: Any, rover: Any) -> None:
    drive = DriveTrain(rover.motors, pin_factory=pwm_factory)
    try:
        lf, lb, rf, rb = (pwm_factory.pin(n) for n in (17, 18, 22, 23))
        drive.drive(0.5, -0.25)
        assert (float(lf.state), float(lb.state)) == (0.5, 0.0)
        assert (float(rf.state), float(rb.state)) == (0.0, 0.25)
        assert drive.value == (0.5, -0.25)
        assert lf.frequency == rover.motors.pwm_frequency
        drive.stop()
        assert [float(p.state) for p in (lf, lb, rf, rb)] == [0.0] * 4
    finally:
        drive.close()


def test_inverted_motor_is_driven_backwards(pwm_factory: Any, make_desc: Any) -> None:
    desc = make_desc(motors={"invert_left": True})
    drive = DriveTrain(desc.motors, pin_factory=pwm_factory)
    try:
        drive.drive(0.5, 0.5)
        assert (float(pwm_factory.pin(17).state), float(pwm_factory.pin(18).state)) == (0.0, 0.5)
        assert (float(pwm_factory.pin(22).state), float(pwm_factory.pin(23).state)) == (0.5, 0.0)
        assert drive.value == (0.5, 0.5)  # logical value, as commanded
    finally:
        drive.close()


def test_phase_enable_driver(pwm_factory: Any, make_desc: Any) -> None:
    desc = make_desc(
        motors={
            "driver": "phase_enable",
            "left": {"forward": None, "backward": None, "phase": 17, "enable": 12},
            "right": {"forward": None, "backward": None, "phase": 22, "enable": 13},
        }
    )
    drive = DriveTrain(desc.motors, pin_factory=pwm_factory)
    try:
        drive.drive(0.7, -0.3)
        assert not pwm_factory.pin(17).state and float(pwm_factory.pin(12).state) == 0.7
        assert pwm_factory.pin(22).state and float(pwm_factory.pin(13).state) == pytest.approx(0.3)
        assert pwm_factory.pin(12).frequency == desc.motors.pwm_frequency
        drive.stop()
        assert float(pwm_factory.pin(12).state) == 0.0 and float(pwm_factory.pin(13).state) == 0.0
    finally:
        drive.close()


def _recording_factory(log: list[tuple[int, float]]) -> Any:
    """gpiozero's MockFactory whose MockPWMPins also append every state change, in order, to ``log``
    (one global order across pins; no timestamps needed)."""
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    class RecordingPWMPin(MockPWMPin):
        def _change_state(self, value: Any) -> bool:
            changed = super()._change_state(value)
            if changed:
                log.append((self.info.number, float(value)))
            return changed

    return MockFactory(pin_class=RecordingPWMPin)


def _assert_never_both_driven(log: list[tuple[int, float]], pairs: list[tuple[int, int]]) -> None:
    level: dict[int, float] = {}
    for i, (pin, value) in enumerate(log):
        level[pin] = value
        for fwd, bwd in pairs:
            assert not (level.get(fwd, 0.0) > 0 and level.get(bwd, 0.0) > 0), (
                f"pins {fwd} and {bwd} both driven after change #{i}: {log[max(0, i - 4) : i + 1]}"
            )


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-1, 1), st.floats(-1, 1)), min_size=1, max_size=12), st.booleans()
)
def test_forward_and_backward_never_driven_together(
    actions: list[tuple[float, float]], invert: bool
) -> None:
    from hardware.description import load_description

    desc = load_description("rover")
    desc.motors.invert_right = invert
    log: list[tuple[int, float]] = []
    factory = _recording_factory(log)
    drive = DriveTrain(desc.motors, pin_factory=factory)
    try:
        for left, right in [*actions, (1.0, -1.0), (-1.0, 1.0), (1.0, -1.0)]:  # hard reversals too
            drive.drive(left, right)
            assert np.allclose(drive.value, (left, right))
        drive.stop()
    finally:
        drive.close()
        factory.close()
    assert log, "no pin changes were recorded"
    _assert_never_both_driven(log, [(17, 18), (22, 23)])
