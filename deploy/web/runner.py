"""Glue between the web page and the one control loop: live view, telemetry and button events.

:class:`WebTeleop` owns the :class:`~deploy.web.source.WebSource`, the
:class:`~deploy.web.source.LiveFeed` and the :class:`~deploy.web.server.WebServer`. The control loop
calls :meth:`WebTeleop.after_tick` once per tick (on the loop's thread, so rendering the twin's
camera is safe: a PyBullet client is not thread-safe), which publishes telemetry and a live-view
frame; :meth:`WebTeleop.handle_events` turns the page's buttons into loop/safety/recorder actions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from deploy.web.server import WebServer
from deploy.web.source import LiveFeed, WebSource

log = logging.getLogger(__name__)


def _first(raw: Mapping[str, Any], key: str) -> float | None:
    v = raw.get(key)
    if v is None:
        return None
    return float(np.asarray(v).reshape(-1)[0])


class WebTeleop:
    """The web page's side of a teleop session (see the module docstring).

    Args:
        deadman: seconds without a drive message before the source goes stale.
        host, port, token: where to serve (see :class:`~deploy.web.server.WebServer`).
        view_size: (width, height) of the live view.
        video_fps: most live-view frames rendered per second (the loop may tick faster).
        on_estop: called at once (on the server thread) when the page presses e-stop; pass the
            safety layer's thread-safe ``estop``.
    """

    def __init__(
        self,
        *,
        deadman: float = 0.3,
        host: str = "127.0.0.1",
        port: int = 8000,
        token: str | None = None,
        view_size: tuple[int, int] = (320, 240),
        video_fps: float = 20.0,
        on_estop: Callable[[], None] | None = None,
    ) -> None:
        self.source = WebSource(deadman=deadman, on_estop=on_estop)
        self.feed = LiveFeed(width=view_size[0], height=view_size[1])
        self.server = WebServer(self.source, self.feed, host=host, port=port, token=token)
        self.video_period = 1.0 / video_fps if video_fps > 0 else 0.0
        self._last_frame = -float("inf")
        self._last_tick: float | None = None
        self._rate = 0.0

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> WebTeleop:
        self.server.start()
        return self

    def close(self) -> None:
        self.source.close()
        self.server.stop()
        self.feed.close()

    def __enter__(self) -> WebTeleop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ per tick (loop thread)
    def after_tick(
        self,
        robot: Any,
        raw: Mapping[str, Any] | None,
        *,
        requested: Any = None,
        applied: Any = None,
        reasons: tuple[str, ...] = (),
        now: float | None = None,
        **state: Any,
    ) -> None:
        """Publish this tick's telemetry and, at most ``video_fps`` times a second, a frame."""
        t = time.monotonic() if now is None else now
        if self._last_tick is not None and t > self._last_tick:
            inst = 1.0 / (t - self._last_tick)
            self._rate = inst if self._rate == 0 else 0.9 * self._rate + 0.1 * inst
        self._last_tick = t
        raw = raw or {}
        ws = raw.get("wheel_speed")
        valid = _first(raw, "range_valid")
        self.feed.publish_telemetry(
            range=_first(raw, "range"),
            range_valid=None if valid is None else valid >= 0.5,
            wheel_speed=None if ws is None else [float(x) for x in np.asarray(ws).reshape(-1)[:2]],
            requested=None if requested is None else [float(x) for x in np.asarray(requested)[:2]],
            applied=None if applied is None else [float(x) for x in np.asarray(applied)[:2]],
            safety=[r for r in reasons if r != "slew"],
            loop_hz=self._rate,
            **state,
        )
        if self.feed.wants_frames and t - self._last_frame >= self.video_period * 0.9:
            frame = self._frame(robot, raw)
            if frame is not None:
                self._last_frame = t
                self.feed.publish_frame(frame)

    def _frame(self, robot: Any, raw: Mapping[str, Any]) -> np.ndarray | None:
        """The twin renders the view at full size; a real robot shows its camera frame."""
        render = getattr(robot, "render_camera", None)
        if render is not None and getattr(robot, "is_connected", False):
            try:
                return render(self.feed.width, self.feed.height)
            except Exception:
                log.exception("cannot render the live view")
                return None
        img = raw.get("image")
        return None if img is None else np.asarray(img)


