"""Teleop sources: the pure key mapping, the tty keyboard reader on a pty, gamepad mapping, the
callback slot and the scripted expert source."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from deploy import teleop
from deploy.teleop import (
    CallbackSource,
    CommandSource,
    DriveState,
    KeyboardSource,
    apply_key,
    axis_to_unit,
    gamepad_action,
    mix,
    split_keys,
)
from hardware.errors import DeviceError, Sim2PiError


@dataclass
class Ctx:
    obs: dict[str, np.ndarray] = field(default_factory=dict)
    raw: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    now: float = 0.0


def test_split_keys_handles_arrows_letters_and_partial_escapes() -> None:
    assert split_keys(b"wA \x1b[A\x1b[Dq") == (["w", "a", " ", "up", "left", "q"], b"")
    keys, rest = split_keys(b"d\x1b[")
    assert keys == ["d"] and rest == b"\x1b["
    assert split_keys(rest + b"C") == (["right"], b"")
    assert split_keys(b"\x1b") == ([], b"\x1b")


def test_key_mapping_is_a_pure_function() -> None:
    s = DriveState()
    s, ev = apply_key(s, "w")
    assert (s.forward, s.turn, ev) == (0.25, 0.0, None)
    for _ in range(10):
        s, _ = apply_key(s, "up")
    assert s.forward == 1.0  # clamped
    s, _ = apply_key(s, "a")
    assert s.turn == 0.25
    s, _ = apply_key(s, "right")
    s, _ = apply_key(s, "d")
    assert s.turn == -0.25
    s, ev = apply_key(s, " ")
    assert (s, ev) == (DriveState(), None)
    s = DriveState(0.5, 0.0)
    assert apply_key(s, "n") == (DriveState(), "end")
    assert apply_key(s, "r") == (DriveState(), "rerecord")
    assert apply_key(s, "q") == (DriveState(), "quit")
    assert apply_key(s, "e") == (DriveState(), "estop")
    assert apply_key(s, "x") == (s, "reset_estop")
    assert apply_key(s, "z") == (s, None)
    assert apply_key(DriveState(), "s", step=0.5)[0].forward == -0.5


def test_mix_keeps_wheels_in_range_and_turns_the_right_way() -> None:
    np.testing.assert_allclose(mix(1.0, 0.0), [1, 1])
    np.testing.assert_allclose(mix(0.0, 0.5), [-0.5, 0.5])  # + turn = counter-clockwise
    a = mix(1.0, 1.0)
    assert np.max(np.abs(a)) <= 1.0 and a[1] > a[0]
    np.testing.assert_allclose(mix(-0.5, 0.0), [-0.5, -0.5])


def test_keyboard_reader_on_a_pty() -> None:
    import pty
    import termios

    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    now = [0.0]
    src = KeyboardSource(fd=slave, idle_stop=1.0, clock=lambda: now[0])
    try:
        assert isinstance(src, CommandSource)
        assert not termios.tcgetattr(slave)[3] & termios.ICANON  # cbreak: no line buffering
        os.write(master, b"ww\x1b[D")

        def wait_for(pred: Any) -> None:
            for _ in range(400):
                if pred():
                    return
                time.sleep(0.005)
            raise AssertionError("the reader thread did not see the keys")

        wait_for(lambda: src.state.turn == 0.25)
        assert src.state.forward == 0.5
        cmd = src.command(Ctx(now=3.5))
        np.testing.assert_allclose(cmd.action, mix(0.5, 0.25))
        assert cmd.stamp == 3.5 and cmd.source == "keyboard"
        os.write(master, b"n")
        wait_for(lambda: src.state.forward == 0.0)
        assert src.events() == ["end"] and src.events() == []
        os.write(master, b"w")
        wait_for(lambda: src.state.forward == 0.25)
        now[0] += 2.0  # no key for longer than idle_stop
        np.testing.assert_allclose(src.command(Ctx(now=5.0)).action, [0, 0])
    finally:
        src.close()
    assert termios.tcgetattr(slave)[3] == before[3]  # terminal restored
    os.close(master)
    os.close(slave)


def test_keyboard_refuses_a_non_tty() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(DeviceError, match="terminal"):
            KeyboardSource(fd=r)
    finally:
        os.close(r)
        os.close(w)


def test_gamepad_axis_mapping() -> None:
    assert axis_to_unit(0, -32768, 32767) == 0.0
    assert axis_to_unit(32767, -32768, 32767) == pytest.approx(1.0)
    assert axis_to_unit(-32768, -32768, 32767) == pytest.approx(-1.0)
    assert axis_to_unit(1500, -32768, 32767, deadzone=0.1) == 0.0
    assert axis_to_unit(128, 0, 255) == pytest.approx(0.0, abs=0.01)
    half = axis_to_unit(0.55, 0.0, 1.0, deadzone=0.1)
    assert 0 < half < 0.1
    np.testing.assert_allclose(gamepad_action(-1.0, 0.0), [1, 1])  # stick up = forward
    left = gamepad_action(0.0, -1.0)  # stick left = turn left (counter-clockwise)
    assert left[1] > left[0]


class FakePad:
    """An evdev-like device: a pipe fd and queued events."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        self.fd = self.r
        self.queue: list[Any] = []

    def capabilities(self, absinfo: bool = True) -> dict[int, list[Any]]:
        info = type("AbsInfo", (), {"min": 0, "max": 255})
        return {teleop.EV_ABS: [(teleop.ABS_X, info), (teleop.ABS_Y, info)]}

    def read(self) -> list[Any]:
        os.read(self.r, 1)
        ev, self.queue = self.queue, []
        return ev

    def send(self, *events: tuple[int, int, int]) -> None:
        self.queue += [type("E", (), {"type": t, "code": c, "value": v}) for t, c, v in events]
        os.write(self.w, b"x")

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


