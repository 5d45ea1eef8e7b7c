"""JPEG encoding of live-view frames, with OpenCV when installed and Pillow as a fallback."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

import numpy as np

from hardware.errors import DeviceError

log = logging.getLogger(__name__)

Encoder = Callable[[np.ndarray], bytes]


def _cv2_encoder(quality: int) -> Encoder:
    import cv2

    params = [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)]

    def encode(rgb: np.ndarray) -> bytes:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), params)
        if not ok:
            raise DeviceError("OpenCV could not encode a JPEG frame")
        return buf.tobytes()

    return encode


def _pil_encoder(quality: int) -> Encoder:
    from PIL import Image

    def encode(rgb: np.ndarray) -> bytes:
        out = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb)).save(out, format="JPEG", quality=int(quality))
        return out.getvalue()

    return encode


def make_encoder(quality: int = 70) -> Encoder:
    """An RGB uint8 (H, W, 3) → JPEG bytes function (cv2 if importable, else Pillow)."""
    for factory in (_cv2_encoder, _pil_encoder):
        try:
            enc = factory(quality)
        except ImportError:
            continue
        log.debug("JPEG encoder: %s", factory.__name__)
        return enc
    raise DeviceError(
        "no JPEG encoder: install opencv-python-headless or Pillow (pip install 'sim2pi[pi]')"
    )


def fit_frame(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an RGB frame to (height, width) if it differs (cv2 when available, else nearest)."""
    if rgb.shape[0] == height and rgb.shape[1] == width:
        return rgb
    try:
        import cv2

        interp = cv2.INTER_LINEAR if rgb.shape[1] < width else cv2.INTER_AREA
        return cv2.resize(rgb, (width, height), interpolation=interp)
    except ImportError:
        ys = (np.arange(height) * rgb.shape[0] // height).clip(0, rgb.shape[0] - 1)
        xs = (np.arange(width) * rgb.shape[1] // width).clip(0, rgb.shape[1] - 1)
        return rgb[ys][:, xs]
