"""The tasks' observation contract, shared by the sim envs and the runtime on the robot.

The policy's observation must be computable on the real robot, so it is built here, in pure numpy,
from the raw ``Robot.get_observation()`` dict (odometry, wheel speeds, range, camera, marker) plus
the episode's goal or task id. The sim envs call the same :class:`Observer`, so a policy sees exactly
the same features in sim, from a dataset, and on the Pi.

Tasks (arena: a walled 2 × 2 m square centred on the origin; the odometry frame is initialised to
the robot's start pose, so goals are given in that frame):

- ``reach``: drive the robot's axle centre to a goal (x, y). Goal-conditioned.
- ``push``: push a box (with a fiducial tag) to a goal (x, y). The box is seen through the marker
  detector (camera field of view, range, noise); the observer keeps the last estimate in the
  odometry frame. Goal-conditioned; achieved goal = box estimate.
- ``seek``: a task id (one-hot red / green / blue) names one of three coloured objects; drive up to
  it and face it. Image-based (64×64 RGB) + range + wheel speeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hardware.description import RobotDescription
from hardware.errors import Sim2PiError
from hardware.spec import Feature, Spec, action_feature, image, vector

ARENA_HALF = 1.0  # m: the arena is [-1, 1] x [-1, 1], inside the walls


@dataclass(frozen=True)
class TaskInfo:
    name: str
    env_id: str
    goal_conditioned: bool
    success_distance: float  # m
    max_steps: int  # control ticks per episode (at the description's control rate)
    n_task_ids: int = 0  # one-hot size for multi-task conditioning (seek: 3)
    doc: str = ""
    contact: bool = False  # the task pushes objects: the runtime turns the obstacle stop off


TASKS: dict[str, TaskInfo] = {
    "reach": TaskInfo(
        "reach", "sim2pi/RoverReach-v0", True, 0.05, 150, doc="drive to a goal (x, y)"
    ),
    "push": TaskInfo(
        "push",
        "sim2pi/RoverPush-v0",
        True,
        0.05,
        300,
        contact=True,
        doc="push the tagged box to a goal (x, y)",
    ),
    "seek": TaskInfo(
        "seek",
        "sim2pi/RoverSeek-v0",
        False,
        0.15,
        200,
        n_task_ids=3,
        doc="drive up to the red / green / blue object named by the task id",
    ),
}
SEEK_COLORS = ("red", "green", "blue")


def task_info(task: str) -> TaskInfo:
    key = task.lower().removeprefix("sim2pi/").removeprefix("rover").split("-")[0]
    if key not in TASKS:
        raise Sim2PiError(f"unknown task '{task}'; choose one of {sorted(TASKS)}")
    return TASKS[key]


def _pose_features() -> tuple[list[str], list[str], list[float], list[float]]:
    names = ["x", "y", "cos_theta", "sin_theta", "wheel_left", "wheel_right"]
    units = ["m", "m", "-", "-", "rad/s", "rad/s"]
    lim = ARENA_HALF + 0.5
    return names, units, [-lim, -lim, -1, -1, -np.inf, -np.inf], [lim, lim, 1, 1, np.inf, np.inf]


def task_spec(task: str, desc: RobotDescription) -> Spec:
    """The policy spec of ``task`` on the robot ``desc`` (observation features + action)."""
    info = task_info(task)
    lim = ARENA_HALF
    goal_names, goal_units = ("x", "y"), ("m", "m")
    obs: dict[str, Feature] = {}
    notes: dict[str, str] = {}
    if info.name == "reach":
        n, u, lo, hi = _pose_features()
        obs["observation"] = vector("observation", n, u, lo, hi, "odometry pose and wheel speeds")
    elif info.name == "push":
        n, u, lo, hi = _pose_features()
        n += ["box_x", "box_y", "box_seen"]
        u += ["m", "m", "bool"]
        lo += [-lim - 0.5, -lim - 0.5, 0.0]
        hi += [lim + 0.5, lim + 0.5, 1.0]
        obs["observation"] = vector(
            "observation", n, u, lo, hi, "odometry, wheel speeds, last box estimate from the marker"
        )
        notes["box"] = (
            "the box is observed through a fiducial (ArUco) detector on the front camera: "
            "field of view, range and noise as the camera; needs the `marker` feature"
        )
    else:
        us = desc.ultrasonic
        obs["observation"] = vector(
            "observation",
            ("range", "range_valid", "wheel_left", "wheel_right"),
            ("m", "bool", "rad/s", "rad/s"),
            (0.0, 0.0, -np.inf, -np.inf),
            (us.max_distance, 1.0, np.inf, np.inf),
            "ultrasonic range and wheel speeds",
        )
        obs["image"] = image("image", 64, 64, "front camera, 64x64 RGB")
        obs["task"] = vector(
            "task",
            SEEK_COLORS,
            ("bool",) * 3,
            (0.0,) * 3,
            (1.0,) * 3,
            "one-hot: which coloured object to seek",
        )
    if info.goal_conditioned:
        obs["achieved_goal"] = vector(
            "achieved_goal",
            goal_names,
            goal_units,
            (-lim - 0.5,) * 2,
            (lim + 0.5,) * 2,
            "robot position (reach) / box estimate (push), odometry frame",
        )
        obs["desired_goal"] = vector(
            "desired_goal",
            goal_names,
            goal_units,
            (-lim,) * 2,
            (lim,) * 2,
            "goal position, odometry frame",
        )
    return Spec(
        observation=obs,
        action=action_feature(),
        task=info.name,
        robot=desc.name,
        robot_hash=desc.hash,
        control_rate=desc.control.rate,
        notes=notes,
    )


def goal_distance(achieved: np.ndarray, desired: np.ndarray) -> np.ndarray:
    return np.linalg.norm(
        np.asarray(achieved, dtype=np.float64) - np.asarray(desired, np.float64), axis=-1
    )


def compute_reward(
    task: str, achieved: np.ndarray, desired: np.ndarray, info: Any = None, *, dense: bool = False
) -> np.ndarray:
    """Vectorized reward over a batch (SB3's HerReplayBuffer calls it with batches).

    Sparse: 0 on success (distance < success_distance), else -1. Dense: minus the distance.
    """
    d = goal_distance(achieved, desired)
    if dense:
        return (-d).astype(np.float32)
    return -(d >= task_info(task).success_distance).astype(np.float32)


def is_success(task: str, achieved: np.ndarray, desired: np.ndarray) -> np.ndarray:
    return goal_distance(achieved, desired) < task_info(task).success_distance


class Observer:
    """Turns a raw robot observation (+ goal / task id) into the policy's observation dict.

    Keeps per-episode state (the push task's last box estimate). Call :meth:`reset` at the start of
    every episode.
    """

    def __init__(self, task: str, desc: RobotDescription):
        self.info = task_info(task)
        self.desc = desc
        self.spec = task_spec(task, desc)
        self.goal = np.zeros(2, np.float32)
        self.task_id = 0
        self._box = np.zeros(2, np.float32)
        self._box_known = False

    def reset(self, goal: Any = None, task_id: int | None = None, box_guess: Any = None) -> None:
        if self.info.goal_conditioned:
            if goal is None:
                raise Sim2PiError(f"task '{self.info.name}' needs a goal (x, y)")
            self.goal = np.asarray(goal, np.float32).reshape(2)
        if self.info.n_task_ids:
            if task_id is None or not 0 <= int(task_id) < self.info.n_task_ids:
                raise Sim2PiError(
                    f"task '{self.info.name}' needs a task id in [0, {self.info.n_task_ids})"
                )
            self.task_id = int(task_id)
        self._box_known = box_guess is not None
        self._box = np.asarray(box_guess if box_guess is not None else (0.0, 0.0), np.float32)

    def __call__(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        name = self.info.name
        out: dict[str, np.ndarray] = {}
        if name in ("reach", "push"):
            x, y, th = (float(v) for v in raw["pose"])
            ws = raw["wheel_speed"]
            base = [x, y, np.cos(th), np.sin(th), float(ws[0]), float(ws[1])]
            if name == "reach":
                out["observation"] = np.asarray(base, np.float32)
                out["achieved_goal"] = np.asarray([x, y], np.float32)
            else:
                m = raw.get("marker")
                seen = m is not None and m[0] > 0.5
                if m is not None and seen:
                    c, s = np.cos(th), np.sin(th)
                    bx = x + c * float(m[1]) - s * float(m[2])
                    by = y + s * float(m[1]) + c * float(m[2])
                    self._box = np.asarray([bx, by], np.float32)
                    self._box_known = True
                out["observation"] = np.asarray(
                    [*base, self._box[0], self._box[1], 1.0 if seen else 0.0], np.float32
                )
                out["achieved_goal"] = self._box.copy()
            out["desired_goal"] = self.goal.copy()
        else:
            rng = raw.get("range", np.array([self.desc.ultrasonic.max_distance]))
            valid = raw.get("range_valid", np.array([0.0]))
            ws = raw["wheel_speed"]
            out["observation"] = np.asarray(
                [float(rng[0]), float(valid[0]), float(ws[0]), float(ws[1])], np.float32
            )
            img = raw["image"]
            if img.shape[:2] != (64, 64):
                img = resize_nearest(img, 64, 64)
            out["image"] = np.ascontiguousarray(img, dtype=np.uint8)
            onehot = np.zeros(self.info.n_task_ids, np.float32)
            onehot[self.task_id] = 1.0
            out["task"] = onehot
        return out


def resize_nearest(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize in numpy (no OpenCV needed)."""
    h, w = img.shape[:2]
    rows = (np.arange(height) * h // height).clip(0, h - 1)
    cols = (np.arange(width) * w // width).clip(0, w - 1)
    return img[rows][:, cols]
