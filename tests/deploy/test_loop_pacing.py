"""Pacing of the paced loop (sleep, then spin to the deadline) and the GC freeze."""

from __future__ import annotations

import gc
import time
from typing import Any

import pytest
from runtime_helpers import Cmd, PinRobot, ScriptedSource

from deploy.loop import DEFAULT_SPIN, ControlLoop
from hardware.errors import Sim2PiError
from hardware.tasks import Observer


class CreepingClock:
    """A fake clock that moves a little on every read (so a spin loop ends) and on sleep."""

    def __init__(self, t: float = 100.0, per_read: float = 1e-5) -> None:
        self.t, self.per_read = t, per_read
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        self.t += self.per_read
        return self.t

    def sleep(self, dt: float) -> None:
        self.sleeps.append(dt)
        self.t += max(0.0, dt)


def _loop(robot: PinRobot, **kw: Any) -> ControlLoop:
    src = ScriptedSource()
    kw.setdefault("watchdog", False)
    return ControlLoop(robot, Observer("reach", robot.description), src, **kw)


def test_pace_sleeps_then_spins_to_the_deadline(pin_robot: PinRobot) -> None:
    clock = CreepingClock()
    loop = _loop(pin_robot, rate=50.0, clock=clock, sleep=clock.sleep, spin=0.002)
    start = clock.t
    deadline = loop._pace(start)
    assert deadline == pytest.approx(start + 0.02)
    assert clock.t >= deadline  # did not return before the deadline
    assert clock.t < deadline + 0.001  # nor long after it
    assert clock.sleeps[0] == pytest.approx(0.02 - 0.002, abs=1e-4)  # slept all but the spin
    assert len(clock.sleeps) > 10 and set(clock.sleeps[1:]) == {0}  # then yielded while spinning
    assert loop.times.missed_deadlines == 0


def test_pace_without_spin_sleeps_once_and_counts_a_miss(pin_robot: PinRobot) -> None:
    clock = CreepingClock()
    loop = _loop(pin_robot, rate=50.0, clock=clock, sleep=clock.sleep)
    assert loop.spin == 0.0  # an injected clock never gets a spin by default
    deadline = loop._pace(clock.t)
    assert len(clock.sleeps) == 1 and clock.sleeps[0] == pytest.approx(0.02, abs=1e-4)
    clock.t = deadline + 0.05  # the tick overran by more than a period
    assert loop._pace(deadline) == pytest.approx(clock.t, abs=1e-4)
    assert loop.times.missed_deadlines == 1 and len(clock.sleeps) == 1


def test_spin_defaults(pin_robot: PinRobot) -> None:
    assert _loop(pin_robot).spin == DEFAULT_SPIN > 0  # real clock and sleep
    assert _loop(pin_robot, paced=False).spin == 0.0
    assert _loop(pin_robot, sleep=lambda dt: time.sleep(dt)).spin == 0.0
    with pytest.raises(Sim2PiError, match="spin"):
        _loop(pin_robot, spin=-1.0)
    with pytest.raises(Sim2PiError, match="spin"):
        _loop(pin_robot, spin=float("nan"))


def test_paced_loop_freezes_the_gc_while_running(pin_robot: PinRobot) -> None:
    gc.unfreeze()  # whatever an earlier test left frozen
    loop = _loop(pin_robot)
    with loop:
        assert gc.get_freeze_count() > 0  # startup objects are out of the collector's reach
    assert gc.get_freeze_count() == 0  # and back after close
    with _loop(pin_robot, paced=False):
        assert gc.get_freeze_count() == 0  # unpaced (sim) runs leave the GC alone


def test_paced_episode_runs_on_the_real_clock(pin_robot: PinRobot) -> None:
    class Forward(ScriptedSource):
        def command(self, ctx: Any) -> Cmd:
            return Cmd((0.2, 0.2), ctx.now)

    loop = ControlLoop(
        pin_robot, Observer("reach", pin_robot.description), Forward(), rate=200.0, watchdog=False
    )
    with loop:
        res = loop.run_episode(goal=(5.0, 0.0), max_steps=5)
    assert res.steps == 5 and not res.interrupted
    assert len(loop.times) == 6
