"""The ``Robot`` interface every backend implements: the PyBullet twin (``sim.SimRobot``), gpiozero
mock pins and a real Pi (``hardware.pi.PiRobot``).

Contract (after LeRobot's ``Robot``):

- ``observation_features`` / ``action_features``: the raw sensor and actuator features
  (:class:`hardware.spec.Feature`), derived from the robot description.
- ``connect()`` opens devices; nothing happens at construction or import time.
- ``get_observation()`` returns a dict of numpy arrays keyed like ``observation_features``:

  ========== ========= ======= =================================================================
  key        shape     unit    meaning
  ========== ========= ======= =================================================================
  pose       (3,)      m,m,rad odometry x, y, heading in the odometry frame (set by
                               :meth:`reset_odometry`); from encoders, else integrated commands
  wheel_speed (2,)     rad/s   measured (encoders) or modelled left/right wheel speed
  range      (1,)      m       ultrasonic distance; ``max_distance`` when there is no echo
  range_valid (1,)     0/1     1 if an echo came back, 0 for "no echo" (nothing in range)
  range_age  (1,)      s       age of the range reading (safety stops when too old)
  image      (H, W, 3) uint8   RGB camera frame (only when a camera is fitted)
  image_age  (1,)      s       age of the frame
  marker     (3,)      -,m,m   [seen, x, y] of a fiducial-tagged object in the robot frame
                               (only when a marker detector is available, e.g. the twin)
  ========== ========= ======= =================================================================

- ``send_action(action)`` takes ``(left, right)`` duty in [-1, 1] (gpiozero ``Robot.value``) and
  returns the action actually applied (after the robot's own clamping). Non-finite input stops the
  motors and is reported as ``(0, 0)``. On the twin, it also advances the simulation by one control
  period.
- ``stop()`` sets both motors to zero. ``disconnect()`` stops, closes devices and is idempotent.
- Use as a context manager: ``with robot: ...`` connects and always disconnects.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any

import numpy as np

from hardware.description import RobotDescription
from hardware.spec import Feature, action_feature, image, vector


def robot_observation_features(
    desc: RobotDescription, *, marker: bool = False
) -> dict[str, Feature]:
    """Raw sensor features of a described robot (see the table in the module docstring)."""
    feats: dict[str, Feature] = {
        "pose": vector(
            "pose",
            ("x", "y", "theta"),
            ("m", "m", "rad"),
            (-np.inf,) * 3,
            (np.inf,) * 3,
            "odometry pose",
        ),
        "wheel_speed": vector(
            "wheel_speed",
            ("left", "right"),
            ("rad/s", "rad/s"),
            (-np.inf, -np.inf),
            (np.inf, np.inf),
            "wheel angular speed",
        ),
    }
    if desc.ultrasonic.enabled:
        us = desc.ultrasonic
        feats["range"] = vector(
            "range",
            ("distance",),
            ("m",),
            (0.0,),
            (us.max_distance,),
            "ultrasonic range; max_distance when no echo",
        )
        feats["range_valid"] = vector(
            "range_valid", ("echo",), ("bool",), (0.0,), (1.0,), "1 if an echo came back"
        )
        feats["range_age"] = vector("range_age", ("age",), ("s",), (0.0,), (np.inf,), "reading age")
    if desc.camera.enabled:
        feats["image"] = image("image", desc.camera.height, desc.camera.width, "front camera, RGB")
        feats["image_age"] = vector("image_age", ("age",), ("s",), (0.0,), (np.inf,), "frame age")
    if marker:
        feats["marker"] = vector(
            "marker",
            ("seen", "x", "y"),
            ("bool", "m", "m"),
            (0.0, -np.inf, -np.inf),
            (1.0, np.inf, np.inf),
            "fiducial detection in the robot frame",
        )
    return feats


class Robot(ABC):
    """A differential-drive robot: sensors in, wheel duty out. See the module docstring."""

    description: RobotDescription

    @property
    @abstractmethod
    def observation_features(self) -> dict[str, Feature]: ...

    @property
    def action_features(self) -> dict[str, Feature]:
        return {"action": action_feature()}

    @property
    @abstractmethod
    def is_connected(self) -> bool: ...

    @abstractmethod
    def connect(self) -> None: ...

    @abstractmethod
    def get_observation(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def send_action(self, action: Any) -> np.ndarray: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def disconnect(self) -> None: ...

    def reset_odometry(self, pose: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
        """Declare the robot's current pose in the odometry frame."""
        raise NotImplementedError

    def __enter__(self) -> Robot:
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


def sanitize_action(action: Any, max_duty: float = 1.0) -> tuple[np.ndarray, bool]:
    """(left, right) as float64 clipped to ±max_duty; non-finite → (0, 0) and ``ok=False``.

    The finiteness check happens *before* clamping (``max(-1, min(1, nan))`` is 1.0 in Python).
    """
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (2,):
        from hardware.errors import SpecMismatch

        raise SpecMismatch("action", "shape", (2,), a.shape)
    # plain floats: this runs on every motor command, and 2-element numpy ufuncs cost ~10 us
    left, right = float(a[0]), float(a[1])
    if not (math.isfinite(left) and math.isfinite(right)):
        return np.zeros(2), False
    return np.array(
        [min(max_duty, max(-max_duty, left)), min(max_duty, max(-max_duty, right))]
    ), True
