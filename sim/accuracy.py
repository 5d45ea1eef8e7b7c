"""Is the fast physics still the right physics?

:func:`check_accuracy` drives the twin through fixed command sequences with the physics settings
under test and with a fine reference (1/480 s steps, many solver iterations), and compares where
the robot (and a pushed box) ends up. Speed settings must keep every scenario within ``pos_tol`` /
``ang_tol_deg`` of the reference and the box from sinking more than ``sink_tol`` into the floor.

Scenarios (at the description's control rate):

- ``drive``: forward, spin in place, arc, stop;
- ``push``: drive straight into a 6 cm box 0.25 m ahead and push it, then stop.

The lead's benchmark calls :func:`check_accuracy` and prints :meth:`AccuracyReport.table`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hardware.description import RobotDescription, load_description
from sim.backend import BOX_FRICTION, BOX_HALF_SIZE, BOX_MASS, wrap_angle
from sim.twin import SceneObject, SimRobot

log = logging.getLogger(__name__)

REFERENCE = {"physics_dt": 1.0 / 480.0, "substeps": 1, "solver_iterations": 100}


def drive_sequence(rate: float) -> list[tuple[tuple[float, float], int]]:
    """(duty, ticks) segments: forward 1 s, spin 1 s, arc 1.5 s, stop 0.5 s."""
    t = lambda s: max(1, round(s * rate))  # noqa: E731
    return [((0.8, 0.8), t(1.0)), ((-0.6, 0.6), t(1.0)), ((0.4, 0.8), t(1.5)), ((0.0, 0.0), t(0.5))]


def push_sequence(rate: float) -> list[tuple[tuple[float, float], int]]:
    """(duty, ticks) segments: push straight 2 s, stop 0.5 s."""
    return [((0.6, 0.6), max(1, round(2.0 * rate))), ((0.0, 0.0), max(1, round(0.5 * rate)))]


@dataclass
class ScenarioResult:
    name: str
    final: np.ndarray  # x, y, theta of the robot (and box x, y for push)
    min_box_z: float = math.nan  # lowest box centre height seen (m)
    seconds: float = 0.0  # wall-clock time of the run
    ticks: int = 0


def run_scenario(name: str, desc: RobotDescription, **robot_kwargs: Any) -> ScenarioResult:
    """Run one scenario (``drive`` or ``push``) from the origin; returns the final state."""
    robot = SimRobot(desc, camera=False, seed=0, **robot_kwargs)
    robot.connect()
    try:
        objects = []
        if name == "push":
            objects = [
                SceneObject(
                    "box",
                    "box",
                    (BOX_HALF_SIZE,) * 3,
                    (0.25, 0.0),
                    mass=BOX_MASS,
                    friction=BOX_FRICTION,
                    tagged=True,
                )
            ]
            seq = push_sequence(desc.control.rate)
        else:
            seq = drive_sequence(desc.control.rate)
        robot.reset_scene((0.0, 0.0, 0.0), objects, seed=0)
        min_z = math.inf
        ticks = 0
        t0 = time.perf_counter()
        for duty, n in seq:
            for _ in range(n):
                robot.send_action(duty)
                ticks += 1
                if objects:
                    min_z = min(min_z, float(robot.object_pose("box")[2]))
        secs = time.perf_counter() - t0
        final = robot.true_pose()
        if objects:
            final = np.concatenate([final, robot.object_pose("box")[:2]])
        return ScenarioResult(name, final, min_z if objects else math.nan, secs, ticks)
    finally:
        robot.disconnect()


@dataclass
class AccuracyReport:
    """Errors of the settings under test against the reference, per scenario."""

    settings: dict[str, Any]
    reference: dict[str, Any]
    pos_error: dict[str, float] = field(default_factory=dict)  # m (robot; push: max robot/box)
    ang_error_deg: dict[str, float] = field(default_factory=dict)
    box_sink: float = 0.0  # m below resting height (test settings)
    ticks_per_second: dict[str, float] = field(default_factory=dict)
    pos_tol: float = 0.02
    ang_tol_deg: float = 2.0
    sink_tol: float = 0.002

    @property
    def passed(self) -> bool:
        return (
            all(v <= self.pos_tol for v in self.pos_error.values())
            and all(v <= self.ang_tol_deg for v in self.ang_error_deg.values())
            and self.box_sink <= self.sink_tol
        )

    def table(self) -> str:
        """A plain-text table of the results."""
        rows = [f"{'scenario':<10}{'pos err (m)':>13}{'ang err (deg)':>15}{'ticks/s':>10}"]
        for k in self.pos_error:
            rows.append(
                f"{k:<10}{self.pos_error[k]:>13.4f}{self.ang_error_deg[k]:>15.2f}"
                f"{self.ticks_per_second.get(k, 0.0):>10.0f}"
            )
        rows.append(
            f"box sink {self.box_sink * 1000:.2f} mm (tol {self.sink_tol * 1000:.1f}); "
            f"tolerances {self.pos_tol} m / {self.ang_tol_deg} deg; "
            f"{'PASS' if self.passed else 'FAIL'}"
        )
        return "\n".join(rows)


def check_accuracy(
    desc: RobotDescription | None = None,
    *,
    pos_tol: float = 0.02,
    ang_tol_deg: float = 2.0,
    sink_tol: float = 0.002,
    reference: dict[str, Any] | None = None,
    **settings: Any,
) -> AccuracyReport:
    """Compare the twin with ``settings`` (SimRobot kwargs; default: its defaults) to the
    reference physics on the ``drive`` and ``push`` scenarios."""
    desc = desc or load_description("rover")
    ref_settings = dict(reference or REFERENCE)
    report = AccuracyReport(
        settings=dict(settings),
        reference=ref_settings,
        pos_tol=pos_tol,
        ang_tol_deg=ang_tol_deg,
        sink_tol=sink_tol,
    )
    for name in ("drive", "push"):
        test = run_scenario(name, desc, **settings)
        ref = run_scenario(name, desc, **ref_settings)
        err = float(np.linalg.norm(test.final[:2] - ref.final[:2]))
        if name == "push":
            err = max(err, float(np.linalg.norm(test.final[3:5] - ref.final[3:5])))
            report.box_sink = max(0.0, BOX_HALF_SIZE - test.min_box_z)
        report.pos_error[name] = err
        report.ang_error_deg[name] = abs(
            math.degrees(float(wrap_angle(test.final[2] - ref.final[2])))
        )
        report.ticks_per_second[name] = test.ticks / max(test.seconds, 1e-9)
    log.info("physics accuracy:\n%s", report.table())
    return report


__all__ = [
    "REFERENCE",
    "AccuracyReport",
    "check_accuracy",
    "drive_sequence",
    "push_sequence",
    "run_scenario",
]
