"""Scripted experts for the rover tasks, acting on the *policy* observation.

Every expert works from what a policy sees (:class:`hardware.tasks.Observer` output), so it can
drive the twin through the runtime loop as a command source and its demonstrations are learnable:

- reach: turn-then-drive pursuit of the goal on the odometry pose.
- push: go behind the box (detouring around it), line up with the goal, push until the box —
  out of the camera's view while touching the rover — should be at the goal, back off to see it
  again and repeat if needed.
- seek: visual servoing: the centroid of the target colour's pixels steers, the ultrasonic range
  (when the target is centred) or the blob size sets the speed; spin to search when not in view.

DART-style noise: ``act`` always returns the clean expert action (the *label*); execute
``expert.noisy(action)`` to inject Gaussian noise of std ``noise`` into the rollout.

Example::

    expert = make_expert("reach", desc, noise=0.1, seed=0)
    expert.reset()
    label = expert.act(obs, info)
    obs, *_ = env.step(expert.noisy(label))
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hardware.description import RobotDescription
from hardware.errors import Sim2PiError
from hardware.tasks import SEEK_COLORS, task_info


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


class Expert:
    """Base class: unicycle commands → wheel duty with deadband compensation, plus DART noise."""

    task = ""

    def __init__(self, desc: RobotDescription, noise: float = 0.0, seed: int | None = None):
        if noise < 0:
            raise Sim2PiError(f"noise must be >= 0, got {noise}")
        self.desc = desc
        self.noise = float(noise)
        self.rng = np.random.default_rng(seed)
        g, m = desc.geometry, desc.motors
        self.v_max = m.max_wheel_speed * g.wheel_radius  # m/s at full duty
        self.deadband = m.deadband
        self.front = 0.5 * g.body_length - g.axle_offset  # chassis front, ahead of the axle (m)
        self.reset()

    def reset(self) -> None:
        """Forget per-episode state."""

    def act(
        self, policy_obs: dict[str, np.ndarray], info: dict[str, Any] | None = None
    ) -> np.ndarray:
        """The clean expert action ``(left, right)`` in [-1, 1]."""
        raise NotImplementedError

    def noisy(self, action: np.ndarray) -> np.ndarray:
        """``action`` plus Gaussian noise of std ``noise``, clipped to [-1, 1] (what to execute)."""
        a = np.asarray(action, np.float32)
        if self.noise > 0:
            a = a + self.rng.normal(0.0, self.noise, a.shape).astype(np.float32)
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    def wheels(self, v: float, w: float) -> np.ndarray:
        """Forward ``v`` and turn ``w`` (both as fractions of full duty) → compensated duty."""
        raw = np.array([v - w, v + w], np.float64)
        peak = np.max(np.abs(raw))
        if peak > 1.0:
            raw /= peak
        db = self.deadband
        out = np.where(np.abs(raw) > 1e-3, np.sign(raw) * (db + (1 - db) * np.abs(raw)), 0.0)
        return np.clip(out, -1.0, 1.0).astype(np.float32)

    def drive_to(
        self,
        pose: tuple[float, float, float],
        target: np.ndarray,
        *,
        speed: float = 1.0,
        slow_radius: float = 0.25,
        turn_gain: float = 0.9,
        spin_above: float = 0.9,
    ) -> tuple[np.ndarray, float, float]:
        """Turn-then-drive toward ``target``; returns (action, distance, bearing error)."""
        x, y, th = pose
        dx, dy = float(target[0] - x), float(target[1] - y)
        dist = math.hypot(dx, dy)
        err = _wrap(math.atan2(dy, dx) - th)
        w = float(np.clip(turn_gain * err, -0.6, 0.6))
        if abs(err) > spin_above:
            return self.wheels(0.0, w), dist, err
        v = speed * min(1.0, max(dist / slow_radius, 0.25)) * math.cos(err)
        return self.wheels(v, w), dist, err


def _pose(obs: dict[str, np.ndarray]) -> tuple[float, float, float]:
    o = obs["observation"]
    return float(o[0]), float(o[1]), math.atan2(float(o[3]), float(o[2]))


class ReachExpert(Expert):
    """Turn toward the goal, then drive at it, slowing down inside 25 cm; stop inside 2 cm."""

    task = "reach"

    def act(
        self, policy_obs: dict[str, np.ndarray], info: dict[str, Any] | None = None
    ) -> np.ndarray:
        goal = np.asarray(policy_obs["desired_goal"], np.float64)
        pose = _pose(policy_obs)
        if math.dist(pose[:2], goal) < 0.02:
            return np.zeros(2, np.float32)
        action, _, _ = self.drive_to(pose, goal)
        return action


class PushExpert(Expert):
    """Memoryless pusher: the action is a function of the current observation only.

    The phase is decided geometrically at every call from the odometry pose, the box estimate,
    the goal, ``box_seen`` and the measured wheel speeds (no internal state, no timer):

    - box estimate at the goal: stop.
    - pushing: the box estimate lies at or behind the chassis front while the rover stands on the
      box→goal line facing the goal. The box cannot be inside the rover, so the estimate is stale
      and the box rides in front of it (out of the camera's view): steer the point ahead of the
      chassis onto the goal until it gets there, then reverse so the camera sees the box again.
      Keep reversing while the box is unseen, within the back-off zone and the wheels already
      turn backwards (the hysteresis is read from the observed wheel speeds).
    - lined up: behind the box on the box→goal line (within tolerance of the stand-off point's
      line): face the box, then drive through it toward the goal.
    - otherwise: drive to a stand-off point behind the box, detouring around it when it is in
      the way.
    """

    task = "push"
    BEHIND = 0.24  # m: stand-off behind the box centre before pushing
    BACKOFF = 0.12  # m to reverse after a push so the camera sees the box again
    DETOUR = 0.22  # m: side waypoint distance from the box when it is in the way
    LATERAL = 0.04  # m: offset from the box→goal line that still counts as lined up
    PUSH_LATERAL = 0.06  # m: offset from the (stale) line still counted as pushing
    FACING = 0.02  # m: sideways offset of the box in the rover frame that counts as facing it

    def act(
        self, policy_obs: dict[str, np.ndarray], info: dict[str, Any] | None = None
    ) -> np.ndarray:
        o = policy_obs["observation"]
        x, y, th = _pose(policy_obs)
        pos = np.array([x, y])
        goal = np.asarray(policy_obs["desired_goal"], np.float64)
        seen = o[8] > 0.5
        box = np.array([o[6], o[7]], np.float64)
        if np.linalg.norm(box - goal) < 0.025:
            return np.zeros(2, np.float32)
        heading = np.array([math.cos(th), math.sin(th)])
        left = np.array([-heading[1], heading[0]])
        contact = self.front + 0.03  # box centre when it touches the chassis front
        u = goal - box
        u /= max(float(np.linalg.norm(u)), 1e-6)
        n = np.array([-u[1], u[0]])
        along, lateral = float((pos - box) @ u), float((pos - box) @ n)
        fx, fy = float((box - pos) @ heading), float((box - pos) @ left)  # box in rover frame
        nose = pos + contact * heading
        to_goal = goal - nose
        remaining = float(to_goal @ heading)
        goal_err = _wrap(math.atan2(to_goal[1], to_goal[0]) - th)
        line_err = _wrap(th - math.atan2(u[1], u[0]))

        # The box cannot be inside the rover: an estimate at or behind the chassis front, on the
        # line the rover is pushing along, is stale and the box rides ahead of the rover.
        past_box = (
            fx < contact + 0.01
            and fx > -float(np.linalg.norm(goal - box)) - 0.1
            and abs(lateral) < 2 * self.PUSH_LATERAL
            and abs(line_err) < 1.2
        )
        if past_box and not seen:
            reversing = float(o[4] + o[5]) < -1.0  # rad/s, both wheels together
            if remaining < 0.005 or (reversing and remaining < self.BACKOFF + 0.005):
                return self.wheels(-0.5, 0.0)
        if (
            past_box
            and abs(lateral) < self.PUSH_LATERAL
            and abs(line_err) < 0.6
            and remaining >= 0.005
            and np.linalg.norm(to_goal) >= 0.01
        ):
            return self._push(remaining, goal_err)
        lined_up = abs(lateral) < self.LATERAL and -self.BEHIND - 0.06 < along < -contact + 0.02
        if lined_up:
            if fx > 0 and abs(fy) < self.FACING:
                return self._push(remaining, goal_err)
            err = math.atan2(fy, fx)
            return self.wheels(0.0, float(np.clip(0.9 * err, -0.4, 0.4)))
        stand = box - self.BEHIND * u
        target = self._detour(pos, stand, box, u)
        action, _, _ = self.drive_to((x, y, th), target, slow_radius=0.2)
        return action

    def _push(self, remaining: float, goal_err: float) -> np.ndarray:
        """Drive ahead, steering the point where the box rides onto the goal."""
        v = 0.65 * min(1.0, max(remaining / 0.15, 0.3))
        return self.wheels(v, float(np.clip(0.6 * goal_err, -0.2, 0.2)))

    def _detour(
        self, pos: np.ndarray, stand: np.ndarray, box: np.ndarray, u: np.ndarray
    ) -> np.ndarray:
        """``stand`` itself, or a waypoint beside the box when the straight path passes it."""
        seg = stand - pos
        L = float(np.linalg.norm(seg))
        if L < 1e-6:
            return stand
        t = float(np.clip((box - pos) @ seg / L**2, 0.0, 1.0))
        if np.linalg.norm(pos + t * seg - box) > 0.17 or t >= 0.999:
            return stand
        side = np.array([-u[1], u[0]])
        if (pos - box) @ side < 0:
            side = -side
        return box + self.DETOUR * side - 0.05 * u


class SeekExpert(Expert):
    """Visual servoing on the target colour's blob in the 64×64 image.

    Search: spin in place. After a full turn without the target (hidden behind another object),
    line up with a visible other object, turn 90° and drive ~0.3 m to a new vantage point.
    """

    task = "seek"
    STOP_RANGE = 0.11  # m: ultrasonic reading at which to stop in front of the target
    FULL_TURN = 36  # ticks of spinning counted as a full turn (~4 rad/s at 20 Hz, with margin)

    def reset(self) -> None:
        self.search_dir = 1.0
        self.state = "search"
        self.ticks = 0
        self.servo_ticks = 0
        self.resume = "search"
        self.detour = False  # going around an obstacle: ignore the target until done
        self.last_action = np.zeros(2, np.float32)
        self.best_blob = 0  # largest target blob while servoing (progress check)
        self.no_progress = 0

    @staticmethod
    def blob(image: np.ndarray, color: int) -> tuple[int, float, float]:
        """(pixel count, centroid column in [-1, 1], lowest row in [0, 1]) of a colour."""
        img = image.astype(np.int16)
        c = img[:, :, color]
        others = np.delete(img, color, axis=2).max(axis=2)
        mask = (c > 90) & (c > others * 2 + 30)
        n = int(mask.sum())
        if n == 0:
            return 0, 0.0, 0.0
        rows, cols = np.nonzero(mask)
        w = image.shape[1]
        return n, float((cols.mean() + 0.5) / w * 2 - 1), float(rows.max() / image.shape[0])

    def _goto(self, state: str) -> None:
        self.state, self.ticks = state, 0

    def act(
        self, policy_obs: dict[str, np.ndarray], info: dict[str, Any] | None = None
    ) -> np.ndarray:
        action = self._act(policy_obs)
        self.last_action = action
        return action

    def _stuck(self, n: int) -> bool:
        """Pinned against another object: 2 s of driving at the target without it growing."""
        if self.state == "servo" and float(self.last_action.min()) > 0.2:
            if n > self.best_blob * 1.1 + 1:
                self.best_blob, self.no_progress = n, 0
            else:
                self.no_progress += 1
            if self.no_progress > 40:
                self.best_blob = self.no_progress = 0
                return True
        return False

    def _act(self, policy_obs: dict[str, np.ndarray]) -> np.ndarray:
        color = int(np.argmax(policy_obs["task"]))
        image = policy_obs["image"]
        n, cx, _ = self.blob(image, color)
        if self.state != "unstick" and self._stuck(n):
            self._goto("unstick")
            self.detour = True
        if self.state == "unstick":  # back away from whatever holds us, then go around it
            self.ticks += 1
            if self.ticks > 8:
                self._goto("side_turn")
            return self.wheels(-0.5, 0.0)
        rng, valid = float(policy_obs["observation"][0]), policy_obs["observation"][1] > 0.5
        detouring = self.detour and self.state in ("side_turn", "relocate")
        if n >= 2 and not detouring:
            if self.state != "servo":
                self.resume, self.servo_ticks = self.state, 0
                self.state = "servo"
            self.servo_ticks += 1
            action = self._servo(n, cx, rng, valid, image)
            if self.state != "side_turn":
                return action
        elif self.state == "servo":
            # Lost it. After a real approach search afresh (turning the way it was last seen);
            # after a glimpse (peeking past an occluder) carry on with the search as it was.
            if self.servo_ticks > 6:
                self._goto("search")
            else:
                self.state = self.resume
        self.ticks += 1
        if self.state == "search":
            if self.ticks > self.FULL_TURN:
                self._goto("line_up")
            return self.wheels(0.0, 0.45 * self.search_dir)
        if self.state == "line_up":  # face another object (the likely occluder)
            others = [self.blob(image, k) for k in range(3) if k != color]
            seen = [o for o in others if o[0] >= 2]
            if self.ticks > self.FULL_TURN or (seen and min(abs(o[1]) for o in seen) < 0.25):
                self._goto("side_turn")
            return self.wheels(0.0, 0.45 * self.search_dir)
        if self.state == "side_turn":
            if self.ticks > 8:
                self._goto("relocate")
            return self.wheels(0.0, 0.45)
        # relocate: drive to a new vantage point, turning away from walls and objects
        if self.ticks > 12:
            self._goto("search")
            self.detour = False
            return self.wheels(0.0, 0.45 * self.search_dir)
        if valid and rng < 0.25:
            return self.wheels(0.0, 0.45)
        return self.wheels(0.6, 0.0)

    def _servo(self, n: int, cx: float, rng: float, valid: bool, image: np.ndarray) -> np.ndarray:
        self.search_dir = -1.0 if cx > 0 else 1.0
        half_fov = math.radians(self.desc.camera.fov) / 2
        err = -cx * half_fov  # rad, positive = target to the left
        w = float(np.clip(1.0 * err, -0.5, 0.5))
        centred = abs(err) < 0.12
        near = n / image.shape[0] / image.shape[1]
        if valid and rng < 0.2 and near < 0.04:
            # something close ahead but the target is small (far): go around the obstacle
            self._goto("side_turn")
            self.detour = True
            return self.wheels(0.0, 0.45)
        if centred and valid and rng < self.STOP_RANGE:
            return np.zeros(2, np.float32)
        if abs(err) > 0.35:
            return self.wheels(0.0, w)
        v = 0.8 if near < 0.05 else 0.45
        if centred and valid and rng < 0.3:
            v = max(0.2, min(v, (rng - self.STOP_RANGE) / 0.2 * 0.45 + 0.15))
        return self.wheels(v * math.cos(err), w)


_EXPERTS: dict[str, type[Expert]] = {"reach": ReachExpert, "push": PushExpert, "seek": SeekExpert}


def make_expert(
    task: str, desc: RobotDescription, noise: float = 0.0, seed: int | None = None
) -> Expert:
    """The scripted expert of ``task`` (``reach`` / ``push`` / ``seek`` or an env id)."""
    return _EXPERTS[task_info(task).name](desc, noise=noise, seed=seed)


__all__ = ["SEEK_COLORS", "Expert", "PushExpert", "ReachExpert", "SeekExpert", "make_expert"]
