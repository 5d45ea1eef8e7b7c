"""Camera frames as video: a threaded H.264 encoder, a prober, a decoder and a remuxer (PyAV).

Used by :mod:`deploy.dataset`. PyAV is imported inside functions so that importing this module never
fails on an install without ``av``; using it without ``av`` raises a :class:`DatasetError` that says
what to install.

Conventions (what LeRobot's decoder relies on): ``yuv420p``, no B-frames (so every packet's
``dts == pts`` and the first frame has ``pts == 0``), frame ``k`` has presentation time ``k / fps``,
and a file holds exactly the frames it was given. Encoding runs on its own thread, fed through a
bounded queue, so the control loop only pays for a queue put; a full queue blocks the producer (back
pressure) instead of dropping a frame, because the dataset promises an exact frame count.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from deploy.fileio import fsync_file
from hardware.errors import DatasetError

logger = logging.getLogger(__name__)

# Encoder names in PyAV for the codec names LeRobot accepts (``vcodec``); their stored canonical name.
CODECS = {"h264": "libx264", "hevc": "libx265", "libsvtav1": "libsvtav1"}
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = ("q01", "q10", "q50", "q90", "q99")


def _av() -> Any:
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is a dependency of the pi and train extras
        raise DatasetError(
            "camera frames are stored as video and need PyAV: pip install 'sim2pi[pi]' (or 'av')"
        ) from e
    return av


def codec_available(codec: str) -> bool:
    """Whether PyAV's FFmpeg build can encode ``codec`` (``h264``, ``hevc``, ``libsvtav1``)."""
    av = _av()
    return CODECS.get(codec, codec) in av.codecs_available


