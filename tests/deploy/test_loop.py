"""The control loop with fault injection on gpiozero MockFactory pins and an injected clock.

Every test asserts on the mock *pin* PWM values (what the H-bridge would see), never on wall time.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtime_helpers import Cmd, FakeClock, PinRobot, ScriptedSource, make_constant_bundle

from deploy.loop import ControlLoop, EpisodeResult
from deploy.policy import OnnxPolicy, PolicySource
from hardware.errors import DeviceError, SpecMismatch, StaleData
from hardware.tasks import Observer

pytestmark = pytest.mark.filterwarnings("ignore::hardware.errors.SafetyWarning")

GOAL = (0.5, 0.0)
PERIOD = 0.05  # rover.yaml: 20 Hz


def make_loop(robot: PinRobot, source: Any, clock: FakeClock, **kw: Any) -> ControlLoop:
    kw.setdefault("watchdog", False)
    return ControlLoop(
        robot, Observer("reach", robot.description), source, clock=clock, sleep=clock.sleep, **kw
    )


def run_ticks(loop: ControlLoop, clock: FakeClock, n: int) -> list[Any]:
    out = []
    for _ in range(n):
        out.append(loop.tick())
        clock.advance(PERIOD)
    return out


def moving(v: tuple[float, ...]) -> bool:
    return any(x > 0 for x in v)


class RecorderDouble:
    """Records what the loop hands a DatasetWriter."""

    def __init__(self) -> None:
        self.episodes: list[list[dict[str, Any]]] = []
        self.frames: list[dict[str, Any]] = []
        self.discarded = 0
        self.closed = False
        self.tasks: list[str] = []

    @property
    def episode_frames(self) -> int:
        return len(self.frames)

    def start_episode(self, task: str) -> int:
        self.tasks.append(task)
        self.frames = []
        return len(self.episodes)

    def add_frame(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)

    def save_episode(self) -> int:
        self.episodes.append(self.frames)
        self.frames = []
        return len(self.episodes) - 1

    def discard_episode(self) -> None:
        self.discarded += 1
        self.frames = []

    def close(self) -> None:
        self.closed = True


# ------------------------------------------------------------------------------ policy faults


@pytest.mark.parametrize("value", [(float("nan"), 0.5), (0.5, float("inf")), (-float("inf"), 0.2)])
def test_non_finite_policy_output_stops_the_motors(tmp_path, desc, pin_robot, clock, value) -> None:
    policy = OnnxPolicy(make_constant_bundle(tmp_path / "b", desc, value))
    loop = make_loop(pin_robot, PolicySource(policy), clock)
    loop.start_episode(goal=GOAL)
    for r in run_ticks(loop, clock, 5):
        assert "non_finite" in r.reasons
        assert pin_robot.pin_values() == (0.0, 0.0, 0.0, 0.0)
    loop.end_episode()


def test_hanging_inference_is_caught_by_the_watchdog(desc, pin_robot, clock) -> None:
    entered, release = threading.Event(), threading.Event()

    class Hangs(ScriptedSource):
        def command(self, ctx: Any) -> Cmd:
            if ctx.info["step"] == 4:
                entered.set()
                release.wait(10.0)
            return Cmd((0.6, 0.6), ctx.now)

    src = Hangs()
    loop = make_loop(pin_robot, src, clock, watchdog=True)
    loop.watchdog.poll = 0.002
    results: list[EpisodeResult] = []
    t = threading.Thread(target=lambda: results.append(loop.run_episode(goal=GOAL, max_steps=8)))
    with loop:
        t.start()
        assert entered.wait(10.0)
        assert moving(pin_robot.pin_values())  # it was driving when inference hung
        clock.advance(desc.safety.watchdog + 0.01)
        assert loop.watchdog.stalled.wait(10.0)
        # `stalled` is set just before the watchdog thread calls robot.stop(): give it a moment
        give_up = time.monotonic() + 10.0
        while pin_robot.pin_values() != (0.0, 0.0, 0.0, 0.0) and time.monotonic() < give_up:
            time.sleep(0.001)
        assert pin_robot.pin_values() == (0.0, 0.0, 0.0, 0.0)
        release.set()
        t.join(10.0)
    assert results and results[0].steps == 8
    assert pin_robot.disconnected


# ------------------------------------------------------------------------------ teleop faults


def test_silent_teleop_source_hits_the_deadman(desc, pin_robot, clock) -> None:
    src = ScriptedSource(action=(0.5, 0.5))
    loop = make_loop(pin_robot, src, clock)
    loop.start_episode(goal=GOAL, max_steps=100)
    run_ticks(loop, clock, 5)
    assert moving(pin_robot.pin_values())
    src.alive = False
    silent_since = clock() - PERIOD  # the last fresh command was stamped at the previous tick
    ticks_allowed = int(np.ceil((desc.safety.deadman + PERIOD) / PERIOD))
    stopped_at = None
    for _ in range(ticks_allowed + 2):
        r = loop.tick()
        if pin_robot.pin_values() == (0.0, 0.0, 0.0, 0.0) and stopped_at is None:
            stopped_at = clock() - silent_since
            assert "deadman" in r.reasons
        clock.advance(PERIOD)
    assert stopped_at is not None and stopped_at <= desc.safety.deadman + PERIOD + 1e-9
    loop.end_episode()


# ------------------------------------------------------------------------------ sensor faults


def test_no_echo_lets_the_robot_drive(desc, pin_robot, clock) -> None:
    pin_robot.raw["range"] = np.array([desc.ultrasonic.max_distance], np.float32)
    pin_robot.raw["range_valid"] = np.array([0.0], np.float32)
    loop = make_loop(pin_robot, ScriptedSource(action=(0.5, 0.5)), clock)
    loop.start_episode(goal=GOAL)
    r = run_ticks(loop, clock, 3)[-1]
    assert not r.reasons and moving(pin_robot.pin_values())
    loop.end_episode()


@pytest.mark.parametrize("fault", ["stale_range", "missing_range", "stale_camera", "raises"])
def test_stale_sensors_stop_the_motors(desc, pin_robot, clock, fault) -> None:
    loop = make_loop(pin_robot, ScriptedSource(action=(0.5, 0.5)), clock)
    loop.start_episode(goal=GOAL, max_steps=100)
    run_ticks(loop, clock, 3)
    assert moving(pin_robot.pin_values())
    if fault == "stale_range":
        pin_robot.raw["range_age"] = np.array([desc.safety.sensor_stale + 0.1], np.float32)
    elif fault == "missing_range":
        del pin_robot.raw["range_age"]
    elif fault == "stale_camera":
        pin_robot.raw["image_age"] = np.array([desc.safety.camera_stale + 0.1], np.float32)
    else:
        pin_robot.fail = StaleData("HC-SR04 reading is 0.4 s old")
    r = loop.tick()
    assert r.applied.tolist() == [0.0, 0.0]
    assert pin_robot.pin_values() == (0.0, 0.0, 0.0, 0.0)
    expected = {
        "stale_range": "stale_range",
        "missing_range": "stale_range",
        "stale_camera": "stale_camera",
        "raises": "no_observation",
    }[fault]
    assert expected in r.reasons
    res = loop.end_episode()
    assert res.info["safety"][expected] == 1


def test_obstacle_ahead_refuses_forward_but_reverses(desc, pin_robot, clock) -> None:
    pin_robot.raw["range"] = np.array([desc.safety.obstacle_stop / 2], np.float32)
    src = ScriptedSource(action=(0.5, 0.5))
    loop = make_loop(pin_robot, src, clock)
    loop.start_episode(goal=GOAL, max_steps=100)
    assert "obstacle" in run_ticks(loop, clock, 2)[-1].reasons
    assert pin_robot.pin_values() == (0.0, 0.0, 0.0, 0.0)
    src.action = (-0.4, -0.4)
    run_ticks(loop, clock, 3)
    lf, lb, rf, rb = pin_robot.pin_values()
    assert lf == rf == 0.0 and lb > 0 and rb > 0
    loop.end_episode()


# ------------------------------------------------------------------------------ loop faults


def test_exception_inside_the_loop_stops_and_discards(desc, pin_robot, clock) -> None:
    class Boom(ScriptedSource):
        def command(self, ctx: Any) -> Cmd:
            if ctx.info["step"] == 5:
                raise RuntimeError("driver bug")
            return Cmd((0.7, 0.7), ctx.now)

    rec = RecorderDouble()
    src = Boom()
    loop = make_loop(pin_robot, src, clock, recorder=rec)
    with pytest.raises(RuntimeError, match="driver bug"), loop:
        loop.run_episode(goal=GOAL, max_steps=50)
    assert pin_robot.pin_values() == (0.0, 0.0, 0.0, 0.0)
    assert rec.discarded == 1 and rec.episodes == [] and rec.closed
    assert src.closed and pin_robot.disconnected


def test_sigint_in_process_ends_the_episode_cleanly(desc, pin_robot, clock) -> None:
    class Interrupts(ScriptedSource):
        def command(self, ctx: Any) -> Cmd:
            if ctx.info["step"] == 3:
                os.kill(os.getpid(), signal.SIGINT)
            return Cmd((0.5, 0.5), ctx.now)

    rec = RecorderDouble()
    loop = make_loop(pin_robot, Interrupts(), clock, recorder=rec)
    # whatever the handler was (a shell's background job starts with SIGINT ignored)
    before = signal.getsignal(signal.SIGINT)
    with loop, loop.signals():
        res = loop.run_episode(goal=GOAL, max_steps=50)
        assert pin_robot.pin_values() == (0.0, 0.0, 0.0, 0.0)
    assert res.interrupted and res.end == "signal:SIGINT" and res.steps == 4
    assert rec.discarded == 1 and rec.episodes == []
    assert signal.getsignal(signal.SIGINT) is before


# ------------------------------------------------------------------------------ e-stop


def test_estop_button_stops_within_a_tick_and_latches_until_reset(desc, pin_robot, clock) -> None:
    loop = make_loop(pin_robot, ScriptedSource(action=(0.5, 0.5)), clock)
    loop.start_episode(goal=GOAL, max_steps=100)
    run_ticks(loop, clock, 3)
    assert moving(pin_robot.pin_values())
    pin_robot.estop_button = True
    r = loop.tick()
    assert "estop" in r.reasons and pin_robot.pin_values() == (0.0, 0.0, 0.0, 0.0)
    clock.advance(PERIOD)
    pin_robot.estop_button = False  # released: still latched
    for r in run_ticks(loop, clock, 10):
        assert "estop" in r.reasons and pin_robot.pin_values() == (0.0, 0.0, 0.0, 0.0)
    loop.safety.reset()
    run_ticks(loop, clock, 3)
    assert moving(pin_robot.pin_values())
    loop.end_episode()


def test_estop_acts_from_the_watchdog_thread_while_the_loop_is_stuck(pin_robot, clock) -> None:
    loop = make_loop(pin_robot, ScriptedSource(action=(0.5, 0.5)), clock)
    loop.start_episode(goal=GOAL)
    run_ticks(loop, clock, 3)
    pin_robot.estop_button = True
    loop._poll_estop()  # what the watchdog thread does every poll
    assert pin_robot.pin_values() == (0.0, 0.0, 0.0, 0.0) and loop.safety.latched
    loop.end_episode()


def test_estop_and_reset_events_from_the_operator(pin_robot, clock) -> None:
    src = ScriptedSource(action=(0.5, 0.5))
    loop = make_loop(pin_robot, src, clock)
    loop.start_episode(goal=GOAL, max_steps=100)
    run_ticks(loop, clock, 2)
    src.pending_events = ["estop"]
    loop.tick()
    assert pin_robot.pin_values() == (0.0, 0.0, 0.0, 0.0)
    assert all("estop" in r.reasons for r in run_ticks(loop, clock, 5))
    src.pending_events = ["reset_estop"]
    run_ticks(loop, clock, 4)
    assert moving(pin_robot.pin_values())
    loop.end_episode()


# ------------------------------------------------------------------------------ limits and pins


def test_out_of_range_commands_are_clamped_and_slewed(desc, pin_robot, clock) -> None:
    src = ScriptedSource(action=(5.0, -5.0))
    loop = make_loop(pin_robot, src, clock)
    loop.start_episode(goal=GOAL, max_steps=100)
    prev = np.zeros(2)
    step = desc.safety.slew_rate * PERIOD
    for r in run_ticks(loop, clock, 10):
        assert np.all(np.abs(r.applied) <= desc.safety.max_duty)
        assert np.all(np.abs(r.applied) - np.abs(prev) <= step + 1e-9)  # ramps up
        prev = r.applied
    src.action = (-5.0, 5.0)  # reversal: brakes to zero, then ramps the other way
    r = run_ticks(loop, clock, 1)[0]
    assert r.applied.tolist() == pytest.approx([-step, step])
    src.action = (5.0, -5.0)
    run_ticks(loop, clock, 10)
    lf, lb, rf, rb = pin_robot.pin_values()
    assert lf == pytest.approx(desc.safety.max_duty) and rb == pytest.approx(desc.safety.max_duty)
    assert lb == 0.0 and rf == 0.0
    loop.end_episode()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.floats(allow_nan=True, allow_infinity=True),
            st.floats(allow_nan=True, allow_infinity=True),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_forward_and_backward_pins_never_both_active(pin_robot, actions) -> None:
    clock = FakeClock()
    src = ScriptedSource()
    loop = make_loop(pin_robot, src, clock)
    loop.start_episode(goal=GOAL, max_steps=1000)
    for a in actions:
        src.action = a
        loop.tick()
        lf, lb, rf, rb = pin_robot.pin_values()
        assert not (lf > 0 and lb > 0) and not (rf > 0 and rb > 0)
        clock.advance(PERIOD)
    loop.end_episode()
    assert pin_robot.bad_pin_states == []


# ------------------------------------------------------------------------------ episodes


def test_success_ends_the_episode_and_frames_are_judged_on_the_next_state(pin_robot, clock) -> None:
    rec = RecorderDouble()
    loop = make_loop(pin_robot, ScriptedSource(action=(0.3, 0.3)), clock, recorder=rec)
    loop.start_episode(goal=GOAL, max_steps=50)
    run_ticks(loop, clock, 3)
    pin_robot.raw["pose"] = np.array([GOAL[0], GOAL[1], 0.0], np.float32)  # arrived
    r = loop.tick()
    assert r.done and r.end == "success"
    res = loop.end_episode(end=r.end)
    assert res.success is True and res.steps == 3 and res.reward_sum == -2.0
    (frames,) = rec.episodes
    assert [f["success"] for f in frames] == [False, False, True]
    assert [f["done"] for f in frames] == [False, False, True]
    assert frames[0]["action"].tolist() == pytest.approx([0.3, 0.3])
    assert {
        "observation",
        "achieved_goal",
        "desired_goal",
        "action",
        "action_applied",
        "reward",
        "intervention",
    } <= set(frames[0])
    assert pin_robot.pin_values() == (0.0, 0.0, 0.0, 0.0)


def test_max_steps_and_paced_timing(pin_robot, clock) -> None:
    sleeps: list[float] = []

    def sleep(dt: float) -> None:
        sleeps.append(dt)
        clock.advance(dt)

    class Slow(ScriptedSource):
        def command(self, ctx: Any) -> Cmd:
            if ctx.info["step"] == 2:
                clock.advance(0.08)  # this tick overruns its 50 ms deadline
            return Cmd((0.2, 0.2), ctx.now)

    loop = ControlLoop(
        pin_robot,
        Observer("reach", pin_robot.description),
        Slow(),
        clock=clock,
        sleep=sleep,
        watchdog=False,
    )
    with loop:
        res = loop.run_episode(goal=GOAL, max_steps=6)
    assert res.steps == 6 and res.end == "max_steps" and res.success is False
    assert loop.times.missed_deadlines == 1
    assert sleeps and all(0 < s <= PERIOD + 1e-9 for s in sleeps)
    assert len(loop.times) == 7  # 6 actions + the final judging read
    assert "inference" in loop.times.report()


def test_unpaced_loop_uses_a_virtual_clock(pin_robot) -> None:
    src = ScriptedSource(action=(0.2, 0.2))
    loop = ControlLoop(pin_robot, Observer("reach", pin_robot.description), src, paced=False)
    with loop:
        res = loop.run_episode(goal=GOAL, max_steps=20)
    assert res.steps == 20 and loop.clock() == pytest.approx(20 * PERIOD)
    assert "deadman" not in res.info["safety"]


def test_shared_mode_takeover_overrides_and_is_flagged(tmp_path, desc, pin_robot, clock) -> None:
    policy = PolicySource(OnnxPolicy(make_constant_bundle(tmp_path / "b", desc, (0.3, 0.3))))
    human = ScriptedSource(action=(-0.2, 0.2), alive=False)
    rec = RecorderDouble()
    loop = make_loop(pin_robot, policy, clock, takeover=human, recorder=rec)
    assert loop.mode == "shared"
    loop.start_episode(goal=GOAL, max_steps=12)
    run_ticks(loop, clock, 3)
    human.alive = True
    rs = run_ticks(loop, clock, 3)
    assert all(r.intervention and r.source == "teleop" for r in rs)
    human.alive = False  # the operator lets go: the policy drives again once the command is stale
    rs = run_ticks(loop, clock, 8)
    assert not rs[-1].intervention and rs[-1].source == "policy"
    res = loop.end_episode()
    assert res.info["interventions"] >= 3
    assert sum(f["intervention"] for f in rec.episodes[0]) == res.info["interventions"]


def test_policy_for_another_task_is_refused_before_any_motion(
    tmp_path, desc, pin_robot, clock
) -> None:
    policy = OnnxPolicy(make_constant_bundle(tmp_path / "b", desc, (0.3, 0.3), task="push"))
    with pytest.raises(SpecMismatch, match="observation"):
        make_loop(pin_robot, PolicySource(policy), clock)
    assert pin_robot.pin_values() == (0.0, 0.0, 0.0, 0.0)


def test_quit_event_discards_and_stops_the_run(pin_robot, clock) -> None:
    src = ScriptedSource(action=(0.2, 0.2))
    rec = RecorderDouble()
    loop = make_loop(pin_robot, src, clock, recorder=rec)

    def args(i: int) -> dict[str, Any]:
        src.pending_events = ["quit"] if i == 1 else ["end"]
        return {"goal": GOAL}

    with loop:
        results = loop.run(5, args)
    assert [r.end for r in results] == ["event:end", "event:quit"]
    assert len(rec.episodes) == 1 and rec.discarded == 1
    assert rec.episodes[0][-1]["done"] is True


def test_device_error_on_send_propagates_after_stopping(pin_robot, clock) -> None:
    calls = {"n": 0}
    original = pin_robot.send_action

    def flaky(a: Any) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 3:
            raise DeviceError("H-bridge gone")
        return original(a)

    pin_robot.send_action = flaky  # type: ignore[method-assign]
    loop = make_loop(pin_robot, ScriptedSource(action=(0.5, 0.5)), clock)
    with pytest.raises(DeviceError), loop:
        loop.run_episode(goal=GOAL)
    assert pin_robot.stops >= 1 and pin_robot.disconnected
