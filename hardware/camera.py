"""Cameras: a CSI camera through picamera2, a USB webcam through OpenCV, and a replay camera.

Contract (after LeRobot's ``Camera``):

- ``connect()`` opens the device and starts delivering frames; nothing is opened at construction or
  import time (picamera2 and cv2 are imported inside the methods that need them).
- ``read_latest(max_age_ms)`` returns the newest frame as RGB ``uint8`` ``(height, width, 3)`` at the
  described size, and raises :class:`~hardware.errors.StaleData` naming the frame's age when the
  newest frame is older than ``max_age_ms``. It never waits for a new frame.
- ``latest()`` returns the newest :class:`Frame` (image + timestamp) or ``None`` without raising:
  the robot reports the age and lets the safety layer decide.
- ``disconnect()`` stops and releases the device; it is idempotent. ``with camera:`` connects and
  always disconnects.

Live cameras run a grab thread that keeps only the newest frame (a slow control loop never reads a
backlog). Capture sources are constructor arguments, so tests hand in fakes and never touch
``/dev/video*`` or libcamera.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import numpy as np

from hardware.errors import DeviceError, StaleData

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class Frame(NamedTuple):
    """One camera frame: RGB uint8 (height, width, 3) and the clock time it was captured."""

    image: np.ndarray
    timestamp: float


def resize_rgb(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Return ``image`` (H, W, 3) uint8 resized to (height, width, 3), contiguous.

    Uses OpenCV's area interpolation (good for downscaling) when cv2 is installed, else a
    nearest-neighbour index lookup in numpy.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise DeviceError(f"expected an (H, W, 3) colour frame, got shape {image.shape}")
    if image.shape[0] == height and image.shape[1] == width:
        return np.ascontiguousarray(image, dtype=np.uint8)
    try:
        import cv2
    except ImportError:
        rows = (np.arange(height) * image.shape[0] // height).astype(np.intp)
        cols = (np.arange(width) * image.shape[1] // width).astype(np.intp)
        return np.ascontiguousarray(image[rows][:, cols], dtype=np.uint8)
    interp = cv2.INTER_AREA if image.shape[1] >= width else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=interp), np.uint8)


class Camera(ABC):
    """A camera delivering RGB uint8 frames of a fixed size. See the module docstring."""

    def __init__(self, width: int, height: int, fps: float, *, clock: Clock = time.monotonic):
        if width <= 0 or height <= 0 or fps <= 0:
            raise ValueError(f"camera size and fps must be positive, got {width}x{height} @ {fps}")
        self.width = int(width)
        self.height = int(height)
        self.fps = float(fps)
        self.clock = clock

    @property
    @abstractmethod
    def is_connected(self) -> bool: ...

    @abstractmethod
    def connect(self) -> None:
        """Open the device and start delivering frames."""

    @abstractmethod
    def latest(self) -> Frame | None:
        """The newest frame, or ``None`` if none has arrived yet. Never raises on staleness."""

    @abstractmethod
    def disconnect(self) -> None:
        """Stop and release the device (idempotent)."""

    def read_latest(self, max_age_ms: float) -> np.ndarray:
        """The newest RGB frame; raises StaleData if it is older than ``max_age_ms``.

        Raises:
            DeviceError: the camera is not connected.
            StaleData: no frame yet, or the newest frame is too old (the message gives its age).
        """
        if not self.is_connected:
            raise DeviceError(
                f"{type(self).__name__} is not connected; call connect() first "
                "or use `with camera:`"
            )
        frame = self.latest()
        if frame is None:
            raise StaleData(f"{type(self).__name__}: no frame has arrived yet")
        age_ms = (self.clock() - frame.timestamp) * 1000.0
        if age_ms > max_age_ms:
            raise StaleData(
                f"{type(self).__name__}: newest frame is {age_ms:.0f} ms old "
                f"(allowed {max_age_ms:.0f} ms); is the camera still streaming?"
            )
        return frame.image

    def wait_for_frame(self, timeout: float = 2.0) -> Frame:
        """Block (real time, at most ``timeout`` s) until a first frame exists; return it."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.latest()
            if frame is not None:
                return frame
            if time.monotonic() >= deadline:
                raise DeviceError(
                    f"{type(self).__name__} delivered no frame within {timeout:.1f} s; "
                    "check the cable/connection and that no other process uses it"
                )
            time.sleep(0.005)

    def __enter__(self) -> Camera:
        if not self.is_connected:
            self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disconnect()


