"""The loop on DRIVERS' mock robot (a real PiRobot on gpiozero MockFactory pins), fault injection
through its pins: e-stop button, frozen HC-SR04, frozen camera, no echo, obstacle. Injected clock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from runtime_helpers import FakeClock, ScriptedSource

from deploy.loop import ControlLoop
from hardware.tasks import Observer

pytestmark = pytest.mark.filterwarnings("ignore::hardware.errors.SafetyWarning")
mock = pytest.importorskip("hardware.mock")

PERIOD = 0.05
GOAL = (0.5, 0.0)


def duties(robot: Any) -> list[float]:
    """PWM duty of every motor pin (left/right x forward/backward)."""
    return [
        float(p.state)
        for side in ("left", "right")
        for role, p in robot.motor_pins[side].items()
        if role in ("forward", "backward")
    ]


def wait_for(cond: Any, timeout: float = 5.0) -> bool:
    """Wait (real time, bounded) for a background thread of the mock to do something."""
    ev = threading.Event()
    for _ in range(int(timeout / 0.005)):
        if cond():
            return True
        ev.wait(0.005)
    return bool(cond())


@pytest.fixture
def setup(desc: Any) -> Iterator[tuple[Any, ControlLoop, ScriptedSource, FakeClock]]:
    clock = FakeClock()
    robot = mock.make_mock_robot(desc, clock=clock)
    src = ScriptedSource(action=(0.5, 0.5))
    loop = ControlLoop(
        robot, Observer("reach", desc), src, clock=clock, sleep=clock.sleep, watchdog=False
    )
    with loop:
        loop.start_episode(goal=GOAL, max_steps=1000)
        yield robot, loop, src, clock
        loop.end_episode()
    assert not robot.is_connected
    assert all(d == 0.0 for d in duties(robot))


def ticks(loop: ControlLoop, clock: FakeClock, n: int, *, ping: bool = True) -> Any:
    """n ticks, 50 ms apart on the fake clock. The HC-SR04 thread pings in real time, so a ping is
    fired here too (unless the test froze the sensor) to keep readings fresh on the fake clock."""
    r = None
    for _ in range(n):
        clock.advance(PERIOD)
        if ping:
            loop.robot.ranger.measure()
        r = loop.tick()
    return r


def test_estop_button_on_the_pin_latches(setup) -> None:
    robot, loop, _, clock = setup
    ticks(loop, clock, 3)
    assert max(duties(robot)) > 0
    robot.press_estop()
    assert all(d == 0.0 for d in duties(robot))  # the driver's button callback, at once
    r = ticks(loop, clock, 1)
    assert "estop" in r.reasons
    robot.release_estop()
    for _ in range(8):
        assert "estop" in ticks(loop, clock, 1).reasons
        assert all(d == 0.0 for d in duties(robot))
    loop.safety.reset()
    ticks(loop, clock, 3)
    assert max(duties(robot)) > 0


def test_frozen_range_sensor_stops(setup, desc) -> None:
    robot, loop, _, clock = setup
    ticks(loop, clock, 2)
    assert max(duties(robot)) > 0
    robot.freeze_range()
    clock.advance(desc.safety.sensor_stale)
    r = ticks(loop, clock, 1, ping=False)
    assert "stale_range" in r.reasons and all(d == 0.0 for d in duties(robot))


def test_frozen_camera_stops(setup, desc) -> None:
    robot, loop, _, clock = setup
    ticks(loop, clock, 2)
    robot.freeze_camera()
    clock.advance(desc.safety.camera_stale)
    r = ticks(loop, clock, 1)
    assert "stale_camera" in r.reasons and all(d == 0.0 for d in duties(robot))


def test_no_echo_drives_and_close_echo_refuses_forward(setup, desc) -> None:
    robot, loop, _, clock = setup
    robot.set_echo_distance(None)
    n0 = robot.ranger.no_echo
    assert wait_for(lambda: robot.ranger.no_echo > n0)
    r = ticks(loop, clock, 3)
    assert "obstacle" not in r.reasons and max(duties(robot)) > 0
    robot.set_echo_distance(desc.safety.obstacle_stop / 2)
    assert wait_for(
        lambda: (
            robot.ranger.latest.valid and robot.ranger.latest.distance < desc.safety.obstacle_stop
        )
    )
    r = ticks(loop, clock, 1)
    assert "obstacle" in r.reasons and all(d == 0.0 for d in duties(robot))
