"""Gymnasium tasks on the rover twin: ``sim2pi/RoverReach-v0``, ``RoverPush-v0``, ``RoverSeek-v0``.

Observations are exactly :class:`hardware.tasks.Observer` applied to the twin's raw observation,
and the spaces come from :func:`hardware.tasks.task_spec`, so a policy trained here sees the same
features on the Pi. Scenes and ground truth come from :class:`sim.backend.TwinBackend`, the same
code the runtime loop uses on the twin.

Example::

    import gymnasium as gym
    import sim  # registers the envs

    env = gym.make("sim2pi/RoverReach-v0", reward_type="dense")
    obs, info = env.reset(seed=0)
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from hardware.description import RobotDescription, load_description
from hardware.errors import Sim2PiError
from hardware.spec import Feature
from hardware.tasks import Observer, compute_reward, task_info, task_spec
from sim.backend import SEEK_FACING_DEG, TwinBackend, wrap_angle
from sim.randomization import DynamicsRandomization
from sim.twin import render_view

log = logging.getLogger(__name__)


def feature_space(feat: Feature) -> spaces.Box:
    """The gymnasium Box of a spec feature (images: 0..255 uint8)."""
    if feat.is_image:
        return spaces.Box(0, 255, feat.shape, np.uint8)
    low = np.asarray(feat.low if feat.low is not None else [-np.inf] * feat.dim, np.float32)
    high = np.asarray(feat.high if feat.high is not None else [np.inf] * feat.dim, np.float32)
    return spaces.Box(
        low.reshape(feat.shape), high.reshape(feat.shape), feat.shape, np.dtype(feat.dtype)
    )


def _description(description: str | Path | RobotDescription) -> RobotDescription:
    if isinstance(description, RobotDescription):
        return description
    return load_description(description)


def _randomization(
    r: DynamicsRandomization | str | Path | dict | None,
) -> DynamicsRandomization | None:
    if r is None or isinstance(r, DynamicsRandomization):
        return r
    if isinstance(r, dict):
        return DynamicsRandomization.from_dict(r)
    return DynamicsRandomization.from_yaml(r)


class RoverEnv(gym.Env):
    """Common machinery of the rover tasks (see the concrete classes for the docs).

    Keyword arguments (``gym.make(env_id, **kwargs)``):
        description: robot description (YAML path, shipped name or ``RobotDescription``).
        reward_type: ``"sparse"`` (0 / -1) or ``"dense"`` (minus the distance).
        randomization: ``DynamicsRandomization``, a YAML path / shipped name, a dict, or None.
        render_mode: ``"rgb_array"`` (a chase view) or None.
        terminate_on_success: end the episode on success (default True).
        max_steps: override the task's episode length.
        full_sensors: simulate every sensor of the description (default: only those the
            policy reads, which is faster).
        Other keywords go to :class:`sim.twin.SimRobot` (``gui``, ``physics_dt``, ...).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    task_name = ""

    # reset(options={"start": {...}}) starts from a given state instead of a random one: "pose"
    # (x, y, theta), "goal" (x, y) and for push "box" (x, y); see TwinBackend.new_episode.

    def __init__(
        self,
        description: str | Path | RobotDescription = "rover",
        *,
        reward_type: str = "sparse",
        randomization: DynamicsRandomization | str | Path | dict | None = None,
        render_mode: str | None = None,
        terminate_on_success: bool = True,
        max_steps: int | None = None,
        full_sensors: bool = False,
        **robot_kwargs: Any,
    ) -> None:
        if reward_type not in ("sparse", "dense"):
            raise Sim2PiError(f"reward_type must be 'sparse' or 'dense', got {reward_type!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise Sim2PiError(
                f"render_mode must be one of {self.metadata['render_modes']} or "
                f"None, got {render_mode!r}"
            )
        self.desc = _description(description)
        self.task = task_info(self.task_name)
        self.reward_type = reward_type
        self.render_mode = render_mode
        self.terminate_on_success = terminate_on_success
        self.max_steps = int(max_steps or self.task.max_steps)
        self.metadata = {**self.metadata, "render_fps": round(self.desc.control.rate)}
        self.spec_ = task_spec(self.task.name, self.desc)
        # OrderedDict keeps the spec's feature order (gymnasium sorts a plain dict's keys).
        self.observation_space = spaces.Dict(
            OrderedDict((k, feature_space(f)) for k, f in self.spec_.observation.items())
        )
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        # Simulate only the sensors the policy reads unless asked for all (speed).
        needs_all = full_sensors or self.task.name == "seek"
        robot_kwargs.setdefault("camera", needs_all)
        robot_kwargs.setdefault("ultrasonic", needs_all)
        self.backend = TwinBackend(
            self.task.name, self.desc, randomization=_randomization(randomization), **robot_kwargs
        )
        self.robot = self.backend.robot
        self.observer = Observer(self.task.name, self.desc)
        self._steps = 0
        self._last_obs: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(2**31 - 1))
        ep = self.backend.new_episode(seed=episode_seed, start=(options or {}).get("start"))
        self.observer.reset(goal=ep["goal"], task_id=ep["task_id"], box_guess=ep["box_guess"])
        self._steps = 0
        obs = self.observer(self.robot.get_observation())
        self._last_obs = obs
        return obs, self._info(obs)

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        applied = self.robot.send_action(action)
        self._steps += 1
        obs = self.observer(self.robot.get_observation())
        self._last_obs = obs
        info = self._info(obs)
        info["applied_action"] = applied
        reward = self._reward(obs, info)
        terminated = bool(self.terminate_on_success and info["is_success"])
        truncated = self._steps >= self.max_steps
        return obs, reward, terminated, truncated, info

    def _info(self, obs: dict[str, np.ndarray]) -> dict[str, Any]:
        info = self.backend.ground_truth(obs.get("achieved_goal"))
        info["steps"] = self._steps
        return info

    def _reward(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> float:
        return float(self.compute_reward(obs["achieved_goal"], obs["desired_goal"], info))

    def compute_reward(
        self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any
    ) -> np.ndarray:
        """Vectorized reward (SB3's HerReplayBuffer calls it with batches)."""
        return compute_reward(
            self.task.name, achieved_goal, desired_goal, info, dense=self.reward_type == "dense"
        )

    def render(self) -> np.ndarray | None:
        """``rgb_array``: a 240×320 chase view from behind and above the robot."""
        if self.render_mode != "rgb_array":
            return None
        return render_chase(self.robot)

    def close(self) -> None:
        self.backend.close()


def render_chase(robot: Any, width: int = 320, height: int = 240) -> np.ndarray:
    """An RGB frame from 0.6 m behind and 0.5 m above the robot, looking at it."""
    x, y, th = robot.true_pose()
    eye = np.array([x - 0.6 * math.cos(th), y - 0.6 * math.sin(th), 0.5])
    target = np.array([x + 0.2 * math.cos(th), y + 0.2 * math.sin(th), 0.0])
    fwd = (target - eye) / np.linalg.norm(target - eye)
    left = np.array([-math.sin(th), math.cos(th), 0.0])
    up = np.cross(fwd, left)
    hfov = math.degrees(2 * math.atan(math.tan(math.radians(30)) * width / height))
    return render_view(robot, eye, fwd, up, hfov, width, height, 0.02, 6.0)


class RoverReachEnv(RoverEnv):
    """Drive the rover's axle centre to a goal point.

    ## Description
    A two-wheel differential-drive rover (built from the robot description) in a walled 2 × 2 m
    arena must bring the midpoint of its wheel axle within 5 cm of a goal (x, y). The policy only
    knows its wheel-encoder odometry, so wheel slip shows up as odometry drift.

    ## Action space
    ``Box(-1, 1, (2,), float32)``: left and right wheel duty, as gpiozero ``Robot.value``
    (+1 full forward). Non-finite actions stop the motors.

    ## Observation space
    ``Dict`` (from :func:`hardware.tasks.task_spec`):

    ============= ===== ============================================ ============== ==========
    key           index meaning                                      unit           range
    ============= ===== ============================================ ============== ==========
    observation   0-1   odometry x, y                                m              [-1.5, 1.5]
    observation   2-3   cos, sin of the odometry heading             -              [-1, 1]
    observation   4-5   left, right wheel speed (encoders)           rad/s          unbounded
    achieved_goal 0-1   odometry x, y                                m              [-1.5, 1.5]
    desired_goal  0-1   goal x, y (odometry frame = arena frame at   m              [-1, 1]
                        the start)
    ============= ===== ============================================ ============== ==========

    ## Rewards
    ``reward_type="sparse"``: 0 when the achieved goal is within 5 cm of the desired goal, else -1.
    ``"dense"``: minus that distance (m). :meth:`compute_reward` is vectorized for HER.

    ## Starting state
    Anywhere at least 0.25 m from the walls, uniform heading; goal uniform in [-0.8, 0.8]² and at
    least 0.2 m from the start.

    ## Episode end
    Terminated on success (``terminate_on_success=True``, judged on the achieved goal); truncated
    after 150 steps (7.5 s at 20 Hz).

    ## Info
    ``is_success``, ``true_pose`` (ground-truth x, y, theta), ``true_distance`` (true position to
    goal, m), ``true_success``, ``true_achieved_goal`` (true x, y), ``applied_action``, ``steps``.
    """

    task_name = "reach"


class RoverPushEnv(RoverEnv):
    """Push a tagged 6 cm box to a goal point.

    ## Description
    The rover must push a light cube with a fiducial tag until the box is within 5 cm of a goal.
    The box is seen only through the marker detector on the front camera (field of view, 1.5 m
    range, noise); the observer keeps the last estimate in the odometry frame. A box touching the
    rover's front is below the camera's view, so its estimate goes stale while pushing: back off to
    see it again.

    ## Action space
    ``Box(-1, 1, (2,), float32)``: left and right wheel duty.

    ## Observation space
    ============= ===== ============================================ ============== ==========
    key           index meaning                                      unit           range
    ============= ===== ============================================ ============== ==========
    observation   0-1   odometry x, y                                m              [-1.5, 1.5]
    observation   2-3   cos, sin of the odometry heading             -              [-1, 1]
    observation   4-5   left, right wheel speed                      rad/s          unbounded
    observation   6-7   last box estimate x, y (odometry frame)      m              [-1.5, 1.5]
    observation   8     box seen in this frame                       0/1            [0, 1]
    achieved_goal 0-1   last box estimate x, y                       m              [-1.5, 1.5]
    desired_goal  0-1   goal x, y for the box                        m              [-1, 1]
    ============= ===== ============================================ ============== ==========

    ## Rewards
    Sparse: 0 when the box estimate is within 5 cm of the goal, else -1; dense: minus the distance.

    ## Starting state
    Box in [-0.5, 0.5]² with random yaw, goal 0.15-0.5 m from it; robot ≥ 0.3 m from the box,
    uniform heading. The observer starts from the box's true position.

    ## Episode end
    Terminated on success; truncated after 300 steps (15 s).

    ## Info
    ``is_success``, ``true_pose``, ``true_box``, ``box_z``, ``true_distance`` (true box to goal),
    ``true_success``, ``true_achieved_goal`` (= ``true_box``), ``applied_action``, ``steps``.
    """

    task_name = "push"


class RoverSeekEnv(RoverEnv):
    """Drive up to the red, green or blue object named by a task id, using the camera.

    ## Description
    Three static coloured cylinders (4 cm radius, 12 cm tall) stand in the arena. The policy sees
    the front camera (64×64 RGB), the ultrasonic range and wheel speeds, and a one-hot task id.
    Success: the robot's nose (its ultrasonic sensor) within 0.15 m of the target's surface while
    facing it, i.e. the heading differs from the bearing to the target's centre by less than 25°.

    ## Action space
    ``Box(-1, 1, (2,), float32)``: left and right wheel duty.

    ## Observation space
    =========== ======== ========================================= ======= ===========
    key         index    meaning                                   unit    range
    =========== ======== ========================================= ======= ===========
    observation 0        ultrasonic range (max_distance: no echo)  m       [0, 2]
    observation 1        echo received                             0/1     [0, 1]
    observation 2-3      left, right wheel speed                   rad/s   unbounded
    image       64×64×3  front camera, RGB                         -       0..255 uint8
    task        0-2      one-hot: red, green, blue                 -       {0, 1}
    =========== ======== ========================================= ======= ===========

    ## Rewards
    Sparse: 0 on success, else -1. Dense: minus the nose-to-surface distance (m) minus
    0.1 × |heading error| (rad).

    ## Starting state
    Objects uniform in [-0.7, 0.7]², ≥ 0.45 m apart; robot ≥ 0.35 m from each, uniform heading;
    target drawn uniformly.

    ## Episode end
    Terminated on success; truncated after 200 steps (10 s).

    ## Info
    ``is_success``, ``true_pose``, ``target``, ``true_distance`` (nose to surface, m),
    ``heading_error`` (rad), ``applied_action``, ``steps``.
    """

    task_name = "seek"

    def _reward(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> float:
        if self.reward_type == "dense":
            return float(-max(info["true_distance"], 0.0) - 0.1 * abs(info["heading_error"]))
        return 0.0 if info["is_success"] else -1.0

    def compute_reward(
        self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any
    ) -> np.ndarray:
        raise Sim2PiError(
            "RoverSeek is not goal-conditioned: it has no compute_reward; use the "
            "reward returned by step()"
        )


ENTRY_POINTS = {"reach": RoverReachEnv, "push": RoverPushEnv, "seek": RoverSeekEnv}

__all__ = [
    "ENTRY_POINTS",
    "SEEK_FACING_DEG",
    "RoverEnv",
    "RoverPushEnv",
    "RoverReachEnv",
    "RoverSeekEnv",
    "feature_space",
    "render_chase",
    "wrap_angle",
]