class ThreadedCamera(Camera):
    """A live camera: a background thread grabs frames and keeps only the newest one.

    Subclasses implement ``_open`` (acquire the device), ``_grab`` (block for the next frame and
    return it as RGB, any size) and ``_release``.
    """

    def __init__(self, width: int, height: int, fps: float, *, clock: Clock = time.monotonic):
        super().__init__(width, height, fps, clock=clock)
        self._latest: Frame | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._connected = False
        self.frames_grabbed = 0
        self.grab_errors = 0

    @property
    def is_connected(self) -> bool:
        return self._connected

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _grab(self) -> np.ndarray: ...

    @abstractmethod
    def _release(self) -> None: ...

    def connect(self) -> None:
        if self._connected:
            return
        self._open()
        self._stop.clear()
        self._latest = None
        self._thread = threading.Thread(
            target=self._run, name=f"{type(self).__name__}-grab", daemon=True
        )
        self._connected = True
        self._thread.start()
        log.info(
            "%s connected (%dx%d @ %g fps)", type(self).__name__, self.width, self.height, self.fps
        )

    def latest(self) -> Frame | None:
        return self._latest

    def _run(self) -> None:
        backoff = 1.0 / self.fps
        while not self._stop.is_set():
            try:
                image = self._grab()
                frame = Frame(resize_rgb(image, self.width, self.height), self.clock())
            except Exception as e:
                # a flaky USB camera must not kill the thread; the growing frame age shows it
                self.grab_errors += 1
                if self.grab_errors == 1 or self.grab_errors % 100 == 0:
                    log.warning(
                        "%s: frame grab failed (%d so far): %s",
                        type(self).__name__,
                        self.grab_errors,
                        e,
                    )
                self._stop.wait(backoff)
                continue
            self._latest = frame
            self.frames_grabbed += 1

    def disconnect(self) -> None:
        if not self._connected:
            return
        self._connected = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0 + 2.0 / self.fps)
            if self._thread.is_alive():
                log.warning(
                    "%s: grab thread did not stop within 2 s; releasing anyway", type(self).__name__
                )
            self._thread = None
        try:
            self._release()
        finally:
            log.info("%s disconnected after %d frames", type(self).__name__, self.frames_grabbed)