class _Relay:
    """A policy source that also forwards the web page's loop events (policy mode, where the page
    is not one of the loop's sources but its e-stop / reset must still reach the loop)."""

    def __init__(self, policy: Any, web: WebSource) -> None:
        self.policy, self.web = policy, web
        self.name = getattr(policy, "name", "policy")

    def reset(self) -> None:
        reset = getattr(self.policy, "reset", None)
        if callable(reset):
            reset()

    def command(self, ctx: Any) -> Any:
        self.web.observe(ctx)
        return self.policy.command(ctx)

    def events(self) -> list[str]:
        return list(self.policy.events()) + self.web.events()

    def close(self) -> None:
        self.policy.close()


#: Effectively unbounded episodes while just driving around (not recording).
FREE_DRIVE_STEPS = 10**9


class WebSession:
    """Runs :class:`deploy.loop.ControlLoop` episodes back to back for the web page.

    Recording follows the page's buttons: *Record* ends the current (unrecorded) episode and starts a
    recorded one from a fresh scene; *Save* ends it (saved, like the keyboard's end-of-episode key);
    *Discard* drops it; *New episode* ends it and starts the next one (recorded if recording); the
    task's ``max_steps`` and success end recorded episodes exactly as in keyboard recording. While
    not recording, episodes never time out (free driving).

    Modes: ``teleop`` (the page drives), ``policy`` (``policy`` drives), ``shared`` (``policy``
    drives, a fresh command from the page takes over and is flagged ``intervention``). Policy and
    shared need a ``policy`` source.

    Args:
        loop: the control loop, built with the web source as its source (mode ``teleop``).
        web: the page's :class:`WebTeleop`.
        backend: the twin's ``TwinBackend`` (new scene per episode), or None on a real robot.
        recorder: a ``DatasetWriter`` (Record is refused without one).
        policy: a command source for the policy / shared modes.
        episode_args: episode keyword arguments on a real robot (goal, task_id), default none.
    """

    def __init__(
        self,
        loop: Any,
        web: WebTeleop,
        *,
        backend: Any = None,
        recorder: Any = None,
        policy: Any = None,
        episode_args: Mapping[str, Any] | None = None,
    ) -> None:
        self.loop, self.web, self.backend = loop, web, backend
        self.recorder, self.policy = recorder, policy
        self.episode_args = dict(episode_args or {})
        self.recording = False
        self.saved = 0
        self.episodes = 0
        self.last_result: Any = None
        self._want_recording: bool | None = None
        self._notice = ""
        self._stop = False
        loop.recorder = None

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current tick (thread-safe)."""
        self._stop = True

    # ------------------------------------------------------------------ buttons
    def _controls(self) -> None:
        src = self.web.source
        for ev in src.controls():
            if ev.kind == "record":
                self._record(ev.arg)
            elif ev.kind == "mode" and ev.arg is not None:
                self._mode(ev.arg)
            elif ev.kind == "episode":
                src.push_event("end")
            elif ev.kind == "success":
                src.push_event("success")

    def _record(self, op: str | None) -> None:
        src = self.web.source
        if op == "start" and not self.recording:
            if self.recorder is None:
                self._notice = "recording needs --record DIR"
                return
            self._want_recording = True
            src.push_event("discard")  # end the free-driving episode; the next one is recorded
        elif op == "stop" and self.recording:
            self._want_recording = False
            src.push_event("end")  # saved (an episode ended by the operator is complete)
        elif op == "discard" and self.recording:
            self._want_recording = False
            src.push_event("discard")

    def _mode(self, mode: str) -> None:
        loop, src = self.loop, self.web.source
        if mode != "teleop" and self.policy is None:
            self._notice = f"mode {mode} needs a policy (--policy BUNDLE)"
            return
        if mode == "teleop":
            loop.source, loop.takeover = src, None
        elif mode == "policy":
            loop.source, loop.takeover = _Relay(self.policy, src), None
        else:
            loop.source, loop.takeover = self.policy, src
        if loop.mode != mode:
            log.info("web: mode %s -> %s", loop.mode, mode)
        loop.mode = mode
        self._notice = ""

    # ------------------------------------------------------------------ the episodes
    def _episode_kwargs(self) -> dict[str, Any]:
        args = (
            dict(self.backend.new_episode())
            if self.backend is not None
            else dict(self.episode_args)
        )
        if not self.recording:
            args["max_steps"] = FREE_DRIVE_STEPS
        return {k: v for k, v in args.items() if k in ("goal", "task_id", "max_steps", "box_guess")}

    def _publish(self, r: Any) -> None:
        loop = self.loop
        rec = self.recorder
        self.web.after_tick(
            loop.robot,
            self.web.source.last_raw or {},
            requested=r.requested,
            applied=r.applied,
            reasons=r.reasons,
            mode=loop.mode,
            estop=loop.safety.latched,
            recording=self.recording,
            episodes=self.saved,
            frames=int(getattr(rec, "episode_frames", 0) or 0) if self.recording else 0,
            step=r.step,
            task=loop.task,
            notice=self._notice,
            intervention=bool(r.intervention),
        )

    def run(self, max_episodes: int | None = None) -> None:
        """Run episodes until :meth:`stop`, a loop stop request (signal, quit) or ``max_episodes``."""
        loop = self.loop
        while (
            not self._stop
            and not loop.stop_requested
            and (max_episodes is None or self.episodes < max_episodes)
        ):
            if self._want_recording is not None:
                self.recording, self._want_recording = self._want_recording, None
            loop.recorder = self.recorder if self.recording else None
            loop.stop_on_success = self.recording
            loop.start_episode(**self._episode_kwargs())
            end, interrupted = "", False
            try:
                deadline = loop.clock()
                while True:
                    if self._stop or loop.stop_requested:
                        end, interrupted = "stopped", True
                        break
                    self._controls()
                    r = loop.tick()
                    self._publish(r)
                    if r.done:
                        end = r.end
                        interrupted = r.end in ("event:quit", "event:discard")
                        break
                    if loop.paced:
                        deadline = self._pace(deadline)
            except BaseException:
                loop.end_episode(interrupted=True, end="error")
                raise
            res = loop.end_episode(interrupted=interrupted, end=end)
            self.last_result = res
            self.episodes += 1
            if res.info.get("recorded"):
                self.saved += 1
                log.info("web: episode saved (%d steps, success %s)", res.steps, res.success)
            if self.recording and self._want_recording is None and end in ("success", "max_steps"):
                pass  # keep recording: the next episode is recorded too, as with the keyboard

    def _pace(self, deadline: float) -> float:
        loop = self.loop
        deadline += loop.period
        now = loop.clock()
        if now > deadline:
            loop.times.miss()
            return now
        loop.sleep(deadline - now)
        return deadline


def open_recorder(path: str | Any, task: str, desc: Any) -> Any:
    """A ``DatasetWriter`` for ``task`` on ``desc`` at ``path`` (appends when it already exists)."""
    from pathlib import Path

    from deploy.dataset import DatasetWriter
    from hardware.tasks import task_spec

    root = Path(path)
    if (root / "meta" / "info.json").exists():
        return DatasetWriter.open(root)
    return DatasetWriter.create(root, task_spec(task, desc), round(desc.control.rate), robot=desc)


def build_session(
    robot: Any,
    task: str,
    *,
    backend: Any = None,
    recorder: Any = None,
    policy: Any = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    rate: float | None = None,
    episode_args: Mapping[str, Any] | None = None,
    view_size: tuple[int, int] = (320, 240),
    video_fps: float = 20.0,
) -> WebSession:
    """Wire robot → one :class:`deploy.loop.ControlLoop` (paced) ← the web page; not started.

    Start serving with ``session.web.start()``, then ``session.run()`` on the thread that should
    own the loop (the main thread in the CLI, for SIGINT / SIGTERM); close with
    ``session.web.close()`` and ``session.loop.close()``.
    """
    from deploy.loop import ControlLoop
    from hardware.tasks import Observer

    desc = robot.description
    holder: dict[str, Any] = {}
    web = WebTeleop(
        deadman=desc.safety.deadman,
        host=host,
        port=port,
        token=token,
        view_size=view_size,
        video_fps=video_fps,
        on_estop=lambda: holder["loop"].estop("web"),
    )
    gt = backend.ground_truth if backend is not None else None
    loop = ControlLoop(
        robot,
        Observer(task, desc),
        web.source,
        rate=rate,
        paced=True,
        ground_truth=gt,
        mode="teleop",
    )
    holder["loop"] = loop
    return WebSession(
        loop, web, backend=backend, recorder=recorder, policy=policy, episode_args=episode_args
    )
