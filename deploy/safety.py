"""The safety layer: every motor command passes through :class:`SafetyLayer` (DESIGN.md, "Safety").

Rules, in the order they are applied to one command (each is a small method, unit-tested with an
injected clock):

1. **e-stop** (latching): a software :meth:`SafetyLayer.estop` or the GPIO button (polled through
   ``estop_input``) stops the motors until an explicit :meth:`SafetyLayer.reset`.
2. **non-finite** → stop, checked *before* any clamp (``max(-1, min(1, nan))`` is 1.0 in Python).
3. **deadman**: no fresh command for ``deadman`` seconds (default 0.3 s) → stop.
4. **stale sensors**: a range reading older than ``sensor_stale`` or a camera frame older than
   ``camera_stale`` (or missing, when the robot has that sensor) → stop.
5. **clamp** to ``±max_duty``.
6. **obstacle**: with a valid echo closer than ``obstacle_stop``, the forward part of the command is
   removed (``v = (left + right) / 2 > 0`` is subtracted from both wheels), so the robot can still
   turn on the spot and reverse away.
7. **slew-rate**: each wheel's duty moves *away from zero* by at most ``slew_rate × dt`` per tick
   (``dt`` is the measured tick interval, capped at 1.5 control periods so a stall cannot allow a
   jump). Braking toward zero is never delayed (a ramp-down would keep the robot driving into the
   obstacle that rule 6 just refused); a reversal brakes to zero, then ramps. Stops from rules 1-4
   (and the watchdog) are immediate too.

The **loop-stall watchdog** is :class:`Watchdog`: a thread that calls ``robot.stop()`` directly when
the loop has not kicked it for ``watchdog`` seconds (default 0.2 s), e.g. while inference hangs.

:meth:`SafetyLayer.filter` returns a :class:`SafetyResult`: the applied action and the reasons the
layer changed it (stored with every recorded frame and counted for telemetry).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hardware.description import Safety
from hardware.errors import SafetyWarning, Sim2PiError

log = logging.getLogger(__name__)

#: Reasons that stop the motors (the command is replaced by (0, 0)).
STOP_REASONS = frozenset(
    {
        "estop",
        "watchdog",
        "non_finite",
        "no_command",
        "deadman",
        "stale_range",
        "stale_camera",
        "no_observation",
    }
)
#: Reasons that only reshape the command.
ADJUST_REASONS = frozenset({"clamped", "obstacle", "slew"})


def _first(x: Any) -> float:
    """The first value of a scalar or a 1-element array (a range reading, an age)."""
    try:
        return float(x[0])
    except (TypeError, IndexError):
        return float(x)


def _pair(requested: Any) -> tuple[float, float] | None:
    """``requested`` as a finite (left, right) pair of floats, or None when it is not one
    (non-finite values are caught here, before any clamp)."""
    if requested is None:
        return None
    try:
        a = np.asarray(requested, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if a.size != 2:
        return None
    left, right = float(a.flat[0]), float(a.flat[1])
    if not (math.isfinite(left) and math.isfinite(right)):
        return None
    return left, right


@dataclass(frozen=True)
class SafetyResult:
    """What the safety layer did with one command.

    Attributes:
        applied: the (left, right) duty to send, float64, shape (2,).
        reasons: why it differs from the request (empty when passed unchanged); see
            :data:`STOP_REASONS` and :data:`ADJUST_REASONS`.
    """

    applied: np.ndarray
    reasons: tuple[str, ...] = ()

    @property
    def stopped(self) -> bool:
        """True when a stop rule replaced the command by (0, 0)."""
        return any(r in STOP_REASONS for r in self.reasons)


class SafetyLayer:
    """Filters every motor command (see the module docstring for the rules and their order).

    Args:
        config: ``desc.safety`` of the robot description.
        clock: monotonic clock in seconds (injected in tests; the loop passes its own ``now``).
        period: the control period in seconds (caps the slew ``dt``; default 0.05 s).
        require: raw sensor keys that must be present and fresh: ``"range"`` (checks
            ``range_age``) and/or ``"image"`` (checks ``image_age``). Keys not listed are checked
            only when present.
        estop_input: returns True while the hardware e-stop button is pressed (polled every
            command and by the watchdog); pressing it latches the e-stop.
    """

    def __init__(
        self,
        config: Safety,
        *,
        clock: Callable[[], float] = time.monotonic,
        period: float | None = None,
        require: Iterable[str] = (),
        estop_input: Callable[[], bool] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.period = float(period) if period else 0.05
        self.require = frozenset(require)
        unknown = self.require - {"range", "image"}
        if unknown:
            raise Sim2PiError(
                f"SafetyLayer(require=...) knows 'range' and 'image', not {sorted(unknown)}"
            )
        self.estop_input = estop_input
        self._lock = threading.RLock()
        self._latched: str | None = None
        self._prev: tuple[float, float] = (0.0, 0.0)
        self._prev_t: float | None = None
        self._last_stop: frozenset[str] = frozenset()
        self.counts: Counter[str] = Counter()

    # ------------------------------------------------------------------ e-stop
    @property
    def latched(self) -> bool:
        """True while the e-stop is latched."""
        return self._latched is not None

    @property
    def latch_reason(self) -> str | None:
        """What latched the e-stop (``"software"``, ``"button"``, ...), or None."""
        return self._latched

    def estop(self, reason: str = "software") -> None:
        """Latch the e-stop: every command is (0, 0) until :meth:`reset`. Thread-safe."""
        with self._lock:
            if self._latched is None:
                log.warning("E-STOP latched (%s): motors stopped until reset", reason)
                self._latched = reason
            self._prev = (0.0, 0.0)

    def poll_estop(self) -> bool:
        """Poll the e-stop button (if any), latching on a press; returns :attr:`latched`."""
        if self.estop_input is not None:
            try:
                pressed = bool(self.estop_input())
            except Exception as e:  # a broken button must not look like a released one
                log.error("cannot read the e-stop button (%s): latching the e-stop", e)
                pressed = True
            if pressed:
                self.estop("button")
        return self.latched

    def reset(self) -> None:
        """Clear a latched e-stop (the only way to clear it).

        Raises :class:`Sim2PiError` when the hardware button is still pressed: release it first.
        """
        with self._lock:
            if self.estop_input is not None and self.estop_input():
                raise Sim2PiError(
                    "the e-stop button is still pressed; release (twist) it, then reset"
                )
            if self._latched is not None:
                log.warning("e-stop reset (was: %s)", self._latched)
            self._latched = None
            self._prev = (0.0, 0.0)
            self._prev_t = None

    def motors_stopped(self, reason: str = "watchdog") -> None:
        """Tell the layer the motors were stopped behind its back (watchdog, shutdown): the next
        command ramps up from (0, 0)."""
        with self._lock:
            self._prev = (0.0, 0.0)
            self.counts[reason] += 1

    # ------------------------------------------------------------------ the rules
    def filter(
        self,
        requested: Any,
        *,
        stamp: float | None,
        raw: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> SafetyResult:
        """Apply every rule to one requested ``(left, right)`` command.

        Args:
            requested: the command, or None when no source produced one this tick.
            stamp: when the command was produced (clock seconds), for the deadman; None = never.
            raw: the raw robot observation of this tick (range, ages), or None if reading the
                sensors failed (→ stop).
            now: the current time; default ``clock()``.
        """
        t = self.clock() if now is None else float(now)
        with self._lock:
            pair = _pair(requested)
            stop = self._stop_reasons(requested, pair, stamp, raw, t)
            if stop or pair is None:
                applied = (0.0, 0.0)
                reasons: list[str] = stop
            else:
                reasons = []
                a = self._clamp(pair, reasons)
                a = self._obstacle(a, raw, reasons)
                applied = self._slew(a, t, reasons)
            self._prev = applied
            self._prev_t = t
            res = SafetyResult(np.array(applied), tuple(reasons))
            if reasons:
                self.counts.update(reasons)
            self._log_transition(stop)
        return res

    # Each rule works on plain floats: a (left, right) pair is far cheaper in Python than in
    # 2-element numpy arrays, and the layer runs every tick.
    def _stop_reasons(
        self,
        requested: Any,
        pair: tuple[float, float] | None,
        stamp: float | None,
        raw: Mapping[str, Any] | None,
        t: float,
    ) -> list[str]:
        reasons: list[str] = []
        if self.poll_estop():
            reasons.append("estop")
        if requested is None:
            reasons.append("no_command")
        elif pair is None:
            reasons.append("non_finite")
        if self._deadman_expired(stamp, t):
            reasons.append("deadman")
        if raw is None:
            reasons.append("no_observation")
        else:
            reasons.extend(self._stale(raw))
        return reasons

    def _deadman_expired(self, stamp: float | None, t: float) -> bool:
        """True when the newest command is older than ``deadman`` seconds (or there was none)."""
        return stamp is None or not math.isfinite(stamp) or t - stamp > self.config.deadman

    def _stale(self, raw: Mapping[str, Any]) -> list[str]:
        """Stop reasons from missing or old sensor data."""
        out = []
        for key, limit, reason in (
            ("range_age", self.config.sensor_stale, "stale_range"),
            ("image_age", self.config.camera_stale, "stale_camera"),
        ):
            age = raw.get(key)
            if age is None:
                if key[:-4] in self.require:
                    out.append(reason)
                continue
            a = _first(age)
            if not (math.isfinite(a) and a <= limit):
                out.append(reason)
        return out

    def _clamp(self, a: tuple[float, float], reasons: list[str]) -> tuple[float, float]:
        m = self.config.max_duty
        left, right = (min(m, max(-m, v)) for v in a)
        if (left, right) != a:
            reasons.append("clamped")
        return left, right

    def _obstacle(
        self, a: tuple[float, float], raw: Mapping[str, Any] | None, reasons: list[str]
    ) -> tuple[float, float]:
        """Remove the forward part of the command when an echo is closer than obstacle_stop."""
        if raw is None or "range" not in raw or self.config.obstacle_stop <= 0:
            return a
        valid = raw.get("range_valid")
        if valid is not None and _first(valid) < 0.5:
            return a  # no echo: nothing in range
        rng = _first(raw["range"])
        if not math.isfinite(rng) or rng >= self.config.obstacle_stop:
            return a
        v = 0.5 * (a[0] + a[1])
        if v <= 0:
            return a
        reasons.append("obstacle")
        return a[0] - v, a[1] - v

    def _slew(self, a: tuple[float, float], t: float, reasons: list[str]) -> tuple[float, float]:
        """Limit each wheel's acceleration away from zero to slew_rate × dt (dt capped at 1.5
        periods). Braking toward zero is never delayed; a reversal brakes to zero first, then ramps.
        """
        dt = self.period if self._prev_t is None else max(0.0, t - self._prev_t)
        step = self.config.slew_rate * min(dt, 1.5 * self.period)
        out = []
        for want, prev in zip(a, self._prev, strict=True):
            if prev * want >= 0 and abs(want) <= abs(prev):
                out.append(want)  # braking (or holding)
                continue
            base = prev if prev * want > 0 else 0.0
            out.append(min(base + step, max(base - step, want)))
        lim = (out[0], out[1])
        if lim != a:
            reasons.append("slew")
        return lim

    def _log_transition(self, stop: list[str]) -> None:
        """Warn once when the set of stop reasons changes (not every tick)."""
        now = frozenset(stop)
        if now != self._last_stop:
            if now - self._last_stop:
                msg = f"safety stop: {', '.join(sorted(now))}"
                log.warning(msg)
                warnings.warn(msg, SafetyWarning, stacklevel=4)
            elif not now:
                log.info("safety: commands pass again")
            self._last_stop = now


class Watchdog:
    """Loop-stall watchdog on its own thread.

    While armed, the loop calls :meth:`kick` every tick. If ``timeout`` seconds (on ``clock``) pass
    without a kick, ``on_stall`` is called once (it must stop the motors directly, e.g.
    ``robot.stop()``), until the next kick. ``on_poll`` runs on every poll of the thread (the loop
    uses it to act on the e-stop button even while the loop itself is stuck).

    :meth:`check` does one poll; tests call it directly with an injected clock.
    """

    def __init__(
        self,
        timeout: float,
        on_stall: Callable[[], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        poll: float | None = None,
        on_poll: Callable[[], None] | None = None,
        name: str = "sim2pi-watchdog",
    ) -> None:
        if timeout <= 0:
            raise Sim2PiError(f"watchdog timeout must be > 0 s, got {timeout}")
        self.timeout = float(timeout)
        self.on_stall = on_stall
        self.on_poll = on_poll
        self.clock = clock
        self.poll = float(poll) if poll else min(0.02, self.timeout / 4)
        self.name = name
        self.stalls = 0
        self.stalled = threading.Event()  # set while stalled (tests wait on it)
        self._armed = False
        self._last = clock()
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Watchdog:
        """Start the thread (idempotent). The watchdog does nothing until :meth:`arm`."""
        if self._thread is None or not self._thread.is_alive():
            self._halt.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._halt.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        self._thread = None

    def arm(self) -> None:
        """Start watching (the loop is running): the timeout counts from now."""
        with self._lock:
            self._last = self.clock()
            self._armed = True
            self.stalled.clear()

    def disarm(self) -> None:
        """Stop watching (between episodes, during shutdown)."""
        with self._lock:
            self._armed = False

    def kick(self) -> None:
        """The loop is alive."""
        with self._lock:
            self._last = self.clock()
        if self.stalled.is_set():
            log.info("watchdog: loop running again")
            self.stalled.clear()

    def check(self) -> bool:
        """One poll: call ``on_stall`` if the loop stalled; returns True when it fired now."""
        if self.on_poll is not None:
            try:
                self.on_poll()
            except Exception:
                log.exception("watchdog: on_poll failed")
        with self._lock:
            if not self._armed or self.stalled.is_set():
                return False
            late = self.clock() - self._last
            if late <= self.timeout:
                return False
            self.stalls += 1
            self.stalled.set()
        log.error(
            "watchdog: control loop stalled for %.3f s (> %.3f s): stopping the motors",
            late,
            self.timeout,
        )
        try:
            self.on_stall()
        except Exception:
            log.exception("watchdog: on_stall failed")
        return True

    def _run(self) -> None:
        while not self._halt.wait(self.poll):
            self.check()

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
