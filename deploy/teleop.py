"""Command sources for driving the rover: keyboard (terminal), gamepad (evdev), scripted expert (sim)
and a callback slot the web page feeds — all behind one small interface.

A source has ``command(ctx) -> Command | None`` (``ctx`` has ``.obs`` (policy observation), ``.raw``
(raw robot observation), ``.info`` (episode info; ground truth on the twin, else no ``true_*`` keys)
and ``.now`` (the loop clock)), ``events() -> list[str]`` (operator events since the last call) and
``close()``. ``None`` means "no command"; the safety layer's deadman then stops the motors.

Events use the names :mod:`deploy.loop` understands:

========== =============================================================================
event      meaning
========== =============================================================================
``end``    next: finish this episode and keep it (keyboard ``n``, gamepad A)
``rerecord`` drop this episode and record it again (keyboard ``r``, gamepad B)
``success``  finish and mark it successful — the operator's judgement (keyboard ``g``)
``quit``   drop the episode in progress and stop (keyboard ``q``, gamepad Start)
``estop``  latch the e-stop (keyboard ``e``, gamepad Select)
``reset_estop`` clear a latched e-stop (keyboard ``x``, gamepad X)
========== =============================================================================

The scripted expert executes DART-noised actions (``expert.noisy(label)``) and keeps its clean action
in :attr:`Command.label`. The loop records the label as ``action`` (what the expert asked for: the
behaviour-cloning target) and what the motors got as ``action_applied`` (the noisy action after the
safety layer: what produced the next state, which off-policy learning uses), as
:func:`agent.rollout.rollout` does for in-process demos.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from hardware.errors import DeviceError, Sim2PiError

logger = logging.getLogger(__name__)

EVENT_NEXT = "end"
EVENT_RERECORD = "rerecord"
EVENT_SUCCESS = "success"
EVENT_QUIT = "quit"
EVENT_ESTOP = "estop"
EVENT_RESET = "reset_estop"
EVENTS = (EVENT_NEXT, EVENT_RERECORD, EVENT_SUCCESS, EVENT_QUIT, EVENT_ESTOP, EVENT_RESET)


@dataclass
class Command:
    """One drive command: ``action`` = (left, right) duty in [-1, 1], stamped with the loop clock
    time it was made (the deadman compares stamps), and the name of its source."""

    action: np.ndarray
    stamp: float
    source: str
    label: np.ndarray | None = None  # the scripted expert's clean action (DART); not executed


class Context(Protocol):
    """What a source sees each tick (``deploy.loop.TickContext`` satisfies it)."""

    obs: dict[str, np.ndarray]
    raw: dict[str, np.ndarray]
    info: dict[str, Any]
    now: float


@runtime_checkable
class CommandSource(Protocol):
    """A source of drive commands and operator events."""

    def command(self, ctx: Context) -> Command | None: ...

    def events(self) -> list[str]: ...

    def close(self) -> None: ...


def mix(forward: float, turn: float) -> np.ndarray:
    """Forward speed and turn rate (fractions of full duty, + = counter-clockwise) → (left, right)
    duty, scaled down together so neither wheel exceeds 1."""
    raw = np.array([forward - turn, forward + turn], np.float64)
    peak = float(np.max(np.abs(raw)))
    if peak > 1.0:
        raw /= peak
    return raw.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# keyboard

# key token -> ("forward" | "turn", step sign) | ("stop", 0) | ("event", name)
KEYMAP: dict[str, tuple[str, Any]] = {
    "w": ("forward", +1),
    "up": ("forward", +1),
    "s": ("forward", -1),
    "down": ("forward", -1),
    "a": ("turn", +1),
    "left": ("turn", +1),
    "d": ("turn", -1),
    "right": ("turn", -1),
    " ": ("stop", 0),
    "n": ("event", EVENT_NEXT),
    "r": ("event", EVENT_RERECORD),
    "g": ("event", EVENT_SUCCESS),
    "q": ("event", EVENT_QUIT),
    "e": ("event", EVENT_ESTOP),
    "x": ("event", EVENT_RESET),
}
_ARROWS = {"A": "up", "B": "down", "C": "right", "D": "left"}
KEY_HELP = (
    "W/A/S/D or arrows drive (each press steps the speed), space stops, n next episode, "
    "r re-record, g success, q quit, e e-stop, x reset e-stop"
)


def split_keys(buf: bytes) -> tuple[list[str], bytes]:
    """Split terminal input into key tokens (``"w"``, ``"up"``, ``" "``, ...); returns the tokens and
    an incomplete escape sequence to prepend to the next read. Letters are lower-cased."""
    keys: list[str] = []
    i = 0
    while i < len(buf):
        b = buf[i : i + 1]
        if b == b"\x1b":
            if i + 1 >= len(buf) or (buf[i + 1 : i + 2] in (b"[", b"O") and i + 2 >= len(buf)):
                return keys, buf[i:]
            if buf[i + 1 : i + 2] in (b"[", b"O"):
                code = buf[i + 2 : i + 3].decode("ascii", "replace")
                keys.append(_ARROWS.get(code, f"esc-{code}"))
                i += 3
                continue
            keys.append("esc")
            i += 1
            continue
        keys.append(b.decode("latin-1").lower())
        i += 1
    return keys, b""


@dataclass
class DriveState:
    """Keyboard drive setpoints: forward and turn in [-1, 1]."""

    forward: float = 0.0
    turn: float = 0.0


def apply_key(state: DriveState, key: str, step: float = 0.25) -> tuple[DriveState, str | None]:
    """Pure key → new drive state and optional event. Unknown keys change nothing."""
    kind, arg = KEYMAP.get(key, ("none", None))
    if kind == "forward":
        return DriveState(float(np.clip(state.forward + arg * step, -1, 1)), state.turn), None
    if kind == "turn":
        return DriveState(state.forward, float(np.clip(state.turn + arg * step, -1, 1))), None
    if kind == "stop":
        return DriveState(), None
    if kind == "event":
        if arg in (EVENT_ESTOP, EVENT_QUIT, EVENT_NEXT, EVENT_RERECORD, EVENT_SUCCESS):
            return DriveState(), arg  # stop driving on anything that ends or freezes the episode
        return state, arg
    return state, None


class KeyboardSource:
    """Drive from the terminal: raw keys (cbreak mode: no echo, no line buffering; Ctrl-C still
    sends SIGINT) read on a background thread. Works over SSH without a display.

    Keys (see :data:`KEY_HELP`) step sticky speed setpoints; space stops. If no key arrives for
    ``idle_stop`` seconds the setpoints drop to zero (holding a key auto-repeats, so a held key keeps
    driving). ``fd`` defaults to stdin; tests pass a pty's slave end.
    """

    name = "keyboard"

    def __init__(
        self,
        fd: int | None = None,
        *,
        step: float = 0.25,
        idle_stop: float = 1.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import sys

        self.fd = sys.stdin.fileno() if fd is None else fd
        if not os.isatty(self.fd):
            raise DeviceError(
                "keyboard teleop needs a terminal (stdin is not a tty); run it in a "
                "terminal or over `ssh -t`"
            )
        self.step = float(step)
        self.idle_stop = float(idle_stop)
        self.clock = clock
        self._state = DriveState()
        self._events: list[str] = []
        self._last_key = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._saved: list[Any] | None = None
        self._enter_cbreak()
        self._thread = threading.Thread(target=self._run, name="keyboard-teleop", daemon=True)
        self._thread.start()

    def _enter_cbreak(self) -> None:
        import termios
        import tty

        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd, termios.TCSANOW)

    def _run(self) -> None:
        pending = b""
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(self.fd, 64)
            except OSError:
                break
            if not data:
                break
            keys, pending = split_keys(pending + data)
            self.feed(keys)

    def feed(self, keys: list[str]) -> None:
        """Apply key tokens (the reader thread calls this)."""
        with self._lock:
            for k in keys:
                self._state, ev = apply_key(self._state, k, self.step)
                self._last_key = self.clock()
                if ev is not None:
                    self._events.append(ev)

    @property
    def state(self) -> DriveState:
        with self._lock:
            return DriveState(self._state.forward, self._state.turn)

    def command(self, ctx: Context) -> Command | None:
        with self._lock:
            if self.idle_stop > 0 and self.clock() - self._last_key > self.idle_stop:
                self._state = DriveState()
            action = mix(self._state.forward, self._state.turn)
        return Command(action, float(ctx.now), self.name)

    def events(self) -> list[str]:
        with self._lock:
            ev, self._events = self._events, []
        return ev

    def reset(self) -> None:
        """New episode: start from standstill."""
        with self._lock:
            self._state = DriveState()

    def close(self) -> None:
        """Stop the reader and restore the terminal (idempotent)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        if self._saved is not None:
            import termios

            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            except termios.error:  # the terminal went away
                pass
            self._saved = None


