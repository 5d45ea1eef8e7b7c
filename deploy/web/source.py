"""The web page as a command source, and the live feed (telemetry + JPEG frames) it shows.

:class:`WebSource` is a :class:`deploy.teleop.CommandSource`: the websocket handlers (on uvicorn's
event-loop thread) write the newest drive command into a lock-protected slot, and the one control
loop reads it with :meth:`WebSource.command` on its own thread. The page counts for the deadman:

- no drive message for ``deadman`` seconds → :meth:`command` returns ``None`` (no fresh command), so
  the safety layer's deadman stops the motors;
- the driving websocket closed, the tab hidden (``visibilitychange``), or a refused message → an
  immediate stop command.

Only the newest connection drives (a phone that reconnects takes over); older connections may watch
and may always press e-stop. E-stop and reset become control-loop events (:meth:`events`); record, mode,
new episode and success are drained by the session driver (:meth:`controls`).

:class:`LiveFeed` carries what the loop publishes back: a telemetry dict and the latest camera frame,
JPEG-encoded on its own thread (only while someone watches), so the control loop never waits on it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from deploy.teleop import Command
from deploy.web.jpeg import Encoder, fit_frame, make_encoder

log = logging.getLogger(__name__)

STOP = np.zeros(2)

#: Page buttons that are control-loop events (``deploy.loop`` event names).
LOOP_EVENTS = {"estop": "estop", "reset": "reset_estop"}


def _drain(q: deque) -> list:
    out = []
    while True:
        try:
            out.append(q.popleft())
        except IndexError:
            return out


@dataclass(frozen=True)
class WebEvent:
    """A button pressed on the page: ``kind`` in estop/reset/record/mode/episode, ``arg`` its value."""

    kind: str
    arg: str | None = None
    stamp: float = 0.0


class LiveFeed:
    """Telemetry and JPEG frames from the robot process to every connected page (thread-safe)."""

    def __init__(
        self,
        *,
        width: int = 320,
        height: int = 240,
        quality: int = 70,
        encoder: Encoder | None = None,
    ) -> None:
        self.width = width
        self.height = height
        self._encode = encoder or make_encoder(quality)
        self._lock = threading.Lock()
        self._telemetry: dict[str, Any] = {}
        self._raw: np.ndarray | None = None
        self._raw_seq = 0
        self._jpeg: bytes | None = None
        self._jpeg_seq = 0
        self._wake = threading.Event()
        self._closed = False
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._watchers = 0
        self.frames_encoded = 0
        self._thread = threading.Thread(target=self._run, name="sim2pi-jpeg", daemon=True)
        self._thread.start()

    # --- producer side (the control loop) ----------------------------------------------------
    def publish_telemetry(self, **values: Any) -> None:
        """Merge values into the telemetry dict sent to the pages (~10 Hz)."""
        with self._lock:
            self._telemetry.update(values)

    @property
    def wants_frames(self) -> bool:
        """True while at least one page watches the live view (skip rendering otherwise)."""
        return self._watchers > 0

    def publish_frame(self, rgb: np.ndarray) -> None:
        """Offer the newest RGB uint8 frame; it is resized and encoded on the feed's own thread."""
        if self._closed or self._watchers == 0:
            return
        with self._lock:
            self._raw = np.array(rgb, dtype=np.uint8, copy=True)
            self._raw_seq += 1
        self._wake.set()

    # --- consumer side (websocket handlers, on the asyncio thread) ---------------------------
    def telemetry(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._telemetry)

    def latest_jpeg(self) -> tuple[int, bytes | None]:
        with self._lock:
            return self._jpeg_seq, self._jpeg

    def subscribe(self, event: asyncio.Event) -> None:
        """Set ``event`` (thread-safely, on the caller's running loop) whenever a new JPEG is ready."""
        with self._lock:
            self._waiters.add((asyncio.get_running_loop(), event))
            self._watchers += 1

    def unsubscribe(self, event: asyncio.Event) -> None:
        with self._lock:
            before = len(self._waiters)
            self._waiters = {w for w in self._waiters if w[1] is not event}
            self._watchers -= before - len(self._waiters)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=2.0)

    def _run(self) -> None:
        done = 0
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            with self._lock:
                raw, seq = self._raw, self._raw_seq
            if raw is None or seq == done:
                continue
            done = seq
            try:
                jpeg = self._encode(fit_frame(raw, self.width, self.height))
            except Exception:  # a bad frame must not kill the feed
                log.exception("could not encode a live-view frame")
                continue
            with self._lock:
                self._jpeg, self._jpeg_seq = jpeg, self._jpeg_seq + 1
                waiters = list(self._waiters)
            self.frames_encoded += 1
            for loop, event in waiters:
                try:
                    loop.call_soon_threadsafe(event.set)
                except RuntimeError:  # that loop is closed
                    pass


