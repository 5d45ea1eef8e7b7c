"""The teleop page in a real browser (Debian's chromium, headless, through Playwright) driving the
PyBullet twin through the one control loop: keys, joystick, deadman on close/hide, e-stop latch,
and a recording made from the page.

Timing assertions are bounds on polling (generous), never measured durations.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not Path(CHROMIUM).exists():  # pragma: no cover - CI installs it (.ci/run)
    pytest.skip(
        "Debian chromium is not installed (apt-get install chromium)", allow_module_level=True
    )
pytest.importorskip("playwright.sync_api")
pytest.importorskip("pybullet")


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``cond`` until truthy (a generous bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    v = cond()
    assert v, f"timed out waiting for {what or cond}"
    return v


class Rig:
    """The twin + loop + web server on a thread, and a browser."""

    def __init__(self, record_dir: Path) -> None:
        from deploy.web.runner import build_session, open_recorder
        from hardware.description import load_description
        from sim.backend import TwinBackend

        desc = load_description("rover")
        self.backend = TwinBackend("reach", desc, seed=3)
        self.record_dir = record_dir
        self.recorder = open_recorder(record_dir, "reach", desc)
        self.session = build_session(
            self.backend.robot, "reach", backend=self.backend, recorder=self.recorder, port=0
        )
        self.session.web.start()
        self.thread = threading.Thread(target=self.session.run, name="test-loop", daemon=True)
        self.thread.start()
        self.url = self.session.web.url

    @property
    def loop(self) -> Any:
        return self.session.loop

    def applied(self) -> np.ndarray:
        t = self.loop.last_tick
        return np.zeros(2) if t is None or t.applied is None else np.asarray(t.applied)

    def requested(self) -> np.ndarray:
        t = self.loop.last_tick
        return np.zeros(2) if t is None or t.requested is None else np.asarray(t.requested)

    def close(self) -> None:
        self.session.stop()
        self.thread.join(10)
        self.session.web.close()
        self.loop.close()


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    tmp = Path(tempfile.mkdtemp(prefix="sim2pi-web-"))
    r = Rig(tmp / "demos")
    try:
        yield r
    finally:
        r.close()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="sim2pi-chromium-")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 412, "height": 915},
            has_touch=True,
        )
        try:
            yield ctx
        finally:
            ctx.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(rig: Rig, browser: Any) -> Iterator[Any]:
    pg = browser.new_page()
    pg.on("dialog", lambda d: d.accept())
    pg.goto(rig.url)
    wait_for(lambda: rig.session.web.source.connected, what="the page's websocket")
    pg.wait_for_selector("#conn.on")
    try:
        yield pg
    finally:
        if not pg.is_closed():
            pg.close()
        wait_for(lambda: not rig.session.web.source.connected, what="disconnect")
        wait_for(lambda: np.allclose(rig.applied(), 0.0), what="stop after the test")


def _ticks_pass(rig: Rig, n: int) -> None:
    start = rig.loop.last_tick.step if rig.loop.last_tick else 0
    ep = rig.session.episodes
    wait_for(
        lambda: rig.session.episodes != ep or rig.loop.last_tick.step >= start + n,
        what=f"{n} ticks",
    )


def test_page_shows_live_view_and_telemetry(rig: Rig, page: Any) -> None:
    # A JPEG of the configured size arrives over the websocket and is shown.
    # Both sizes are read in one evaluation: each new frame swaps the image's src, and a frame
    # still decoding reports 0x0, so two separate reads can straddle a swap.
    size_js = "(() => { const v = document.getElementById('view'); return [v.naturalWidth, v.naturalHeight]; })()"
    wait_for(lambda: page.evaluate(size_js) == [320, 240], what="a 320x240 frame")
    wait_for(lambda: "Hz" in page.inner_text("#t-loop"), what="loop rate telemetry")
    assert "teleop" in page.inner_text("#mode-pill")
    # Phone-ready: a viewport meta tag and big touch targets.
    assert "width=device-width" in page.get_attribute("meta[name=viewport]", "content")
    box = page.locator("#estop").bounding_box()
    assert box["height"] >= 44 and box["width"] >= 44


def test_keys_drive_the_twin(rig: Rig, page: Any) -> None:
    page.keyboard.down("w")
    wait_for(lambda: rig.applied()[0] > 0.2 and rig.applied()[1] > 0.2, what="forward on W")
    page.keyboard.up("w")
    wait_for(lambda: np.allclose(rig.requested(), 0.0), what="stop on key up")
    page.keyboard.down("ArrowLeft")
    wait_for(lambda: rig.applied()[0] < -0.1 and rig.applied()[1] > 0.1, what="spin left")
    page.keyboard.up("ArrowLeft")
    page.keyboard.down("s")
    wait_for(lambda: rig.applied()[0] < -0.2 and rig.applied()[1] < -0.2, what="reverse on S")
    page.keyboard.up("s")
    wait_for(lambda: np.allclose(rig.applied(), 0.0), what="stop")


def test_joystick_drag_drives_the_twin(rig: Rig, page: Any) -> None:
    box = page.locator("#stick").bounding_box()
    cx, cy, r = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["width"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 0.9 * r, cy, steps=5)  # right: spin clockwise
    wait_for(lambda: rig.applied()[0] > 0.2 and rig.applied()[1] < -0.2, what="turn right")
    page.mouse.move(cx, cy - 0.9 * r, steps=5)  # up: forward
    wait_for(
        lambda: rig.applied()[0] > 0.2 and abs(rig.applied()[0] - rig.applied()[1]) < 0.05,
        what="forward",
    )
    page.mouse.up()  # the knob springs back: stop
    wait_for(lambda: np.allclose(rig.requested(), 0.0), what="release → stop")


def test_closing_the_tab_stops_the_motors(rig: Rig, page: Any) -> None:
    page.keyboard.down("w")
    wait_for(lambda: rig.applied()[0] > 0.2, what="moving")
    page.close()  # the key is still "held": only the deadman / disconnect can stop the robot
    wait_for(lambda: not rig.session.web.source.connected, timeout=5, what="disconnect seen")
    wait_for(lambda: np.allclose(rig.applied(), 0.0), timeout=5, what="motors stopped")


def test_hidden_tab_stops_the_motors(rig: Rig, page: Any) -> None:
    page.keyboard.down("w")
    wait_for(lambda: rig.applied()[0] > 0.2, what="moving")
    page.evaluate("""() => {
        Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});
        Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'hidden'});
        document.dispatchEvent(new Event('visibilitychange'));
    }""")
    wait_for(lambda: np.allclose(rig.applied(), 0.0), timeout=5, what="hidden → stop")
    page.keyboard.up("w")


def test_estop_latches_until_reset(rig: Rig, page: Any) -> None:
    page.keyboard.down("w")
    wait_for(lambda: rig.applied()[0] > 0.2, what="moving")
    page.click("#estop")
    wait_for(lambda: rig.loop.safety.latched, what="e-stop latched")
    wait_for(lambda: np.allclose(rig.applied(), 0.0), what="stopped")
    # Still pressing W (keyboard focus moved to the button; press again on the page body).
    page.keyboard.up("w")
    page.locator("body").focus()
    page.keyboard.down("w")
    for _ in range(3):
        _ticks_pass(rig, 5)
        assert rig.loop.safety.latched
        assert np.allclose(rig.applied(), 0.0), rig.applied()
    wait_for(lambda: page.locator("#estop-banner").is_visible(), what="banner shown")
    page.click("#reset")
    wait_for(lambda: not rig.loop.safety.latched, what="reset")
    page.locator("body").focus()
    page.keyboard.down("w")
    wait_for(lambda: rig.applied()[0] > 0.2, what="moving after reset")
    page.keyboard.up("w")


def test_recording_from_the_page_is_a_valid_episode(rig: Rig, page: Any) -> None:
    from deploy.dataset import Dataset

    saved = rig.session.saved
    page.click("#rec-start")
    wait_for(lambda: rig.session.recording, what="recording")
    wait_for(lambda: page.locator("#rec-pill.rec").is_visible(), what="REC shown")
    page.locator("body").focus()
    page.keyboard.down("d")
    _ticks_pass(rig, 8)
    page.keyboard.up("d")
    page.keyboard.down("w")
    _ticks_pass(rig, 8)
    page.keyboard.up("w")
    page.click("#rec-stop")
    wait_for(lambda: rig.session.saved > saved, what="episode saved")
    wait_for(lambda: not rig.session.recording, what="recording off")
    # Read it back with the dataset reader while the writer is still open (committed episodes).
    ds = Dataset.open(rig.record_dir, recover_leftovers=False)
    assert len(ds) >= saved + 1
    # (Reaching the goal while recording saves an episode and starts the next one, as with the
    # keyboard; look at every episode recorded by this test.)
    eps = [ds.episode(i) for i in range(saved, len(ds))]
    act = np.concatenate([np.asarray(e["action"]) for e in eps])
    applied = np.concatenate([np.asarray(e["action_applied"]) for e in eps])
    for e in eps:
        ts = np.asarray(e["timestamp"]) if "timestamp" in e else None
        if ts is not None:
            assert np.allclose(np.diff(ts), 1.0 / 20.0, atol=1e-4)
    assert act.shape[1] == 2 and len(act) >= 10
    assert np.all(np.isfinite(act)) and np.all(np.abs(applied) <= 1.0)
    assert (act[:, 0] > 0.1).any(), "the page's commands are the recorded actions"
    assert (act[:, 0] > act[:, 1] + 0.1).any(), "the right turn (D) was recorded"