@dataclass
class EncoderSettings:
    """How camera frames are encoded. The defaults favour exact, seekable, cheap files."""

    codec: str = "h264"  # LeRobot vcodec name
    crf: int = 20  # constant rate factor: lower is better quality (x264: 0-51)
    gop: int = 2  # keyframe interval; LeRobot uses 2 so that random access decodes few frames
    preset: str = "veryfast"  # x264 speed preset
    threads: int = 1  # encoder threads (a Pi has 4 cores and a control loop to keep)

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise DatasetError(
                f"unknown video codec '{self.codec}'; choose one of {sorted(CODECS)}"
            )
        if not 0 <= int(self.crf) <= 63:
            raise DatasetError(f"video crf {self.crf} is outside [0, 63]")
        if int(self.gop) < 1:
            raise DatasetError(f"video gop {self.gop} must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "crf": int(self.crf),
            "gop": int(self.gop),
            "preset": self.preset,
            "threads": int(self.threads),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> EncoderSettings:
        d = d or {}
        return cls(**{k: d[k] for k in ("codec", "crf", "gop", "preset", "threads") if k in d})


class ImageStats:
    """Per-channel running statistics of RGB frames, normalized to [0, 1] like LeRobot's image stats
    (min, max, mean, std of shape (3, 1, 1); count = number of frames). Quantiles come from a
    subsample of frames and pixels so memory stays bounded."""

    MAX_KEPT = 64  # frames kept for quantiles
    MAX_SIDE = 32  # pixels per side kept for quantiles

    def __init__(self) -> None:
        self.count = 0
        self._sum = np.zeros(3, np.float64)
        self._sumsq = np.zeros(3, np.float64)
        self._min = np.full(3, 255.0)
        self._max = np.zeros(3)
        self._pixels = 0
        self._kept: list[np.ndarray] = []
        self._stride = 1

    def add(self, img: np.ndarray) -> None:
        flat = img.reshape(-1, 3)
        f = flat.astype(np.float64)
        self._sum += f.sum(axis=0)
        self._sumsq += np.einsum("ij,ij->j", f, f)
        self._min = np.minimum(self._min, flat.min(axis=0))
        self._max = np.maximum(self._max, flat.max(axis=0))
        self._pixels += flat.shape[0]
        if self.count % self._stride == 0:
            sy = max(1, img.shape[0] // self.MAX_SIDE)
            sx = max(1, img.shape[1] // self.MAX_SIDE)
            self._kept.append(img[::sy, ::sx].reshape(-1, 3).copy())
            if len(self._kept) >= self.MAX_KEPT:
                self._kept = self._kept[::2]
                self._stride *= 2
        self.count += 1

    def result(self) -> dict[str, np.ndarray]:
        """LeRobot-shaped stats: (3, 1, 1) arrays in [0, 1] and ``count`` of shape (1,)."""
        if self.count == 0:
            raise DatasetError("no frames to compute image statistics from")
        n = float(self._pixels)
        mean = self._sum / n
        var = np.maximum(self._sumsq / n - mean**2, 0.0)
        kept = np.concatenate(self._kept).astype(np.float64)
        out = {
            "min": self._min / 255.0,
            "max": self._max / 255.0,
            "mean": mean / 255.0,
            "std": np.sqrt(var) / 255.0,
        }
        qs = np.quantile(kept, QUANTILES, axis=0) / 255.0  # (5, 3)
        for name, q in zip(QUANTILE_KEYS, qs, strict=True):
            out[name] = q
        res = {k: np.asarray(v, np.float64).reshape(3, 1, 1) for k, v in out.items()}
        res["count"] = np.array([self.count], np.int64)
        return res


@dataclass
class EncodeResult:
    """What an encoder thread produced."""

    path: Path
    frames: int
    stats: dict[str, np.ndarray] = field(default_factory=dict)


_STOP = object()


class VideoEncoder:
    """Encodes RGB frames into one mp4 on a background thread.

    ``put(frame)`` copies nothing and returns as soon as the frame is queued (it blocks only when the
    encoder is more than ``queue_size`` frames behind). ``finish()`` flushes, closes and fsyncs the
    file and returns the frame count and image statistics; ``abort()`` stops and deletes the file.
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: int,
        settings: EncoderSettings | None = None,
        *,
        queue_size: int = 256,
    ) -> None:
        self.path = Path(path)
        self.width, self.height, self.fps = int(width), int(height), int(fps)
        self.settings = settings or EncoderSettings()
        if self.settings.codec in ("h264", "hevc") and (self.width % 2 or self.height % 2):
            raise DatasetError(
                f"{self.settings.codec} with yuv420p needs an even frame size, got "
                f"{self.width}x{self.height}; crop or resize the camera image"
            )
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._error: BaseException | None = None
        self._frames = 0
        self._stats = ImageStats()
        self._thread = threading.Thread(
            target=self._run, name=f"video-encoder:{self.path.name}", daemon=True
        )
        self._started = False
        self._done = False

    def put(self, frame: np.ndarray) -> None:
        """Queue one (H, W, 3) uint8 RGB frame (the caller must not modify it afterwards)."""
        if self._error is not None:
            raise DatasetError(
                f"video encoder for {self.path} failed: {self._error}"
            ) from self._error
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise DatasetError(
                f"frame for {self.path.name} must be ({self.height}, {self.width}, 3) "
                f"uint8, got {frame.shape} {frame.dtype}"
            )
        if not self._started:
            self._thread.start()
            self._started = True
        self._queue.put(frame)

    def _run(self) -> None:
        av = _av()
        container = None
        try:
            container = av.open(str(self.path), mode="w", format="mp4")
            stream = container.add_stream(CODECS[self.settings.codec], rate=self.fps)
            stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
            tb = Fraction(1, self.fps)
            stream.codec_context.time_base = tb
            stream.codec_context.thread_count = max(1, int(self.settings.threads))
            opts = {"g": str(self.settings.gop), "bf": "0", "crf": str(self.settings.crf)}
            if self.settings.codec in ("h264", "hevc"):
                opts["preset"] = self.settings.preset
            stream.options = opts
            k = 0
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                self._stats.add(item)
                vf = av.VideoFrame.from_ndarray(item, format="rgb24")
                vf.pts = k
                vf.time_base = tb
                for packet in stream.encode(vf):
                    container.mux(packet)
                k += 1
            for packet in stream.encode(None):
                container.mux(packet)
            container.close()
            container = None
            self._frames = k
        except BaseException as e:  # reported to the producer on the next put()/finish()
            self._error = e
            logger.exception("video encoder for %s failed", self.path)
            # drain so a blocked producer wakes up
            while True:
                try:
                    if self._queue.get_nowait() is _STOP:
                        break
                except queue.Empty:
                    break
        finally:
            if container is not None:
                try:
                    container.close()
                except Exception:  # pragma: no cover - best effort on an already failed file
                    pass

    def finish(self) -> EncodeResult:
        """Flush and close the file, fsync it, and return its frame count and image stats."""
        if self._done:
            raise DatasetError(f"encoder for {self.path} already finished")
        self._done = True
        if not self._started:
            raise DatasetError(f"no frames were given to the encoder for {self.path.name}")
        self._queue.put(_STOP)
        self._thread.join()
        if self._error is not None:
            raise DatasetError(
                f"video encoder for {self.path} failed: {self._error}"
            ) from self._error
        fsync_file(self.path)
        return EncodeResult(self.path, self._frames, self._stats.result())

    def abort(self) -> None:
        """Stop encoding and delete the partial file."""
        self._done = True
        if self._started and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self.path.unlink(missing_ok=True)


@dataclass
class VideoProbe:
    """What a video file holds, read by demuxing (no decoding)."""

    frames: int
    width: int
    height: int
    codec: str
    pix_fmt: str
    fps: int
    pts_ok: bool  # every packet's presentation time is k / fps for k = 0, 1, ...
    extradata: bytes


def probe_video(path: str | Path, fps: int) -> VideoProbe:
    """Count the packets of the first video stream and check that frame k sits at k / fps.

    Raises :class:`DatasetError` (naming the file) when the file does not open or demux.
    """
    av = _av()
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise DatasetError(f"{path}: no video stream")
            s = c.streams.video[0]
            tb = s.time_base
            times = []
            for p in c.demux(s):
                if p.size == 0 and p.pts is None:
                    continue
                if p.pts is None:
                    raise DatasetError(f"{path}: a packet has no timestamp")
                times.append(p.pts)
            times.sort()
            ok = all(abs(float(t * tb) - k / fps) < 1e-4 for k, t in enumerate(times))
            return VideoProbe(
                frames=len(times),
                width=s.codec_context.width,
                height=s.codec_context.height,
                codec=s.codec.canonical_name if s.codec else "",
                pix_fmt=s.codec_context.pix_fmt or "",
                fps=round(float(s.base_rate or s.average_rate or fps)),
                pts_ok=ok,
                extradata=bytes(s.codec_context.extradata or b""),
            )
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(f"{path}: cannot read the video ({type(e).__name__}: {e})") from None


def video_info(path: str | Path, fps: int) -> dict[str, Any]:
    """The ``info`` dict LeRobot stores under a video feature in ``info.json``."""
    p = probe_video(path, fps)
    return {
        "video.height": p.height,
        "video.width": p.width,
        "video.codec": p.codec,
        "video.pix_fmt": p.pix_fmt,
        "video.is_depth_map": False,
        "video.fps": int(fps),
        "video.channels": 3,
        "has_audio": False,
    }


def decode_frames(path: str | Path, start: int, count: int, fps: int) -> np.ndarray:
    """Decode frames ``start .. start + count - 1`` (by presentation time k / fps) as (N, H, W, 3)
    uint8 RGB. Raises :class:`DatasetError` naming the file when frames are missing."""
    av = _av()
    out: np.ndarray | None = None
    got = 0
    try:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            tb = s.time_base
            if start > 0:
                c.seek(int(Fraction(start, fps) / tb), stream=s, backward=True, any_frame=False)
            for frame in c.decode(s):
                k = round(float(frame.pts * tb) * fps)
                if k < start:
                    continue
                if k >= start + count:
                    break
                img = frame.to_ndarray(format="rgb24")
                if out is None:
                    out = np.empty((count, *img.shape), np.uint8)
                out[k - start] = img
                got += 1
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(f"{path}: cannot decode the video ({type(e).__name__}: {e})") from None
    if out is None or got != count:
        raise DatasetError(f"{path}: expected {count} frames from frame {start}, decoded {got}")
    return out


def concat_videos(inputs: list[Path], frames: list[int], output: Path, fps: int) -> None:
    """Join mp4 files made with the same encoder settings into ``output`` by remuxing packets (no
    re-encoding); file i's frames are shifted by the frames before it. Packet counts must equal
    ``frames``; the output is fsync'ed."""
    av = _av()
    out = av.open(str(output), mode="w", format="mp4")
    try:
        with av.open(str(inputs[0])) as first:
            ostream = out.add_stream_from_template(first.streams.video[0])
        offset = 0  # frames
        for path, n in zip(inputs, frames, strict=True):
            with av.open(str(path)) as inp:
                s = inp.streams.video[0]
                tb = s.time_base
                shift = Fraction(offset, fps) / tb
                if shift.denominator != 1:
                    raise DatasetError(
                        f"{path}: time base {tb} cannot represent frame times at {fps} fps"
                    )
                got = 0
                for p in inp.demux(s):
                    if p.pts is None:
                        continue
                    p.pts += int(shift)
                    if p.dts is not None:
                        p.dts += int(shift)
                    p.stream = ostream
                    out.mux(p)
                    got += 1
                if got != n:
                    raise DatasetError(f"{path}: holds {got} frames, its episodes say {n}")
            offset += n
    finally:
        out.close()
    fsync_file(output)