class Picamera2Camera(ThreadedCamera):
    """A CSI camera (Pi Camera v2/v3/HQ) through picamera2.

    picamera2's ``"RGB888"`` format is laid out ``[B, G, R]`` in memory (it follows the DRM fourcc
    naming), so frames are flipped to RGB here.

    Args:
        camera_num: which camera (0 or 1 on a Pi 5).
        width, height, fps: delivered frame size and capture rate.
        picamera2_factory: ``camera_num -> Picamera2``-like object (``create_video_configuration``,
            ``configure``, ``start``, ``capture_array``, ``stop``, ``close``); defaults to
            ``picamera2.Picamera2``. Tests inject a fake.
        clock: time source for frame timestamps.
    """

    def __init__(
        self,
        camera_num: int = 0,
        width: int = 64,
        height: int = 64,
        fps: float = 30,
        *,
        picamera2_factory: Callable[[int], Any] | None = None,
        clock: Clock = time.monotonic,
    ):
        super().__init__(width, height, fps, clock=clock)
        self.camera_num = int(camera_num)
        self._factory = picamera2_factory
        self._cam: Any = None

    def _open(self) -> None:
        factory = self._factory
        if factory is None:
            try:
                from picamera2 import Picamera2
            except ImportError as e:
                raise DeviceError(
                    f"picamera2 is not importable ({e}). Install it from Raspberry Pi OS with "
                    "`sudo apt install python3-picamera2` and use a venv created with "
                    "`--system-site-packages`, or set camera.kind: opencv for a USB webcam."
                ) from e
            factory = Picamera2
        try:
            cam = factory(self.camera_num)
            config = cam.create_video_configuration(
                main={"size": (self.width, self.height), "format": "RGB888"},
                controls={"FrameRate": float(self.fps)},
            )
            cam.configure(config)
            cam.start()
        except DeviceError:
            raise
        except Exception as e:
            raise DeviceError(
                f"could not start CSI camera {self.camera_num} with picamera2 "
                f"({type(e).__name__}: {e}); check the ribbon cable and "
                "`rpicam-hello --list-cameras`"
            ) from e
        self._cam = cam

    def _grab(self) -> np.ndarray:
        bgr = self._cam.capture_array("main")
        return np.ascontiguousarray(bgr[..., 2::-1])  # [B, G, R] (+ maybe X) -> [R, G, B]

    def _release(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        try:
            cam.stop()
        finally:
            cam.close()


class OpenCVCamera(ThreadedCamera):
    """A USB webcam (V4L2) through ``cv2.VideoCapture``; OpenCV delivers BGR, converted to RGB.

    Args:
        device: ``/dev/videoN`` index (or a path / URL string).
        width, height, fps: delivered frame size and requested capture rate.
        capture_factory: ``device -> VideoCapture``-like object (``isOpened``, ``set``, ``read``,
            ``release``); defaults to ``cv2.VideoCapture``. Tests inject a fake.
        clock: time source for frame timestamps.
    """

    def __init__(
        self,
        device: int | str = 0,
        width: int = 64,
        height: int = 64,
        fps: float = 30,
        *,
        capture_factory: Callable[[int | str], Any] | None = None,
        clock: Clock = time.monotonic,
    ):
        super().__init__(width, height, fps, clock=clock)
        self.device = device
        self._factory = capture_factory
        self._cap: Any = None

    def _open(self) -> None:
        import cv2

        factory = self._factory or cv2.VideoCapture
        cap = factory(self.device)
        if not cap.isOpened():
            cap.release()
            raise DeviceError(
                f"could not open camera {self.device!r} with OpenCV; list cameras with "
                "`v4l2-ctl --list-devices` and set camera.device to the /dev/videoN "
                "number (your user needs the 'video' group)"
            )
        cap.set(cv2.CAP_PROP_FPS, float(self.fps))
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep latency low: we only want the newest frame
        self._cap = cap

    def _grab(self) -> np.ndarray:
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise DeviceError(f"camera {self.device!r} returned no frame")
        if bgr.ndim == 2:
            bgr = np.repeat(bgr[..., None], 3, axis=2)
        return np.ascontiguousarray(bgr[..., 2::-1])

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


def synthetic_frames(width: int, height: int, n: int = 30) -> list[np.ndarray]:
    """``n`` RGB frames of a bright square moving across a gradient (for the mock backend)."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack(
        [xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), np.full_like(xx, 64)],
        axis=-1,
    ).astype(np.uint8)
    side = max(2, min(width, height) // 4)
    frames = []
    for i in range(n):
        img = base.copy()
        x0 = (i * max(1, (width - side) // max(n - 1, 1))) % max(width - side, 1)
        y0 = (height - side) // 2
        img[y0 : y0 + side, x0 : x0 + side] = (255, 32, 32)
        frames.append(img)
    return frames


def _decode_pyav(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [fr.to_ndarray(format="rgb24") for fr in container.decode(video=0)]


def _decode_cv2(path: Path) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(np.ascontiguousarray(bgr[..., ::-1]))
    finally:
        cap.release()
    return frames


def _load_frames(source: str | Path) -> list[np.ndarray]:
    """RGB frames from a folder of PNGs (sorted by name) or a video file."""
    path = Path(source)
    if path.is_dir():
        files = sorted(path.glob("*.png"))
        if not files:
            raise DeviceError(f"{path}: no *.png frames in this folder")
        import cv2

        frames = []
        for f in files:
            bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if bgr is None:
                raise DeviceError(f"{f}: not a readable PNG")
            frames.append(np.ascontiguousarray(bgr[..., ::-1]))
        return frames
    if not path.exists():
        raise DeviceError(f"{path}: no such replay folder or video file")
    try:
        frames = _decode_pyav(path)
    except ImportError:  # no PyAV: let OpenCV decode
        frames = _decode_cv2(path)
    except Exception as e:  # PyAV raises its own FFmpegError family on broken files
        raise DeviceError(f"{path}: cannot decode this video ({type(e).__name__}: {e})") from e
    if not frames:
        raise DeviceError(f"{path}: the video has no decodable frames")
    return frames


class ReplayCamera(Camera):
    """Replays frames at ``fps`` on ``clock``: a folder of PNGs, a video file, or arrays.

    Frame ``k`` is the one captured at ``t0 + k / fps`` (``t0`` = connect time), so which frame is
    newest is a pure function of the clock: deterministic with an injected clock and no thread.
    With ``loop=False`` the last frame stays the newest and grows stale. :meth:`freeze` simulates
    a camera that stops delivering (fault injection).

    Args:
        source: a folder of ``*.png`` (sorted by name), a video file (decoded with PyAV, or cv2),
            or a sequence of RGB uint8 arrays.
        width, height, fps: delivered frame size and replay rate.
        loop: start over after the last frame.
        clock: time source.
    """

    def __init__(
        self,
        source: str | Path | Sequence[np.ndarray],
        width: int = 64,
        height: int = 64,
        fps: float = 30,
        *,
        loop: bool = True,
        clock: Clock = time.monotonic,
    ):
        super().__init__(width, height, fps, clock=clock)
        self.source = source
        self.loop = loop
        self._frames: list[np.ndarray] | None = None
        self._t0 = 0.0
        self._frozen_at: float | None = None

    @property
    def is_connected(self) -> bool:
        return self._frames is not None

    @property
    def num_frames(self) -> int:
        """How many frames are replayed (after connect)."""
        return 0 if self._frames is None else len(self._frames)

    def connect(self) -> None:
        if self._frames is not None:
            return
        if isinstance(self.source, (str, Path)):
            raw = _load_frames(self.source)
        else:
            raw = [np.asarray(f) for f in self.source]
            if not raw:
                raise DeviceError("ReplayCamera got an empty list of frames")
        self._frames = [resize_rgb(f, self.width, self.height) for f in raw]
        self._t0 = self.clock()
        self._frozen_at = None
        log.info(
            "ReplayCamera connected: %d frames at %g fps (loop=%s)",
            len(self._frames),
            self.fps,
            self.loop,
        )

    def freeze(self, frozen: bool = True) -> None:
        """Stop (or resume) delivering new frames; the newest frame then ages."""
        self._frozen_at = self.clock() if frozen else None

    def latest(self) -> Frame | None:
        frames = self._frames
        if frames is None:
            return None
        now = self.clock() if self._frozen_at is None else self._frozen_at
        k = max(0, int(np.floor((now - self._t0) * self.fps + 1e-9)))
        if not self.loop:
            k = min(k, len(frames) - 1)
        return Frame(frames[k % len(frames)], self._t0 + k / self.fps)

    def disconnect(self) -> None:
        self._frames = None


def make_camera(cam: Any, *, clock: Clock = time.monotonic) -> Camera:
    """The live camera for a description's ``camera`` section (``kind`` picamera2 | opencv)."""
    if cam.kind == "picamera2":
        return Picamera2Camera(cam.device, cam.width, cam.height, cam.fps, clock=clock)
    if cam.kind == "opencv":
        return OpenCVCamera(cam.device, cam.width, cam.height, cam.fps, clock=clock)
    raise DeviceError(f"unknown camera kind {cam.kind!r}; use picamera2 or opencv")