# ----------------------------------------------------------------------------------------------
# gamepad (Linux evdev)

# Linux input event codes (linux/input-event-codes.h)
EV_KEY, EV_ABS = 1, 3
ABS_X, ABS_Y, ABS_RX, ABS_RY = 0, 1, 3, 4
BTN_SOUTH, BTN_EAST, BTN_NORTH, BTN_WEST = 304, 305, 307, 308
BTN_SELECT, BTN_START, BTN_MODE = 314, 315, 316
GAMEPAD_BUTTONS = {
    BTN_SOUTH: EVENT_NEXT,
    BTN_EAST: EVENT_RERECORD,
    BTN_NORTH: EVENT_SUCCESS,
    BTN_WEST: EVENT_RESET,
    BTN_START: EVENT_QUIT,
    BTN_SELECT: EVENT_ESTOP,
    BTN_MODE: EVENT_ESTOP,
}


def axis_to_unit(value: float, lo: float, hi: float, deadzone: float = 0.1) -> float:
    """Raw axis reading in [lo, hi] → [-1, 1] with a dead zone around the centre (rescaled so
    the output is continuous at the dead zone's edge)."""
    if hi <= lo:
        return 0.0
    x = 2.0 * (float(value) - lo) / (hi - lo) - 1.0
    x = float(np.clip(x, -1.0, 1.0))
    if abs(x) <= deadzone:
        return 0.0
    return float(np.sign(x) * (abs(x) - deadzone) / (1.0 - deadzone))