def test_gamepad_source_with_a_fake_device() -> None:
    pad = FakePad()
    src = teleop.GamepadSource(pad, deadzone=0.05)
    try:
        src.handle(teleop.EV_ABS, teleop.ABS_Y, 0)  # full up
        src.handle(teleop.EV_ABS, teleop.ABS_X, 128)  # centred
        np.testing.assert_allclose(src.command(Ctx(now=1.0)).action, [1, 1], atol=0.01)
        pad.send((teleop.EV_KEY, teleop.BTN_SOUTH, 1), (teleop.EV_KEY, teleop.BTN_SELECT, 1))
        for _ in range(400):
            if src._events:
                break
            time.sleep(0.005)
        assert src.events() == ["end", "estop"]
    finally:
        src.close()


def test_gamepad_without_evdev_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "evdev", None)
    with pytest.raises(DeviceError, match="pip install evdev"):
        teleop.GamepadSource()


def test_callback_source_slot() -> None:
    now = [10.0]
    src = CallbackSource(clock=lambda: now[0])
    assert src.command(Ctx()) is None
    src.push((0.2, -0.2))
    cmd = src.command(Ctx())
    np.testing.assert_allclose(cmd.action, [0.2, -0.2])
    assert cmd.stamp == 10.0 and cmd.source == "web"
    src.push_event("estop")
    assert src.events() == ["estop"] and src.events() == []
    with pytest.raises(Sim2PiError):
        src.push((1, 2, 3))
    with pytest.raises(Sim2PiError):
        src.push_event("launch")


def test_expert_source_executes_noisy_action_and_keeps_the_label() -> None:
    pytest.importorskip("sim.experts")
    from hardware.description import load_description

    desc = load_description("rover")
    src = teleop.ExpertSource("reach", desc, noise=0.3, seed=1)
    obs = {
        "observation": np.array([0, 0, 1, 0, 0, 0], np.float32),
        "achieved_goal": np.zeros(2, np.float32),
        "desired_goal": np.array([0.1, 0.0], np.float32),
    }
    src.reset()
    cmd = src.command(Ctx(obs=obs, now=2.0))
    assert cmd.source == "expert" and cmd.stamp == 2.0
    assert cmd.label is not None and cmd.label[0] > 0 and cmd.label[1] > 0  # goal straight ahead
    assert not np.allclose(cmd.action, cmd.label)  # DART noise is executed
    assert np.all(np.abs(cmd.action) <= 1.0)
    quiet = teleop.ExpertSource("reach", desc, noise=0.0).command(Ctx(obs=obs))
    np.testing.assert_allclose(quiet.action, quiet.label)
