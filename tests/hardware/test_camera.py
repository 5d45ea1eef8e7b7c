"""Cameras: read_latest + StaleData on an injected clock, BGR→RGB for picamera2 and OpenCV through
injected capture objects (never /dev/video* or libcamera), replay from PNGs and mp4."""

from __future__ import annotations

import queue
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hardware.camera import OpenCVCamera, Picamera2Camera, ReplayCamera, synthetic_frames
from hardware.errors import DeviceError, StaleData

BGR = (10, 20, 30)  # what the capture source delivers, [B, G, R]
RGB = (30, 20, 10)


def _solid(h: int, w: int, px: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(px, np.uint8), (h, w, 3)).copy()


class FakePicamera2:
    """Stands in for ``picamera2.Picamera2``: ``capture_array`` hands out queued [B, G, R] frames."""

    def __init__(self, camera_num: int):
        self.camera_num = camera_num
        self.frames: queue.Queue[np.ndarray] = queue.Queue()
        self.config: dict[str, Any] = {}
        self.started = self.closed = False

    def create_video_configuration(self, main: dict[str, Any], controls: dict[str, Any]) -> dict:
        return {"main": main, "controls": controls}

    def configure(self, config: dict[str, Any]) -> None:
        self.config = config

    def start(self) -> None:
        self.started = True

    def capture_array(self, name: str = "main") -> np.ndarray:
        assert name == "main"
        return self.frames.get(timeout=0.05)  # like a camera that stopped: raises after a while

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


def _wait(pred: Any) -> None:
    for _ in range(500):
        if pred():
            return
        threading.Event().wait(0.01)
    raise AssertionError("condition not reached")


def test_picamera2_frames_are_converted_from_bgr_to_rgb_and_go_stale(clock: Any) -> None:
    fakes: list[FakePicamera2] = []

    def factory(num: int) -> FakePicamera2:
        fakes.append(FakePicamera2(num))
        return fakes[-1]

    cam = Picamera2Camera(1, 32, 24, 30, picamera2_factory=factory, clock=clock)
    assert not fakes  # nothing opened before connect
    with cam:
        fake = fakes[0]
        assert fake.camera_num == 1 and fake.started
        assert fake.config["main"] == {"size": (32, 24), "format": "RGB888"}
        fake.frames.put(_solid(24, 32, BGR))
        _wait(lambda: cam.latest() is not None)
        img = cam.read_latest(max_age_ms=100)
        assert img.shape == (24, 32, 3) and img.dtype == np.uint8
        assert tuple(img[0, 0]) == RGB
        clock.advance(0.3)
        with pytest.raises(StaleData, match="300 ms old"):
            cam.read_latest(max_age_ms=250)
        fake.frames.put(_solid(48, 64, BGR))  # a bigger frame is resized to the described size
        _wait(lambda: cam.frames_grabbed >= 2)
        img = cam.read_latest(max_age_ms=250)
        assert img.shape == (24, 32, 3) and tuple(img[5, 5]) == RGB
    assert fake.closed and not cam.is_connected
    cam.disconnect()  # idempotent


def test_picamera2_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)
    cam = Picamera2Camera(0, 32, 24, 30)
    with pytest.raises(DeviceError, match="python3-picamera2"):
        cam.connect()
    assert not cam.is_connected


class FakeVideoCapture:
    """Stands in for ``cv2.VideoCapture``: returns a [B, G, R] frame on every read."""

    def __init__(self, device: Any, opened: bool = True):
        self.device, self.opened, self.released = device, opened, False
        self.props: dict[int, float] = {}

    def isOpened(self) -> bool:  # OpenCV's name
        return self.opened

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def read(self) -> tuple[bool, np.ndarray]:
        threading.Event().wait(0.005)
        return True, _solid(48, 64, BGR)

    def release(self) -> None:
        self.released = True


def test_opencv_camera_converts_bgr_and_resizes() -> None:
    caps: list[FakeVideoCapture] = []
    cam = OpenCVCamera(
        2, 32, 24, 30, capture_factory=lambda d: caps.append(FakeVideoCapture(d)) or caps[-1]
    )
    with cam:
        _wait(lambda: cam.latest() is not None)
        img = cam.read_latest(max_age_ms=10_000)
        assert img.shape == (24, 32, 3) and tuple(img[3, 3]) == RGB
    assert caps[0].device == 2 and caps[0].released


def test_opencv_camera_that_cannot_open_names_the_fix() -> None:
    cam = OpenCVCamera(7, 32, 24, 30, capture_factory=lambda d: FakeVideoCapture(d, opened=False))
    with pytest.raises(DeviceError, match="v4l2-ctl"):
        cam.connect()


def test_replay_camera_follows_the_clock_and_loops(clock: Any) -> None:
    frames = [_solid(8, 8, (i, 0, 0)) for i in range(3)]
    cam = ReplayCamera(frames, 8, 8, fps=10, clock=clock)
    with pytest.raises(DeviceError, match="not connected"):
        cam.read_latest(100)
    with cam:
        seen = []
        for _ in range(5):
            seen.append(int(cam.read_latest(max_age_ms=100)[0, 0, 0]))
            clock.advance(0.1)
        assert seen == [0, 1, 2, 0, 1]
        assert cam.latest().timestamp == pytest.approx(clock.t)


def test_replay_camera_without_loop_goes_stale_and_freeze(clock: Any) -> None:
    cam = ReplayCamera(synthetic_frames(16, 12, n=2), 16, 12, fps=10, loop=False, clock=clock)
    with cam:
        clock.advance(0.15)
        cam.read_latest(max_age_ms=100)  # frame 1, 50 ms old
        clock.advance(0.45)
        with pytest.raises(StaleData, match="500 ms old"):
            cam.read_latest(max_age_ms=250)
    cam = ReplayCamera(synthetic_frames(16, 12), 16, 12, fps=10, clock=clock)
    with cam:
        cam.freeze()
        clock.advance(1.0)
        with pytest.raises(StaleData):
            cam.read_latest(max_age_ms=250)
        cam.freeze(False)
        cam.read_latest(max_age_ms=250)


def test_replay_camera_reads_pngs_and_mp4(tmp_path: Path, clock: Any) -> None:
    import av
    import cv2

    colours = [(200, 30, 30), (30, 200, 30)]  # RGB
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, rgb in enumerate(colours):
        cv2.imwrite(str(folder / f"{i:03d}.png"), _solid(24, 32, rgb)[..., ::-1])
    with ReplayCamera(folder, 16, 12, fps=10, clock=clock) as cam:
        assert tuple(cam.read_latest(100)[0, 0]) == colours[0]
        clock.advance(0.1)
        assert tuple(cam.read_latest(100)[0, 0]) == colours[1]

    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for rgb in colours:
            for packet in stream.encode(av.VideoFrame.from_ndarray(_solid(24, 32, rgb), "rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with ReplayCamera(video, 16, 12, fps=10, clock=clock) as cam:
        assert cam.num_frames == 2
        first = cam.read_latest(100)[6, 8].astype(int)
        assert np.abs(first - colours[0]).max() < 25  # lossy codec


def test_replay_camera_bad_source() -> None:
    with pytest.raises(DeviceError, match="no such replay"):
        ReplayCamera("/nonexistent/clip.mp4", 8, 8).connect()


def test_replay_camera_broken_video(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(DeviceError, match=r"broken\.mp4"):
        ReplayCamera(bad, 8, 8).connect()
