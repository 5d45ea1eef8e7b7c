"""HC-SR04 reader: bounded waits, "no echo" distinct from a distance, recovery, staleness."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from hardware.errors import StaleData
from hardware.pi import HCSR04, SPEED_OF_SOUND

TRIG, ECHO, ELSEWHERE = 4, 5, 6


def _sensor(factory: Any, clock: Any = None, **kw: Any) -> HCSR04:
    args: dict[str, Any] = {
        "timeout": 0.03,
        "rate": 20.0,
        "min_distance": 0.02,
        "max_distance": 2.0,
        **kw,
    }
    if clock is not None:
        args["clock"] = clock
    return HCSR04(TRIG, ECHO, pin_factory=factory, **args)


def _measure_bounded(sensor: HCSR04) -> Any:
    """measure() on a helper thread; fail (instead of hanging) if it does not return."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(sensor.measure()), daemon=True)
    t.start()
    t.join(timeout=5.0)
    assert not t.is_alive(), "HC-SR04 measure() blocked"
    return out[0]


def test_echo_gives_a_distance(plain_factory: Any) -> None:
    from gpiozero.pins.mock import MockTriggerPin

    echo = plain_factory.pin(ECHO)
    plain_factory.pin(TRIG, pin_class=MockTriggerPin, echo_pin=echo, echo_time=0.004)
    sensor = _sensor(plain_factory)
    try:
        r = _measure_bounded(sensor)
        nominal = 0.004 * SPEED_OF_SOUND / 2  # 0.69 m
        assert r.valid
        # a sleep never ends early; scheduling can only lengthen the simulated pulse
        assert nominal - 0.01 <= r.distance <= nominal + 0.5
    finally:
        sensor.close()


def test_no_echo_returns_within_the_bounded_wait_then_recovers(plain_factory: Any) -> None:
    from gpiozero.pins.mock import MockTriggerPin

    echo = plain_factory.pin(ECHO)
    # the trigger's echo goes to another pin: our echo pin never answers
    trig = plain_factory.pin(
        TRIG, pin_class=MockTriggerPin, echo_pin=plain_factory.pin(ELSEWHERE), echo_time=0.004
    )
    sensor = _sensor(plain_factory)
    try:
        r = _measure_bounded(sensor)
        assert not r.valid and r.distance == 2.0
        assert sensor.no_echo == 1
        trig.echo_pin = echo  # the echo comes back
        r = _measure_bounded(sensor)
        assert r.valid and r.distance < 2.0
    finally:
        sensor.close()


def test_echo_from_beyond_max_distance_is_no_echo(plain_factory: Any) -> None:
    from gpiozero.pins.mock import MockTriggerPin

    echo = plain_factory.pin(ECHO)
    plain_factory.pin(TRIG, pin_class=MockTriggerPin, echo_pin=echo, echo_time=0.004)  # 0.69 m
    sensor = _sensor(plain_factory, max_distance=0.4)
    try:
        r = _measure_bounded(sensor)
        assert not r.valid and r.distance == 0.4
    finally:
        sensor.close()


def test_echo_pin_stuck_high_does_not_block(plain_factory: Any) -> None:
    sensor = _sensor(plain_factory)
    try:
        sensor.echo_pin.drive_high()
        r = _measure_bounded(sensor)
        assert not r.valid
    finally:
        sensor.close()


def test_readings_carry_timestamps_and_go_stale(plain_factory: Any, clock: Any) -> None:
    sensor = _sensor(plain_factory, clock=clock)
    try:
        assert sensor.latest is None and sensor.age() == float("inf")
        r = _measure_bounded(sensor)
        assert r.timestamp == clock.t and sensor.age() == 0.0
        clock.advance(1.0)
        assert sensor.age() == pytest.approx(1.0)
        with pytest.raises(StaleData, match="1000 ms old"):
            sensor.read(max_age=0.25)
        assert sensor.read(max_age=2.0) is r
    finally:
        sensor.close()


def test_background_thread_keeps_pinging_without_an_echo(plain_factory: Any) -> None:
    sensor = _sensor(plain_factory, rate=50.0, timeout=0.005)
    try:
        sensor.start()
        for _ in range(500):  # bounded poll; the thread pings at 50 Hz
            if sensor.pings >= 3:
                break
            threading.Event().wait(0.01)
        assert sensor.pings >= 3
        assert sensor.latest is not None and not sensor.latest.valid
        sensor.stop()
    finally:
        sensor.close()
        sensor.close()  # idempotent
