"""The one control loop (DESIGN.md, "One loop").

:class:`ControlLoop` drives any :class:`~hardware.robot.Robot` (the PyBullet twin, gpiozero mock
pins, a real Pi) from any command source, passes every command through the
:class:`~deploy.safety.SafetyLayer`, and can record what happened. Recording demonstrations in sim
(unpaced), evaluating a bundle on the twin and running on the Pi (paced at the control rate) are this
same loop with different parts plugged in.

One tick (``tick()``), timed per section:

1. **sensors**: ``robot.get_observation()`` (a :class:`~hardware.errors.StaleData` /
   :class:`~hardware.errors.DeviceError` here stops the motors for this tick, it does not end the
   run);
2. **preprocess**: the task's :class:`~hardware.tasks.Observer` builds the policy observation; the
   previous tick's frame is judged on it (``next.reward`` / ``next.success`` describe the state the
   action led to) and recorded; the episode ends here on success or after ``max_steps`` actions;
3. **inference**: the command source (and, in ``shared`` mode, the ``takeover`` source whose fresh
   command overrides the policy; the frame is then flagged ``intervention``);
4. **safety**: :meth:`SafetyLayer.filter`;
5. **actuation**: ``robot.send_action``;
6. **record**: events, bookkeeping.

Paced runs sleep until the next deadline (a tick that ends after its deadline counts as a *missed
deadline* and the schedule restarts from now rather than bursting to catch up). On the real clock
they sleep until ``spin`` seconds before the deadline and busy-wait the rest (yielding the GIL), so a
late wake-up of the OS timer does not delay the tick; the spin costs about ``spin × rate`` of one core
(2.5 % at the default 0.5 ms and 50 Hz). While a paced loop runs, the objects that exist at
:meth:`ControlLoop.start` (the imported libraries, the policy, the robot) are moved out of the
garbage collector's reach (``gc.freeze()``): a full collection then scans only what the run
allocated, instead of pausing every thread for ~0.1 s with torch or onnxruntime loaded. Unpaced runs use a
virtual clock that advances one control period per tick, so the deadman, the slew limit and
recorded timestamps behave as on the robot while the simulator runs as fast as it can.

Shutdown: whatever ends an episode (success, ``max_steps``, an operator event, SIGINT / SIGTERM, an
exception), ``run_episode`` stops the motors in ``finally``. An episode that did not end normally
(signal, exception, ``quit`` / ``discard`` event) is **discarded** from the recording: a partial
episode has no outcome and would teach the policy to stop mid-task; the dataset keeps only complete
episodes and stays valid. :meth:`ControlLoop.close` (or leaving ``with loop:``) disconnects the robot
and closes the sources and the recorder. The first SIGINT / SIGTERM asks the loop to stop at the next
tick (within one period; the watchdog covers a stuck tick); a second one raises immediately.
SIGUSR1 logs the timing table.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from deploy.fileio import jsonable
from deploy.safety import SafetyLayer, SafetyResult, Watchdog
from deploy.teleop import Command, CommandSource
from deploy.timing import LoopTimes
from hardware.errors import DeviceError, Sim2PiError, StaleData
from hardware.robot import Robot
from hardware.tasks import SEEK_COLORS, Observer, compute_reward

log = logging.getLogger(__name__)

LOOP_SECTIONS = ("sensors", "preprocess", "inference", "safety", "actuation", "record")
#: Busy-wait before each deadline of a paced run on the real clock (s); see ``ControlLoop(spin=)``.
DEFAULT_SPIN = 0.0005
MODES = ("policy", "teleop", "shared")

#: Operator events the loop understands (from ``source.events()`` / ``takeover.events()``).
EVENT_ESTOP = "estop"
EVENT_RESET_ESTOP = "reset_estop"
EVENT_SUCCESS = "success"  # end the episode, mark it successful (operator's judgement)
EVENT_END = "end"  # end the episode (unsuccessful unless the judge says otherwise), keep it
EVENT_DISCARD = "discard"  # end the episode and drop it from the recording
EVENT_QUIT = "quit"  # end the episode (dropped) and stop the run
EVENT_ALIASES = {
    "end_episode": EVENT_END,
    "done": EVENT_END,
    "fail": EVENT_END,
    "stop": EVENT_QUIT,
    "estop_reset": EVENT_RESET_ESTOP,
    "rerecord": EVENT_DISCARD,
}


class Recorder(Protocol):
    """An episode recorder (``deploy.dataset.DatasetWriter``)."""

    def start_episode(self, task: str) -> Any: ...

    def add_frame(self, frame: dict[str, Any]) -> Any: ...

    def save_episode(self) -> Any: ...

    def discard_episode(self) -> Any: ...

    def close(self) -> Any: ...


Judge = Callable[[Mapping[str, np.ndarray], Mapping[str, Any] | None], tuple[float, bool | None]]


@dataclass
class TickContext:
    """What a command source sees each tick.

    Attributes:
        obs: the policy observation (``Observer`` output) of this tick.
        raw: the raw robot observation.
        info: episode info (``step``, ``goal``, ``task_id``, ``mode``) plus ground truth when the
            loop has a ``ground_truth`` provider (the twin; scripted experts use it).
        now: the loop clock (s); stamp commands with it.
    """

    obs: dict[str, np.ndarray]
    raw: dict[str, np.ndarray]
    info: dict[str, Any]
    now: float


@dataclass
class TickResult:
    """What one tick did (``done`` ends the episode)."""

    step: int
    now: float
    requested: np.ndarray | None = None
    applied: np.ndarray | None = None
    reasons: tuple[str, ...] = ()
    source: str = ""
    intervention: bool = False
    done: bool = False
    end: str = ""


@dataclass
class EpisodeResult:
    """The outcome of one episode.

    Attributes:
        steps: actions sent.
        success: the judge's verdict on the last state (None when nothing can judge it).
        reward_sum: sum of the judged rewards.
        interrupted: ended by a signal, an exception or a quit/discard event (not recorded).
        end: why it ended: ``success``, ``max_steps``, ``event:<name>``, ``signal:<name>``,
            ``error:<type>``.
        info: per-episode details: goal, task id, safety reason counts, interventions, timing,
            final ground truth, recorded episode index.
    """

    steps: int
    success: bool | None
    reward_sum: float
    interrupted: bool
    end: str
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "steps": self.steps,
            "success": self.success,
            "reward_sum": self.reward_sum,
            "interrupted": self.interrupted,
            "end": self.end,
            "info": jsonable(self.info),
        }


def goal_judge(task: str) -> Judge:
    """Judge a goal-conditioned task on the policy observation (``compute_reward``; on the robot)."""

    def judge(obs: Mapping[str, np.ndarray], gt: Mapping[str, Any] | None) -> tuple[float, bool]:
        r = float(compute_reward(task, obs["achieved_goal"], obs["desired_goal"]))
        return r, r == 0.0

    return judge


def ground_truth_judge(
    obs: Mapping[str, np.ndarray], gt: Mapping[str, Any] | None
) -> tuple[float, bool | None]:
    """Judge on the twin's ground truth (``gt["is_success"]``): sparse reward 0 / -1."""
    if gt is None or "is_success" not in gt:
        return 0.0, None
    ok = bool(gt["is_success"])
    return (0.0 if ok else -1.0), ok


