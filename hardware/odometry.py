"""Differential-drive odometry from wheel rotation, shared by the Pi drivers and the sim twin, so a
policy sees the same pose estimate in both."""

from __future__ import annotations

import math

import numpy as np


class DiffDriveOdometry:
    """Integrates left/right wheel rotation (radians) into a pose (x, y, theta).

    Uses the exact arc update (straight-line limit when the wheels turn equally).
    """

    def __init__(self, wheel_radius: float, track_width: float):
        self.r = float(wheel_radius)
        self.b = float(track_width)
        self.x = self.y = self.theta = 0.0

    def reset(self, pose: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
        self.x, self.y, self.theta = (float(v) for v in pose)

    def update(self, dphi_left: float, dphi_right: float) -> tuple[float, float, float]:
        """Advance by wheel rotations (rad) since the last update; returns the new pose."""
        dl = self.r * dphi_left
        dr = self.r * dphi_right
        ds = 0.5 * (dl + dr)
        dth = (dr - dl) / self.b
        if abs(dth) < 1e-9:
            self.x += ds * math.cos(self.theta)
            self.y += ds * math.sin(self.theta)
        else:
            rad = ds / dth
            self.x += rad * (math.sin(self.theta + dth) - math.sin(self.theta))
            self.y -= rad * (math.cos(self.theta + dth) - math.cos(self.theta))
        self.theta = (self.theta + dth + math.pi) % (2 * math.pi) - math.pi
        return self.x, self.y, self.theta

    @property
    def pose(self) -> np.ndarray:
        return np.array([self.x, self.y, self.theta], dtype=np.float32)


def ticks_to_radians(ticks: int, ticks_per_rev: int) -> float:
    return 2.0 * math.pi * ticks / ticks_per_rev