def gamepad_action(stick_forward: float, stick_turn: float) -> np.ndarray:
    """Left stick (up = -1 on most pads, like evdev reports it; right = +1) → (left, right) duty."""
    return mix(-stick_forward, -stick_turn)


class GamepadSource:
    """Drive from a gamepad through Linux ``evdev`` (optional dependency): left stick drives, buttons
    send events (A next, B re-record, Y success, X reset e-stop, Start quit, Select/Mode e-stop).

    ``device``: an ``evdev.InputDevice``, a ``/dev/input/eventN`` path, or None for the first device
    with a stick. If the device disappears, :meth:`command` returns None so the deadman stops.
    """

    name = "gamepad"

    def __init__(self, device: Any = None, *, deadzone: float = 0.1) -> None:
        self.deadzone = float(deadzone)
        self.device = (
            device
            if (device is not None and not isinstance(device, str))
            else _open_gamepad(device)
        )
        self._absinfo: dict[int, tuple[float, float]] = {}
        try:
            caps = self.device.capabilities(absinfo=True)
            for code, info in caps.get(EV_ABS, []):
                self._absinfo[int(code)] = (float(info.min), float(info.max))
        except Exception:  # a device without absinfo: assume signed 16 bit
            pass
        self._axes = {ABS_X: 0.0, ABS_Y: 0.0}
        self._events: list[str] = []
        self._alive = True
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gamepad-teleop", daemon=True)
        self._thread.start()

    def handle(self, etype: int, code: int, value: int) -> None:
        """Apply one input event (the reader thread calls this)."""
        with self._lock:
            if etype == EV_ABS and code in (ABS_X, ABS_Y):
                lo, hi = self._absinfo.get(code, (-32768.0, 32767.0))
                self._axes[code] = axis_to_unit(value, lo, hi, self.deadzone)
            elif etype == EV_KEY and value == 1 and code in GAMEPAD_BUTTONS:
                self._events.append(GAMEPAD_BUTTONS[code])

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([self.device.fd], [], [], 0.05)
                if not ready:
                    continue
                for ev in self.device.read():
                    self.handle(ev.type, ev.code, ev.value)
        except (OSError, ValueError) as e:
            logger.error("gamepad lost (%s): commands stop", e)
            with self._lock:
                self._alive = False

    def command(self, ctx: Context) -> Command | None:
        with self._lock:
            if not self._alive:
                return None
            action = gamepad_action(self._axes[ABS_Y], self._axes[ABS_X])
        return Command(action, float(ctx.now), self.name)

    def events(self) -> list[str]:
        with self._lock:
            ev, self._events = self._events, []
        return ev

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
        close = getattr(self.device, "close", None)
        if callable(close):
            close()


