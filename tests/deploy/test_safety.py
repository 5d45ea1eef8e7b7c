"""Each safety rule on its own, with an injected clock (no wall-clock asserts)."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.safety import SafetyLayer, Watchdog
from hardware.description import Safety
from hardware.errors import SafetyWarning, Sim2PiError

pytestmark = pytest.mark.filterwarnings("ignore::hardware.errors.SafetyWarning")

FRESH = {
    "range": np.array([1.5]),
    "range_valid": np.array([1.0]),
    "range_age": np.array([0.01]),
    "image_age": np.array([0.01]),
}


def layer(clock, **kw) -> SafetyLayer:
    cfg = dataclasses.replace(Safety(), **{k: v for k, v in kw.items() if k != "require"})
    return SafetyLayer(cfg, clock=clock, period=0.05, require=kw.get("require", ()))


def fast(clock, **kw) -> SafetyLayer:
    """A layer whose slew limit never binds (ticks 50 ms apart), to look at one other rule."""
    s = layer(clock, slew_rate=1000.0, **kw)
    inner = s.filter

    def ticking(*a, **k):
        clock.advance(0.05)  # a stamp taken before the call is 50 ms old: still fresh
        return inner(*a, **k)

    s.filter = ticking  # type: ignore[method-assign]
    return s


@pytest.mark.parametrize("bad", [(np.nan, 0.5), (0.5, np.inf), (-np.inf, np.nan), (1e9, np.nan)])
def test_non_finite_stops_before_clamping(clock, bad) -> None:
    s = fast(clock)
    s.filter((0.5, 0.5), stamp=clock(), raw=FRESH)
    r = s.filter(bad, stamp=clock(), raw=FRESH)
    assert r.applied.tolist() == [0.0, 0.0]
    assert "non_finite" in r.reasons and r.stopped


def test_malformed_command_stops(clock) -> None:
    s = fast(clock)
    assert s.filter((0.1, 0.2, 0.3), stamp=clock(), raw=FRESH).reasons == ("non_finite",)
    assert s.filter(None, stamp=clock(), raw=FRESH).reasons == ("no_command",)
    assert s.filter(None, stamp=None, raw=FRESH).reasons == ("no_command", "deadman")


def test_out_of_range_commands_are_clamped(clock) -> None:
    s = fast(clock, max_duty=0.6)
    r = s.filter((2.0, -3.0), stamp=clock(), raw=FRESH)
    assert r.applied.tolist() == [0.6, -0.6]
    assert r.reasons == ("clamped",)
    r = s.filter((0.3, -0.2), stamp=clock(), raw=FRESH)
    assert r.applied.tolist() == [0.3, -0.2] and r.reasons == ()


def test_slew_rate_ramps_up_and_down(clock) -> None:
    s = layer(clock, slew_rate=8.0)  # 0.4 per 50 ms tick
    seen = []
    for _ in range(4):
        seen.append(s.filter((1.0, -1.0), stamp=clock(), raw=FRESH).applied[0])
        clock.advance(0.05)
    assert seen == pytest.approx([0.4, 0.8, 1.0, 1.0])
    r = s.filter((0.3, -0.2), stamp=clock(), raw=FRESH)  # braking is immediate
    assert r.applied.tolist() == pytest.approx([0.3, -0.2]) and r.reasons == ()
    clock.advance(0.05)
    r = s.filter((-1.0, 1.0), stamp=clock(), raw=FRESH)  # reversal: through zero, then ramp
    assert r.applied.tolist() == pytest.approx([-0.4, 0.4]) and r.reasons == ("slew",)


def test_slew_dt_is_capped_after_a_long_gap(clock) -> None:
    s = layer(clock, slew_rate=8.0)
    s.filter((0.0, 0.0), stamp=clock(), raw=FRESH)
    clock.advance(5.0)  # a stall must not allow a jump to full duty
    r = s.filter((1.0, 1.0), stamp=clock(), raw=FRESH)
    assert r.applied[0] == pytest.approx(8.0 * 1.5 * 0.05)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-3, 3), st.floats(-3, 3), st.floats(0.0, 0.2)), min_size=1, max_size=40
    )
)
def test_slew_and_clamp_hold_for_any_sequence(steps) -> None:
    from runtime_helpers import FakeClock

    clock = FakeClock()
    s = layer(clock, slew_rate=5.0, max_duty=0.8)
    prev, t_prev = np.zeros(2), None
    for left, right, dt in steps:
        clock.advance(dt)
        r = s.filter((left, right), stamp=clock(), raw=FRESH)
        a = r.applied
        assert np.all(np.abs(a) <= 0.8 + 1e-12)
        d = 0.05 if t_prev is None else min(clock() - t_prev, 0.075)
        same_side = prev * a > 0
        # away from zero by at most slew_rate * dt (from prev on the same side, else from 0)
        gain = np.where(same_side, np.abs(a) - np.abs(prev), np.abs(a))
        assert np.all(gain <= 5.0 * d + 1e-9)
        prev, t_prev = r.applied, clock()


def test_deadman_stops_a_stale_command(clock) -> None:
    s = fast(clock, deadman=0.3)  # each filter call is one 50 ms tick later
    stamp = clock()
    clock.advance(0.24)
    assert not s.filter((0.5, 0.5), stamp=stamp, raw=FRESH).stopped  # 0.29 s old
    clock.advance(0.02)
    r = s.filter((0.5, 0.5), stamp=stamp, raw=FRESH)  # 0.36 s old
    assert r.reasons == ("deadman",) and r.applied.tolist() == [0.0, 0.0]
    assert s.filter((0.5, 0.5), stamp=clock(), raw=FRESH).applied.tolist() == [0.5, 0.5]


def test_stale_or_missing_range_stops(clock) -> None:
    s = fast(clock, sensor_stale=0.25, require=("range",))
    old = {**FRESH, "range_age": np.array([0.3])}
    assert s.filter((0.5, 0.5), stamp=clock(), raw=old).reasons == ("stale_range",)
    missing = {k: v for k, v in FRESH.items() if k != "range_age"}
    assert s.filter((0.5, 0.5), stamp=clock(), raw=missing).reasons == ("stale_range",)
    nan_age = {**FRESH, "range_age": np.array([np.nan])}
    assert s.filter((0.5, 0.5), stamp=clock(), raw=nan_age).reasons == ("stale_range",)
    assert not s.filter((0.5, 0.5), stamp=clock(), raw=FRESH).stopped


def test_stale_camera_and_missing_observation_stop(clock) -> None:
    s = fast(clock, camera_stale=0.25, require=("image",))
    old = {**FRESH, "image_age": np.array([0.5])}
    assert s.filter((0.5, 0.5), stamp=clock(), raw=old).reasons == ("stale_camera",)
    assert s.filter((0.5, 0.5), stamp=clock(), raw=None).reasons == ("no_observation",)


def test_obstacle_refuses_forward_but_allows_turn_and_reverse(clock) -> None:
    s = fast(clock, obstacle_stop=0.1)
    near = {**FRESH, "range": np.array([0.05])}
    r = s.filter((0.5, 0.5), stamp=clock(), raw=near)
    assert r.applied.tolist() == [0.0, 0.0] and r.reasons == ("obstacle",) and not r.stopped
    assert s.filter((-0.3, 0.3), stamp=clock(), raw=near).applied.tolist() == [-0.3, 0.3]
    assert s.filter((-0.5, -0.5), stamp=clock(), raw=near).applied.tolist() == [-0.5, -0.5]
    arc = s.filter((0.2, 0.6), stamp=clock(), raw=near).applied
    assert arc.tolist() == pytest.approx([-0.2, 0.2])  # forward part removed, turn kept
    no_echo = {**near, "range_valid": np.array([0.0])}
    assert s.filter((0.5, 0.5), stamp=clock(), raw=no_echo).applied.tolist() == [0.5, 0.5]
    far = {**FRESH, "range": np.array([0.5])}
    assert s.filter((0.5, 0.5), stamp=clock(), raw=far).applied.tolist() == [0.5, 0.5]


def test_software_estop_latches_until_reset(clock) -> None:
    s = fast(clock)
    s.estop()
    for _ in range(5):
        clock.advance(0.05)
        r = s.filter((0.5, 0.5), stamp=clock(), raw=FRESH)
        assert r.applied.tolist() == [0.0, 0.0] and "estop" in r.reasons
    s.reset()
    assert s.filter((0.5, 0.5), stamp=clock(), raw=FRESH).applied.tolist() == [0.5, 0.5]


def test_button_estop_latches_after_release_and_reset_needs_release(clock) -> None:
    pressed = [False]
    s = SafetyLayer(
        dataclasses.replace(Safety(), slew_rate=1000.0), clock=clock, estop_input=lambda: pressed[0]
    )
    assert not s.filter((0.5, 0.5), stamp=clock(), raw=FRESH).stopped
    pressed[0] = True
    assert "estop" in s.filter((0.5, 0.5), stamp=clock(), raw=FRESH).reasons
    with pytest.raises(Sim2PiError, match="still pressed"):
        s.reset()
    pressed[0] = False
    assert "estop" in s.filter((0.5, 0.5), stamp=clock(), raw=FRESH).reasons  # still latched
    s.reset()
    assert s.filter((0.5, 0.5), stamp=clock(), raw=FRESH).applied.tolist() == [0.5, 0.5]


def test_a_broken_button_latches(clock) -> None:
    def broken() -> bool:
        raise OSError("gpio gone")

    s = SafetyLayer(Safety(), clock=clock, estop_input=broken)
    assert s.poll_estop() and s.latched


def test_stop_warns_once_per_transition(clock) -> None:
    s = fast(clock)
    with pytest.warns(SafetyWarning, match="non_finite"):
        s.filter((np.nan, 0), stamp=clock(), raw=FRESH)


def test_watchdog_fires_once_per_stall(clock) -> None:
    stalls = []
    wd = Watchdog(0.2, lambda: stalls.append(clock()), clock=clock)
    assert not wd.check()  # not armed
    wd.arm()
    clock.advance(0.15)
    assert not wd.check()
    clock.advance(0.1)
    assert wd.check() and stalls == [clock()]
    clock.advance(1.0)
    assert not wd.check() and len(stalls) == 1  # once per stall
    wd.kick()
    clock.advance(0.1)
    assert not wd.check()
    clock.advance(0.2)
    assert wd.check() and wd.stalls == 2
    wd.disarm()
    clock.advance(1.0)
    assert not wd.check()


def test_watchdog_thread_calls_on_stall(clock) -> None:
    fired = threading.Event()
    with Watchdog(0.2, fired.set, clock=clock, poll=0.005) as wd:
        wd.arm()
        clock.advance(0.5)
        assert fired.wait(5.0)
        assert wd.stalled.is_set()
