"""Task scenes on the twin, shared by the gymnasium envs and the runtime/recording loop.

:class:`TwinBackend` owns a :class:`sim.twin.SimRobot` and knows how to lay out each task's scene
(start pose, goal, box, coloured objects) and judge it from ground truth. The envs in
:mod:`sim.envs` use exactly this code for ``reset``, so an episode recorded through the loop with
``TwinBackend`` and an env episode with the same seed start from the same scene.

Scenes (arena ``[-1, 1]²`` inside the walls; the odometry frame starts at the true start pose, so
goals are given in the arena frame):

- reach: start anywhere ``START_MARGIN`` from the walls, any heading; goal in
  ``[-GOAL_HALF, GOAL_HALF]²`` at least ``MIN_GOAL_DISTANCE`` from the start.
- push: a light 6 cm tagged cube in ``[-BOX_HALF, BOX_HALF]²``; its goal 0.15-0.5 m away; the robot
  starts ≥ 0.3 m from the box. The observer starts with the box's true position (``box_guess``).
- seek: static red, green and blue cylinders ≥ 0.45 m apart; the robot starts ≥ 0.35 m from each;
  a uniformly drawn task id names the target. Success: the robot's nose (the ultrasonic sensor,
  else the chassis front) within ``success_distance`` of the target's surface and facing it
  (heading error to the target's centre < ``SEEK_FACING_DEG``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from hardware.description import RobotDescription
from hardware.errors import Sim2PiError
from hardware.tasks import ARENA_HALF, SEEK_COLORS, TaskInfo, task_info
from sim.randomization import DynamicsRandomization
from sim.twin import SceneObject, SimRobot

log = logging.getLogger(__name__)

START_MARGIN = 0.25  # m from the walls
GOAL_HALF = 0.8  # m: goals lie in [-GOAL_HALF, GOAL_HALF]^2
MIN_GOAL_DISTANCE = 0.2  # m
BOX_HALF_SIZE = 0.03  # m: 6 cm cube
BOX_MASS = 0.08  # kg
BOX_FRICTION = 0.5
BOX_HALF = 0.5  # m: box start in [-BOX_HALF, BOX_HALF]^2
PUSH_GOAL_DISTANCE = (0.15, 0.5)  # m from the box
SEEK_RADIUS = 0.04  # m
SEEK_HEIGHT = 0.12  # m
SEEK_HALF = 0.7  # m
SEEK_SEPARATION = 0.45  # m between objects
SEEK_FACING_DEG = 25.0  # heading error to the target's centre counted as "facing"
SEEK_RGBA = {
    "red": (0.85, 0.1, 0.1, 1.0),
    "green": (0.1, 0.75, 0.15, 1.0),
    "blue": (0.1, 0.2, 0.9, 1.0),
}


def wrap_angle(a: float | np.ndarray) -> Any:
    """Wrap to [-pi, pi)."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