def _open_gamepad(path: str | None) -> Any:
    try:
        import evdev
    except ImportError:
        raise DeviceError(
            "gamepad teleop needs the 'evdev' package (Linux only): "
            "pip install evdev — or use --teleop keyboard"
        ) from None
    if path is not None:
        try:
            return evdev.InputDevice(path)
        except OSError as e:
            raise DeviceError(f"cannot open the gamepad {path}: {e.strerror}") from None
    for p in evdev.list_devices():
        dev = evdev.InputDevice(p)
        abs_codes = [c for c, _ in dev.capabilities(absinfo=True).get(EV_ABS, [])]
        if ABS_X in abs_codes and ABS_Y in abs_codes:
            logger.info("using gamepad %s (%s)", dev.path, dev.name)
            return dev
        dev.close()
    raise DeviceError(
        "no gamepad found under /dev/input (is it connected, and may this user read "
        "/dev/input/event*? add the user to the 'input' group)"
    )


# ----------------------------------------------------------------------------------------------
# scripted expert (sim) and the callback slot (web page)


class ExpertSource:
    """The task's scripted expert (``sim.experts.make_expert``, imported lazily) as a command
    source. It executes ``expert.noisy(label)`` (DART noise of std ``noise``) and keeps the clean
    label in :attr:`Command.label` (recorded as ``action``; see the module docstring)."""

    name = "expert"

    def __init__(
        self, task: str, desc: Any, *, noise: float = 0.0, seed: int | None = None
    ) -> None:
        try:
            from sim.experts import make_expert
        except ImportError as e:
            raise Sim2PiError(
                f"the scripted expert needs the sim extra (pip install 'sim2pi[sim]'): {e}"
            ) from None
        self.expert = make_expert(task, desc, noise=noise, seed=seed)

    def reset(self) -> None:
        self.expert.reset()

    def command(self, ctx: Context) -> Command | None:
        label = np.asarray(self.expert.act(ctx.obs, ctx.info), np.float32)
        return Command(self.expert.noisy(label), float(ctx.now), self.name, label=label)

    def events(self) -> list[str]:
        return []

    def close(self) -> None:
        pass


class CallbackSource:
    """A thread-safe slot another component fills (the web page's socket handler): ``push`` a
    command, ``push_event`` an event; the loop reads the latest command each tick. Commands are
    stamped with ``clock()`` when pushed, so a silent client trips the deadman."""

    def __init__(self, name: str = "web", *, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.clock = clock
        self._latest: Command | None = None
        self._events: list[str] = []
        self._lock = threading.Lock()

    def push(self, action: Any, stamp: float | None = None) -> None:
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if a.shape != (2,):
            raise Sim2PiError(f"a drive command is (left, right), got shape {a.shape}")
        with self._lock:
            self._latest = Command(a, self.clock() if stamp is None else float(stamp), self.name)

    def push_event(self, event: str) -> None:
        if event not in EVENTS:
            raise Sim2PiError(f"unknown event {event!r}; one of {list(EVENTS)}")
        with self._lock:
            self._events.append(event)

    def command(self, ctx: Context) -> Command | None:
        with self._lock:
            return self._latest

    def events(self) -> list[str]:
        with self._lock:
            ev, self._events = self._events, []
        return ev

    def reset(self) -> None:
        with self._lock:
            self._latest = None

    def close(self) -> None:
        pass


def make_source(
    kind: str,
    *,
    task: str = "reach",
    desc: Any = None,
    noise: float = 0.0,
    seed: int | None = None,
    device: str | None = None,
) -> CommandSource:
    """Build a source by name: ``keyboard``, ``gamepad``, ``expert``."""
    if kind == "keyboard":
        return KeyboardSource()
    if kind == "gamepad":
        return GamepadSource(device)
    if kind == "expert":
        return ExpertSource(task, desc, noise=noise, seed=seed)
    raise Sim2PiError(f"unknown teleop source {kind!r}; choose keyboard, gamepad or expert")