class WebSource:
    """The web page as a :class:`deploy.teleop.CommandSource` (see the module docstring)."""

    name = "web"

    def __init__(
        self,
        *,
        deadman: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
        on_estop: Callable[[], None] | None = None,
    ) -> None:
        self.deadman = float(deadman)
        self._clock = clock
        self._on_estop = on_estop
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._driver: int | None = None  # connection id allowed to drive
        self._visible: dict[int, bool] = {}
        self._action = STOP.copy()
        self._stamp = -float("inf")  # receipt time of the newest drive message
        self._seq = -1
        self._forced_stop = True  # disconnect / hidden / refused → stop now
        self._events: deque[str] = deque(maxlen=256)
        self._controls: deque[WebEvent] = deque(maxlen=256)
        self._closed = False
        self.refused = 0  # refused messages (all connections)
        self.last_apply: tuple[int, float] | None = None  # (seq, receipt stamp) last handed out
        self.last_raw: dict[str, Any] | None = None  # the newest tick's raw robot observation

    # --- called by the websocket handlers ----------------------------------------------------
    def connect(self) -> int:
        """Register a new page; it becomes the driver. Returns its connection id."""
        with self._lock:
            cid = next(self._ids)
            self._visible[cid] = True
            if self._driver is not None:
                log.info("web: connection %d takes control from %d", cid, self._driver)
            self._driver = cid
            self._stop_locked()
        return cid

    def disconnect(self, cid: int) -> None:
        """A page went away: if it was driving, stop at once."""
        with self._lock:
            self._visible.pop(cid, None)
            if self._driver == cid:
                self._driver = None
                self._stop_locked()
                log.info("web: driving connection %d closed; stopping", cid)

    def is_driver(self, cid: int) -> bool:
        with self._lock:
            return self._driver == cid

    def drive(self, cid: int, left: float, right: float, seq: int) -> bool:
        """Store a validated drive command from ``cid``; ignored unless ``cid`` drives and is visible."""
        now = self._clock()
        with self._lock:
            if self._closed or cid != self._driver or not self._visible.get(cid, False):
                return False
            self._action = np.array([left, right], dtype=np.float64)
            self._stamp = now
            self._seq = seq
            self._forced_stop = False
            return True

    def set_visible(self, cid: int, visible: bool) -> None:
        """The page reported ``visibilitychange``: hidden → stop until it drives again."""
        with self._lock:
            if cid not in self._visible:
                return
            self._visible[cid] = visible
            if not visible and cid == self._driver:
                self._stop_locked()

    def refuse(self, cid: int) -> None:
        """A message from ``cid`` was refused: stop (a bad message never keeps the robot moving)."""
        with self._lock:
            self.refused += 1
            if cid == self._driver:
                self._stop_locked()

    def post(self, kind: str, arg: str | None = None) -> None:
        """A button: e-stop and reset become loop events (e-stop also goes at once to
        ``on_estop``); record / mode / episode / success become controls for the session."""
        if kind == "estop":
            with self._lock:
                self._stop_locked()
            if self._on_estop is not None:
                try:
                    self._on_estop()
                except Exception:
                    log.exception("on_estop hook failed")
        if kind in LOOP_EVENTS:
            self.push_event(LOOP_EVENTS[kind])
        self._controls.append(WebEvent(kind, arg, self._clock()))

    def push_event(self, name: str) -> None:
        """Queue an event for the control loop (``deploy.loop`` names: estop, reset_estop, end,
        discard, success, quit)."""
        self._events.append(name)

    def _stop_locked(self) -> None:
        self._action = STOP.copy()
        self._forced_stop = True

    # --- the CommandSource protocol (called by the control loop) -----------------------------
    def command(self, ctx: Any = None) -> Command | None:
        """The newest command: a stop after a disconnect/hide/refusal, ``None`` once it is stale."""
        self.observe(ctx)
        now = self._clock()
        with self._lock:
            if self._closed or self._forced_stop:
                return Command(action=STOP.copy(), stamp=now, source=self.name)
            if now - self._stamp > self.deadman:
                return None
            self.last_apply = (self._seq, self._stamp)
            return Command(action=self._action.copy(), stamp=self._stamp, source=self.name)

    def observe(self, ctx: Any) -> None:
        """Keep the tick's raw observation for telemetry (the loop passes it in ``ctx``)."""
        raw = getattr(ctx, "raw", None)
        if raw is not None:
            self.last_raw = raw

    def events(self) -> list[str]:
        """Drain the loop events (oldest first): ``estop``, ``reset_estop``, ``end``, ..."""
        return _drain(self._events)

    def controls(self) -> list[WebEvent]:
        """Drain every button pressed since the last call (for the session driver)."""
        return _drain(self._controls)

    @property
    def seq(self) -> int:
        """``seq`` of the newest accepted drive message (-1 before the first)."""
        with self._lock:
            return self._seq

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._driver is not None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._stop_locked()