class TwinBackend:
    """One task on the twin: scene layout per episode and ground-truth judgement.

    Args:
        task: ``reach`` / ``push`` / ``seek`` (or an env id).
        desc: the robot description.
        randomization: dynamics ranges (off unless ``enabled``).
        seed: seeds the episode sequence when :meth:`new_episode` gets no seed.
        camera: render camera frames; default only for tasks whose policy sees the image (seek).
        ultrasonic: simulate the HC-SR04; default: as the description says (the runtime's safety
            layer reads it).
        robot_kwargs: more keyword arguments for :class:`SimRobot` (``gui``, ``physics_dt``, ...).
    """

    def __init__(
        self,
        task: str,
        desc: RobotDescription,
        *,
        randomization: DynamicsRandomization | None = None,
        seed: int | None = None,
        camera: bool | None = None,
        ultrasonic: bool | None = None,
        **robot_kwargs: Any,
    ) -> None:
        self.info: TaskInfo = task_info(task)
        self.task = self.info.name
        self.desc = desc
        if camera is None:
            camera = self.task == "seek"
        if ultrasonic is None:
            ultrasonic = desc.ultrasonic.enabled
        self.robot = SimRobot(
            desc,
            randomization=randomization,
            seed=seed,
            camera=camera,
            ultrasonic=ultrasonic,
            **robot_kwargs,
        )
        self._rng = np.random.default_rng(seed)
        self.episode: dict[str, Any] = {}
        g = desc.geometry
        us = desc.ultrasonic
        self.nose_x = us.mount.x if us.enabled else (0.5 * g.body_length - g.axle_offset)

    # ------------------------------------------------------------------ scenes
    def new_episode(
        self, seed: int | None = None, start: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Lay out a new scene and reset the robot; returns what the observer needs.

        ``start`` overrides parts of the random scene (e.g. to restart from a state of a recorded
        demonstration): ``pose`` (x, y, theta), ``goal`` (x, y) and, for push, ``box`` (x, y).

        Returns ``dict(goal=(x, y) | None, task_id=int | None, max_steps=int,
        box_guess=(x, y) | None)``; goals are in the odometry frame (= arena frame at the start).
        """
        rng = np.random.default_rng(seed) if seed is not None else self._rng
        if self.task == "reach":
            pose, objects, ep = self._reach(rng)
        elif self.task == "push":
            pose, objects, ep = self._push(rng)
        else:
            pose, objects, ep = self._seek(rng)
        if start:
            pose, objects = self._override(start, pose, objects, ep)
        self.robot.reset_scene(pose, objects, seed=int(rng.integers(2**31 - 1)))
        ep["max_steps"] = self.info.max_steps
        ep["start_pose"] = tuple(float(v) for v in pose)
        self.episode = ep
        log.debug("new %s episode: %s", self.task, ep)
        return {k: ep.get(k) for k in ("goal", "task_id", "max_steps", "box_guess")}

    def _override(
        self,
        start: Mapping[str, Any],
        pose: Any,
        objects: list[SceneObject],
        ep: dict[str, Any],
    ) -> tuple[Any, list[SceneObject]]:
        allowed = {"pose", "goal"} | ({"box"} if self.task == "push" else set())
        unknown = set(start) - allowed
        if unknown:
            raise Sim2PiError(
                f"unknown start keys {sorted(unknown)} for task '{self.task}'; "
                f"use {sorted(allowed)}"
            )

        def xy(key: str, n: int, half: float) -> tuple[float, ...]:
            v = np.asarray(start[key], np.float64).ravel()
            if v.shape != (n,) or not np.all(np.isfinite(v)) or np.any(np.abs(v[:2]) > half):
                raise Sim2PiError(
                    f"start['{key}'] must be {n} finite numbers with x, y inside "
                    f"[-{half}, {half}] m; got {start[key]!r}"
                )
            return tuple(float(a) for a in v)

        if "pose" in start:
            pose = xy("pose", 3, ARENA_HALF - 0.1)
        if "goal" in start:
            if not self.info.goal_conditioned:
                raise Sim2PiError(f"task '{self.task}' has no goal to set")
            ep["goal"] = xy("goal", 2, ARENA_HALF - 0.05)
        if "box" in start:
            box = xy("box", 2, ARENA_HALF - 0.1)
            objects = [dataclasses.replace(objects[0], position=(box[0], box[1]))]
            ep["box_guess"] = box
        return pose, objects

    @staticmethod
    def _pose(rng: np.random.Generator, half: float) -> tuple[float, float, float]:
        x, y = rng.uniform(-half, half, 2)
        return float(x), float(y), float(rng.uniform(-np.pi, np.pi))

    def _reach(self, rng: np.random.Generator) -> tuple[Any, list[SceneObject], dict[str, Any]]:
        pose = self._pose(rng, ARENA_HALF - START_MARGIN)
        while True:
            goal = rng.uniform(-GOAL_HALF, GOAL_HALF, 2)
            if math.dist(goal, pose[:2]) >= MIN_GOAL_DISTANCE:
                break
        return (
            pose,
            [],
            {"goal": (float(goal[0]), float(goal[1])), "task_id": None, "box_guess": None},
        )

    @staticmethod
    def _push_box_goal(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        box = rng.uniform(-BOX_HALF, BOX_HALF, 2)
        while True:
            ang = rng.uniform(-np.pi, np.pi)
            dist = rng.uniform(*PUSH_GOAL_DISTANCE)
            goal = box + dist * np.array([math.cos(ang), math.sin(ang)])
            if np.all(np.abs(goal) <= GOAL_HALF - 0.1):
                return box, goal

    def _push(self, rng: np.random.Generator) -> tuple[Any, list[SceneObject], dict[str, Any]]:
        box, goal = self._push_box_goal(rng)
        while True:
            pose = self._pose(rng, ARENA_HALF - START_MARGIN)
            if math.dist(pose[:2], box) >= 0.3:
                break
        obj = SceneObject(
            "box",
            "box",
            (BOX_HALF_SIZE,) * 3,
            (float(box[0]), float(box[1])),
            yaw=float(rng.uniform(-np.pi, np.pi)),
            mass=BOX_MASS,
            color=(0.9, 0.6, 0.2, 1.0),
            friction=BOX_FRICTION,
            tagged=True,
        )
        return (
            pose,
            [obj],
            {
                "goal": (float(goal[0]), float(goal[1])),
                "task_id": None,
                "box_guess": (float(box[0]), float(box[1])),
            },
        )

    def _seek(self, rng: np.random.Generator) -> tuple[Any, list[SceneObject], dict[str, Any]]:
        pts: list[np.ndarray] = []
        while len(pts) < len(SEEK_COLORS):
            q = rng.uniform(-SEEK_HALF, SEEK_HALF, 2)
            if all(np.linalg.norm(q - o) >= SEEK_SEPARATION for o in pts):
                pts.append(q)
        while True:
            pose = self._pose(rng, ARENA_HALF - START_MARGIN)
            if all(math.dist(pose[:2], o) >= 0.35 for o in pts):
                break
        objects = [
            SceneObject(
                name,
                "cylinder",
                (SEEK_RADIUS, SEEK_HEIGHT),
                (float(q[0]), float(q[1])),
                color=SEEK_RGBA[name],
            )
            for name, q in zip(SEEK_COLORS, pts, strict=True)
        ]
        task_id = int(rng.integers(len(SEEK_COLORS)))
        return (
            pose,
            objects,
            {"goal": None, "task_id": task_id, "box_guess": None, "target": SEEK_COLORS[task_id]},
        )

    # ------------------------------------------------------------------ judgement
    def ground_truth(self, achieved: Any = None) -> dict[str, Any]:
        """Ground truth of the current state.

        Keys: ``true_pose`` (x, y, theta), ``true_distance`` (reach: robot to goal; push: box to
        goal; seek: nose to the target's surface), ``true_success``, ``is_success`` and per task
        ``true_box`` (push) or ``target`` / ``heading_error`` (seek, rad). Goal-conditioned tasks
        also give ``true_achieved_goal``: the true value of what the achieved goal estimates (the
        robot's true x, y for reach, the box's for push; for privileged training in sim).

        ``is_success`` of a goal-conditioned task is judged on ``achieved`` (the policy's achieved
        goal, e.g. the odometry position) when given, like the reward; otherwise on ground truth.
        """
        r = self.robot
        pose = r.true_pose()
        thr = self.info.success_distance
        out: dict[str, Any] = {"true_pose": pose}
        goal: Any = self.episode.get("goal")  # None for seek
        if self.task == "reach":
            d = math.hypot(pose[0] - goal[0], pose[1] - goal[1])
            ok = d < thr
            out["true_achieved_goal"] = np.asarray(pose[:2], np.float32)
        elif self.task == "push":
            box = r.object_pose("box")
            out["true_box"] = box[:2].copy()
            out["box_z"] = float(box[2])
            out["true_achieved_goal"] = np.asarray(box[:2], np.float32)
            d = math.hypot(box[0] - goal[0], box[1] - goal[1])
            ok = d < thr
        else:
            target = self.episode["target"]
            obj = r.object_pose(target)
            c, s = math.cos(pose[2]), math.sin(pose[2])
            nose = pose[:2] + self.nose_x * np.array([c, s])
            d = float(np.linalg.norm(obj[:2] - nose) - SEEK_RADIUS)
            bearing = math.atan2(obj[1] - pose[1], obj[0] - pose[0])
            err = float(wrap_angle(bearing - pose[2]))
            out["target"] = target
            out["heading_error"] = err
            ok = d < thr and abs(err) < math.radians(SEEK_FACING_DEG)
        out["true_distance"] = d
        out["true_success"] = bool(ok)
        if achieved is not None and self.info.goal_conditioned:
            gd = math.hypot(float(achieved[0]) - goal[0], float(achieved[1]) - goal[1])
            out["is_success"] = bool(gd < thr)
        else:
            out["is_success"] = bool(ok)
        return out

    def close(self) -> None:
        self.robot.disconnect()


def push_starts_near_box(
    n: int,
    seed: int = 0,
    distance: tuple[float, float] = (0.2, 0.4),
    facing_deg: float = 45.0,
    behind: bool = False,
) -> list[dict[str, Any]]:
    """``n`` push start states (``reset(options={"start": ...})``) with the robot ``distance`` m
    from the box and facing it within ``facing_deg``; box and goal as in the normal task. An
    exploration curriculum: random actions from here touch the box far more often than from the
    task's starts (robot anywhere >= 0.3 m from the box, any heading).

    The robot stands on a random side of the box, or with ``behind`` on the far side from the goal
    (within ``facing_deg`` of the box-goal line), so that pushing straight on moves the box
    towards the goal."""
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    while len(out) < n:
        box, goal = TwinBackend._push_box_goal(rng)
        if behind:
            away = math.atan2(box[1] - goal[1], box[0] - goal[0])
            side = away + math.radians(rng.uniform(-facing_deg, facing_deg))
        else:
            side = rng.uniform(-np.pi, np.pi)
        start = _facing_box(rng, box, goal, side, rng.uniform(*distance), facing_deg)
        if start is not None:
            out.append(start)
    return out


def _facing_box(
    rng: np.random.Generator,
    box: np.ndarray,
    goal: np.ndarray,
    side: float,
    r: float,
    facing_deg: float,
) -> dict[str, Any] | None:
    """A push start with the robot ``r`` m from ``box`` in direction ``side`` (rad), facing the
    box within ``facing_deg`` (drawn from ``rng``); None if the robot would stand outside the
    start area."""
    x, y = box + r * np.array([math.cos(side), math.sin(side)])
    if max(abs(x), abs(y)) > ARENA_HALF - START_MARGIN:
        return None
    th = wrap_angle(side + np.pi + math.radians(rng.uniform(-facing_deg, facing_deg)))
    return {
        "pose": (float(x), float(y), float(th)),
        "box": (float(box[0]), float(box[1])),
        "goal": (float(goal[0]), float(goal[1])),
    }


def push_reverse_start(rng: np.random.Generator, level: float) -> dict[str, Any]:
    """One push start state of a reverse curriculum (Florensa et al. 2017, "Reverse Curriculum
    Generation"): easy near the goal at ``level`` 0, the task's own spread at ``level`` 1.

    The goal and the task's box are drawn as in the task. At ``level`` 0 the box starts on the
    goal (a success as it is) and the robot stands 0.22-0.3 m behind it (on the far side from the
    goal, where its camera sees the box), facing it within 15°. As the level rises the box moves
    back along the line to where the task put it, and the robot's distance (up to 0.8 m), side of
    the box (up to any side) and heading error (up to any heading) widen.
    """
    if not 0.0 <= level <= 1.0:
        raise Sim2PiError(f"curriculum level must be in [0, 1], got {level}")
    while True:
        box, goal = TwinBackend._push_box_goal(rng)
        d_task = float(np.linalg.norm(box - goal))
        u = (box - goal) / d_task
        box = goal + level * d_task * u
        away = math.atan2(u[1], u[0])
        side = away + math.radians(rng.uniform(-1, 1) * (20.0 + 160.0 * level))
        r = rng.uniform(0.22, 0.3 + 0.5 * level)
        start = _facing_box(rng, box, goal, side, r, 15.0 + 165.0 * level)
        if start is not None:
            return start


__all__ = [
    "SEEK_FACING_DEG",
    "TwinBackend",
    "push_reverse_start",
    "push_starts_near_box",
    "wrap_angle",
]