def no_judge(obs: Mapping[str, np.ndarray], gt: Mapping[str, Any] | None) -> tuple[float, None]:
    """Nothing can judge this task here (e.g. seek on the real robot): reward 0, success unknown."""
    return 0.0, None


class _VirtualClock:
    """Sim time for unpaced runs: advanced by one period per tick by the loop."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class ControlLoop:
    """The one control loop (see the module docstring).

    Args:
        robot: any :class:`Robot`; connected on :meth:`start` if needed.
        observer: the task's :class:`Observer` (raw observation + goal → policy observation).
        source: the main command source: a ``PolicySource`` (modes ``policy`` / ``shared``) or a
            teleop source (mode ``teleop``).
        safety: the safety layer; default ``SafetyLayer(robot.description.safety)`` on the loop's
            clock, requiring fresh range / camera data when the robot has those sensors, with the
            robot's e-stop button (``robot.estop_pressed``) when it has one.
        takeover: a teleop source whose fresh command overrides ``source`` (mode ``shared``).
        recorder: an episode recorder (``deploy.dataset.DatasetWriter``), or None.
        rate: control rate (Hz); default the robot description's.
        paced: sleep to hold the rate (robot); False runs as fast as possible on a virtual clock.
        clock: monotonic clock (s); default ``time.monotonic`` when paced, else the virtual clock.
        sleep: sleep function (injected in tests).
        judge: ``judge(policy_obs, ground_truth) -> (reward, success)``; default: ground truth when
            ``ground_truth`` is given, ``compute_reward`` on goal tasks, else :func:`no_judge`.
        ground_truth: returns the twin's ground truth each tick (``TwinBackend.ground_truth``).
        mode: ``policy`` / ``teleop`` / ``shared``; default ``shared`` with a takeover source,
            ``policy`` for a policy source, else ``teleop``.
        watchdog: run the loop-stall watchdog thread; default: when paced.
        timer: high-resolution timer for the section timing (``time.perf_counter``).
        stop_on_success: end an episode as soon as the judge reports success.
        spin: paced runs busy-wait this many seconds before each deadline instead of sleeping
            through it; default 0.5 ms with the real clock and sleep, else 0 (an injected clock
            would never advance while spinning).
        freeze_gc: ``gc.freeze()`` at :meth:`start` (undone at :meth:`close`); default: when paced.
    """

    def __init__(
        self,
        robot: Robot,
        observer: Observer,
        source: CommandSource,
        *,
        safety: SafetyLayer | None = None,
        takeover: CommandSource | None = None,
        recorder: Recorder | None = None,
        rate: float | None = None,
        paced: bool = True,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        judge: Judge | None = None,
        ground_truth: Callable[[], Mapping[str, Any]] | None = None,
        mode: str | None = None,
        watchdog: bool | None = None,
        timer: Callable[[], float] = time.perf_counter,
        stop_on_success: bool = True,
        spin: float | None = None,
        freeze_gc: bool | None = None,
    ) -> None:
        desc = robot.description
        self.robot = robot
        self.observer = observer
        self.source = source
        self.takeover = takeover
        self.recorder = recorder
        self.rate = float(rate if rate is not None else desc.control.rate)
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise Sim2PiError(f"control rate must be a positive number of Hz, got {rate!r}")
        self.period = 1.0 / self.rate
        self.paced = paced
        self._virtual = None if (paced or clock is not None) else _VirtualClock()
        self.clock: Callable[[], float] = clock or self._virtual or time.monotonic
        self.sleep = sleep
        if spin is None:
            real_time = sleep is time.sleep and self.clock is time.monotonic
            spin = DEFAULT_SPIN if (paced and real_time) else 0.0
        if not (math.isfinite(spin) and spin >= 0):
            raise Sim2PiError(f"spin must be a number of seconds >= 0, got {spin!r}")
        self.spin = float(spin)
        self.freeze_gc = paced if freeze_gc is None else bool(freeze_gc)
        self._gc_frozen = False
        self.timer = timer
        self.ground_truth = ground_truth
        self.stop_on_success = stop_on_success
        self.task = observer.info.name
        if mode is None:
            from deploy.policy import PolicySource

            mode = (
                "shared"
                if takeover is not None
                else "policy"
                if isinstance(source, PolicySource)
                else "teleop"
            )
        if mode not in MODES:
            raise Sim2PiError(f"unknown mode {mode!r}; choose one of {list(MODES)}")
        if mode == "shared" and takeover is None:
            raise Sim2PiError("mode 'shared' needs a takeover source (the operator's teleop)")
        self.mode = mode
        self._check_policy_spec()
        if judge is None:
            if ground_truth is not None:
                judge = ground_truth_judge
            elif observer.info.goal_conditioned:
                judge = goal_judge(self.task)
            else:
                judge = no_judge
        self.judge: Judge = judge
        if safety is None:
            feats = robot.observation_features
            require = [k for k in ("range", "image") if f"{k}_age" in feats]
            estop_input = _estop_input(robot)
            config = desc.safety
            if observer.info.contact and config.obstacle_stop > 0:
                # Pushing a box means an obstacle right in front of the ultrasonic sensor; the
                # obstacle rule would refuse every push. Every other rule stays on.
                log.warning(
                    "task '%s' pushes objects: the obstacle stop (%.2f m) is off for this loop",
                    self.task,
                    config.obstacle_stop,
                )
                config = dataclasses.replace(config, obstacle_stop=0.0)
            safety = SafetyLayer(
                config,
                clock=self.clock,
                period=self.period,
                require=require,
                estop_input=estop_input,
            )
        self.safety = safety
        self.times = LoopTimes(LOOP_SECTIONS, period=self.period if paced else None)
        use_watchdog = paced if watchdog is None else watchdog
        self.watchdog: Watchdog | None = None
        if use_watchdog:
            self.watchdog = Watchdog(
                desc.safety.watchdog, self._on_stall, clock=self.clock, on_poll=self._poll_estop
            )
        self._stop_request: str | None = None
        self._estop_acted = False
        self._started = False
        self._closed = False
        self._episode: dict[str, Any] | None = None
        self.episodes_done = 0
        self.last_tick: TickResult | None = None

    # ------------------------------------------------------------------ set-up / tear-down
    def _check_policy_spec(self) -> None:
        """Refuse a policy whose spec disagrees with this robot + task, before any motor command."""
        policy = getattr(self.source, "policy", None)
        spec = getattr(policy, "spec", None)
        if spec is not None:
            self.observer.spec.check(spec)

    def start(self) -> ControlLoop:
        """Connect the robot (if needed) and start the watchdog thread. Idempotent."""
        if self._closed:
            raise Sim2PiError("this ControlLoop was closed; build a new one")
        if not self._started:
            if not self.robot.is_connected:
                self.robot.connect()
            if self.watchdog is not None:
                self.watchdog.start()
            if self.freeze_gc and not self._gc_frozen:
                gc.collect(1)  # the young generations only: cheap, and keeps their garbage out
                gc.freeze()
                self._gc_frozen = True
            self._started = True
            log.info(
                "control loop: mode %s, task %s, %.1f Hz %s, safety %s",
                self.mode,
                self.task,
                self.rate,
                "paced" if self.paced else "unpaced",
                self.safety.config,
            )
        return self

    def close(self) -> None:
        """Stop the motors, disconnect the robot, close the sources and the recorder; log timing.

        Idempotent; every step runs even if an earlier one fails.
        """
        if self._closed:
            return
        self._closed = True
        steps: list[tuple[str, Callable[[], Any]]] = []
        if self.watchdog is not None:
            steps.append(("watchdog", self.watchdog.stop))
        steps += [
            ("robot.stop", self.robot.stop),
            ("robot.disconnect", self.robot.disconnect),
            ("source.close", self.source.close),
        ]
        if self.takeover is not None:
            steps.append(("takeover.close", self.takeover.close))
        if self.recorder is not None:
            steps.append(("recorder.close", self.recorder.close))
        for name, fn in steps:
            try:
                fn()
            except Exception:
                log.exception("shutdown: %s failed", name)
        if self._gc_frozen:
            gc.unfreeze()
            self._gc_frozen = False
        if len(self.times):
            log.info("control loop timing:\n%s", self.times.report())

    def __enter__(self) -> ControlLoop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ signals
    def request_stop(self, reason: str = "request") -> None:
        """Ask the loop to end the current episode at the next tick (thread- and signal-safe)."""
        if self._stop_request is None:
            self._stop_request = reason

    @property
    def stop_requested(self) -> bool:
        """True once :meth:`request_stop` was called (a signal arrived)."""
        return self._stop_request is not None

    @property
    def stop_reason(self) -> str | None:
        """Why a stop was requested (``signal:SIGTERM``, ``event:quit``, ...), or None."""
        return self._stop_request

    @contextmanager
    def signals(self) -> Iterator[None]:
        """Handle SIGINT / SIGTERM (stop at the next tick; a second one raises) and SIGUSR1 (log
        the timing table) while inside. Only in the main thread; elsewhere it does nothing."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_stop(signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            if self._stop_request is not None:
                log.warning("%s again: stopping now", name)
                if signum == signal.SIGINT:
                    raise KeyboardInterrupt
                raise SystemExit(128 + signum)
            log.warning("%s: stopping the robot", name)
            self.request_stop(f"signal:{name}")

        def on_usr1(signum: int, frame: Any) -> None:
            log.info("control loop timing:\n%s", self.times.report())

        wanted = {signal.SIGINT: on_stop, signal.SIGTERM: on_stop}
        if hasattr(signal, "SIGUSR1"):
            wanted[signal.SIGUSR1] = on_usr1
        old = {s: signal.signal(s, h) for s, h in wanted.items()}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    # ------------------------------------------------------------------ safety hooks
    def _on_stall(self) -> None:
        """Watchdog thread: the loop is stuck; stop the motors directly."""
        self.robot.stop()
        self.safety.motors_stopped("watchdog")

    def _poll_estop(self) -> None:
        """Watchdog thread: act on the e-stop button even while the loop is stuck."""
        if self.safety.poll_estop():
            if not self._estop_acted:
                self._estop_acted = True
                self.robot.stop()
        else:
            self._estop_acted = False

    def estop(self, reason: str = "software") -> None:
        """Latch the e-stop and stop the motors now (callable from any thread)."""
        self.safety.estop(reason)
        self.robot.stop()

    # ------------------------------------------------------------------ episodes
    def start_episode(
        self,
        goal: Any = None,
        task_id: int | None = None,
        max_steps: int | None = None,
        box_guess: Any = None,
    ) -> None:
        """Reset the observer, the sources and the recorder for a new episode."""
        self.start()
        if self._episode is not None:
            raise Sim2PiError("an episode is already running; call end_episode() first")
        self.observer.reset(goal=goal, task_id=task_id, box_guess=box_guess)
        for src in (self.source, self.takeover):
            reset = getattr(src, "reset", None)
            if callable(reset):
                reset()
        max_steps = int(max_steps if max_steps is not None else self.observer.info.max_steps)
        if max_steps < 1:
            raise Sim2PiError(f"max_steps must be >= 1, got {max_steps}")
        self._episode = {
            "goal": None if goal is None else [float(v) for v in np.asarray(goal).reshape(-1)],
            "task_id": task_id,
            "max_steps": max_steps,
            "step": 0,
            "reward_sum": 0.0,
            "success": None,
            "pending": None,
            "interventions": 0,
            "end": "",
            "gt": None,
            "reasons": {},
            "sensor_errors": 0,
            "record": True,
            "operator_success": False,
        }
        if self.recorder is not None:
            self.recorder.start_episode(self.task_text(task_id))
        if self.watchdog is not None:
            self.watchdog.arm()

    def task_text(self, task_id: int | None = None) -> str:
        """The episode's task string for the recording (LeRobot's ``task``)."""
        info = self.observer.info
        if info.name == "seek" and task_id is not None:
            return f"drive up to the {SEEK_COLORS[int(task_id)]} object and face it"
        return info.doc or info.name

    def tick(self) -> TickResult:
        """One control tick (see the module docstring); does not sleep."""
        ep = self._episode
        if ep is None:
            raise Sim2PiError("no episode is running; call start_episode() first")
        timer = self.timer
        now = self.clock()
        t0 = timer()
        result = TickResult(step=ep["step"], now=now)
        # 1. sensors
        raw: dict[str, np.ndarray] | None
        try:
            raw = self.robot.get_observation()
        except (StaleData, DeviceError) as e:
            ep["sensor_errors"] += 1
            log.warning("sensors failed (%s): stopping the motors this tick", e)
            raw = None
        t1 = timer()
        # 2. preprocess + judge the previous action on the state it led to
        obs = self.observer(raw) if raw is not None else None
        gt = self.ground_truth() if (self.ground_truth is not None and raw is not None) else None
        if obs is not None and ep["pending"] is not None:
            self._finish_frame(obs, gt)
            if ep["success"] and self.stop_on_success:
                result.done, result.end = True, "success"
            elif ep["step"] >= ep["max_steps"]:
                result.done, result.end = True, "max_steps"
        t2 = timer()
        if result.done:
            self.robot.stop()
            self.times.add((t1 - t0, t2 - t1, 0.0, 0.0, 0.0, 0.0))
            self.last_tick = result
            return result
        # 3. commands
        cmd = None
        intervention = False
        if obs is not None:
            info = {
                "step": ep["step"],
                "goal": ep["goal"],
                "task_id": ep["task_id"],
                "mode": self.mode,
                **(gt or {}),
            }
            ctx = TickContext(obs=obs, raw=raw, info=info, now=now)  # type: ignore[arg-type]
            cmd = self.source.command(ctx)
            if self.takeover is not None:
                human = self.takeover.command(ctx)
                if human is not None and self._fresh(human, now):
                    cmd, intervention = human, True
        t3 = timer()
        # 4. safety
        requested = None if cmd is None else cmd.action
        res: SafetyResult = self.safety.filter(
            requested, stamp=None if cmd is None else cmd.stamp, raw=raw, now=now
        )
        t4 = timer()
        # 5. actuation
        applied = self.robot.send_action(res.applied)
        t5 = timer()
        # 6. events + bookkeeping
        req = _as_action(requested)
        result.requested, result.applied, result.reasons = req, np.asarray(applied), res.reasons
        result.source, result.intervention = ("" if cmd is None else cmd.source), intervention
        for r in res.reasons:
            ep["reasons"][r] = ep["reasons"].get(r, 0) + 1
        if obs is not None:
            ep["interventions"] += int(intervention)
            ep["pending"] = {
                "obs": obs,
                "action": req,
                "label": getattr(cmd, "label", None),
                "applied": np.asarray(applied, np.float32),
                "intervention": intervention,
                "reasons": res.reasons,
                "stamp": now,
            }
            ep["step"] += 1
        self._handle_events(result)
        t6 = timer()
        self.times.add((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5))
        if self._virtual is not None:
            self._virtual.t += self.period
        if self.watchdog is not None:
            self.watchdog.kick()
        self.last_tick = result
        return result

    def _fresh(self, cmd: Command, now: float) -> bool:
        stamp = cmd.stamp
        return stamp is not None and now - stamp <= self.safety.config.deadman

    def _finish_frame(self, obs: Mapping[str, np.ndarray], gt: Mapping[str, Any] | None) -> None:
        """Judge the pending frame on the state its action led to, and record it."""
        ep = self._episode
        assert ep is not None
        reward, success = self.judge(obs, gt)
        ep["reward_sum"] += float(reward)
        ep["success"] = success
        ep["gt"] = gt
        pending = ep["pending"]
        ep["pending"] = None
        done = (bool(success) and self.stop_on_success) or ep["step"] >= ep["max_steps"]
        if self.recorder is not None:
            self.recorder.add_frame(self._frame(pending, reward, success, done))

    def _frame(
        self, p: Mapping[str, Any], reward: float, success: bool | None, done: bool
    ) -> dict[str, Any]:
        """One recorded frame (``DatasetWriter.add_frame``): the spec's observation features under
        their env keys, the requested and applied action, ``reward`` / ``success`` / ``done`` of the
        state the action led to (stored as ``next.*``), and the intervention flag. A source's clean
        label (the scripted expert's action before its DART noise) is recorded as the requested
        ``action``; ``action_applied`` is what the motors got."""
        frame: dict[str, Any] = dict(p["obs"])
        label = p.get("label")
        frame["action"] = p["action"] if label is None else label
        frame["action_applied"] = p["applied"]
        frame["reward"] = float(reward)
        frame["success"] = bool(success)
        frame["done"] = bool(done)
        frame["intervention"] = bool(p["intervention"])
        return frame

    def _handle_events(self, result: TickResult) -> None:
        ep = self._episode
        assert ep is not None
        events: list[str] = list(self.source.events())
        if self.takeover is not None:
            events += self.takeover.events()
        for raw_ev in events:
            ev = EVENT_ALIASES.get(raw_ev, raw_ev)
            if ev == EVENT_ESTOP:
                self.estop("operator")
            elif ev == EVENT_RESET_ESTOP:
                try:
                    self.safety.reset()
                except Sim2PiError as e:
                    log.warning("cannot reset the e-stop: %s", e)
            elif ev in (EVENT_SUCCESS, EVENT_END, EVENT_DISCARD, EVENT_QUIT):
                if not result.done:
                    result.done, result.end = True, f"event:{ev}"
                if ev == EVENT_SUCCESS:
                    ep["success"] = ep["operator_success"] = True
                if ev in (EVENT_DISCARD, EVENT_QUIT):
                    ep["record"] = False
                if ev == EVENT_QUIT:
                    self.request_stop("event:quit")
            else:
                log.debug("ignoring unknown event %r", raw_ev)

    def end_episode(self, *, interrupted: bool = False, end: str = "") -> EpisodeResult:
        """Stop the motors and finish the episode: save it (normal end) or discard it
        (interrupted, or a discard / quit event). Safe to call from ``finally``."""
        ep = self._episode
        if ep is None:
            raise Sim2PiError("no episode is running")
        self._episode = None
        try:
            self.robot.stop()
        finally:
            self.safety.motors_stopped("episode_end")
            if self.watchdog is not None:
                self.watchdog.disarm()
        keep = ep["record"] and not interrupted
        saved = None
        if self.recorder is not None:
            pending = ep["pending"]
            if keep and pending is not None:
                # ended by an operator event before the last action could be judged on the next
                # state: judge it on its own observation (the operator's "success" wins)
                reward, success = self.judge(pending["obs"], ep["gt"])
                if ep["operator_success"]:
                    reward, success = 0.0, True
                ep["success"] = success
                self.recorder.add_frame(self._frame(pending, reward, success, True))
            keep = keep and getattr(self.recorder, "episode_frames", 1) > 0
            saved = self.recorder.save_episode() if keep else self.recorder.discard_episode()
            log.info("episode %s", "saved" if keep else "discarded (partial)")
        self.episodes_done += 1
        info: dict[str, Any] = {
            "goal": ep["goal"],
            "task_id": ep["task_id"],
            "mode": self.mode,
            "interventions": ep["interventions"],
            "safety": dict(ep["reasons"]),
            "sensor_errors": ep["sensor_errors"],
            "recorded": keep and self.recorder is not None,
        }
        if saved is not None and not isinstance(saved, (bool, type(None))):
            info["episode_index"] = saved
        if ep["gt"]:
            info["ground_truth"] = ep["gt"]
        return EpisodeResult(
            steps=ep["step"],
            success=ep["success"],
            reward_sum=float(ep["reward_sum"]),
            interrupted=interrupted,
            end=end or ep["end"],
            info=info,
        )

    def run_episode(
        self,
        goal: Any = None,
        task_id: int | None = None,
        max_steps: int | None = None,
        box_guess: Any = None,
    ) -> EpisodeResult:
        """Run one episode to its end (success, max_steps, an event, a signal); see the module
        docstring for what happens on errors. Paced runs hold the control rate."""
        self.start_episode(goal=goal, task_id=task_id, max_steps=max_steps, box_guess=box_guess)
        end, interrupted = "", False
        try:
            deadline = self.clock()
            while True:
                if self._stop_request is not None:
                    end, interrupted = self._stop_request, True
                    break
                r = self.tick()
                if r.done:
                    end = r.end
                    interrupted = r.end in (f"event:{EVENT_QUIT}", f"event:{EVENT_DISCARD}")
                    break
                if self.paced:
                    deadline = self._pace(deadline)
        except BaseException as e:
            end, interrupted = f"error:{type(e).__name__}", True
            log.error("control loop stopped by %s: %s", type(e).__name__, e)
            self.end_episode(interrupted=True, end=end)
            raise
        return self.end_episode(interrupted=interrupted, end=end)

    def _pace(self, deadline: float) -> float:
        """Wait for the next deadline (sleep, then spin the last ``spin`` seconds); on a miss,
        count it and restart the schedule from now."""
        deadline += self.period
        now = self.clock()
        if now > deadline:
            self.times.miss()
            return now
        spin = self.spin
        if deadline - now > spin:
            self.sleep(deadline - now - spin)
        if spin:
            clock, sleep = self.clock, self.sleep
            while clock() < deadline:
                sleep(0)  # releases the GIL: the ranging and camera threads keep running
        return deadline

    def run(
        self,
        episodes: int,
        episode_args: Callable[[int], Mapping[str, Any]] | None = None,
        on_episode: Callable[[int, EpisodeResult], None] | None = None,
    ) -> list[EpisodeResult]:
        """Run up to ``episodes`` episodes (fewer if a signal or a quit event arrives).

        ``episode_args(i)`` gives the keyword arguments of episode ``i`` (goal, task_id, max_steps,
        box_guess), e.g. from ``TwinBackend.new_episode``.
        """
        results = []
        for i in range(episodes):
            if self._stop_request is not None:
                break
            kwargs = dict(episode_args(i)) if episode_args is not None else {}
            res = self.run_episode(**kwargs)
            results.append(res)
            if on_episode is not None:
                on_episode(i, res)
        return results


def _estop_input(robot: Robot) -> Callable[[], bool] | None:
    """The robot's e-stop button as a callable (``PiRobot.estop_pressed`` is a property), or None."""
    button = getattr(robot, "estop_pressed", None)
    if button is None:
        return None
    if callable(button):
        return button
    return lambda: bool(getattr(robot, "estop_pressed", False))


def _as_action(a: Any) -> np.ndarray:
    """The requested action as float32 (2,) for recording; zeros when there was none."""
    if a is None:
        return np.zeros(2, np.float32)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(a, dtype=np.float32).reshape(2)
    except (TypeError, ValueError):
        return np.full(2, np.nan, np.float32)
