"""The PyBullet twin of a described rover, as a :class:`hardware.robot.Robot`.

The twin is *built from* the robot description (procedurally, with ``createMultiBody``): a chassis
box, two driven wheels on revolute joints and a frictionless ball caster at the rear, in a walled
2 × 2 m arena on a thick static floor box (a plane lets sliding boxes sink at coarse steps).

Frames: the robot's pose ``(x, y, theta)`` is the midpoint of the wheel axle on the floor and its
heading, in the arena (world) frame; mount poses in the description are relative to that point.

Motor model (per wheel), applied through PyBullet's ``VELOCITY_CONTROL`` with the stall torque as
the force limit::

    duty d (|d| <= 1)  ->  target speed  w* = sign(d) * gain * (|d| - deadband) / (1 - deadband)
                                          (0 inside the deadband; gain = max_wheel_speed)
    wheel speed follows w* with a first-order lag (time_constant)

The lag is integrated exactly: every physics call gets the *average* of the exponential response
over its interval, so the commanded wheel rotation does not depend on the step size.

Sensors: wheel encoders (ticks from the joint angle → :class:`hardware.odometry.DiffDriveOdometry`,
the same class the Pi uses), an HC-SR04 (a fan of rays inside its cone; "no echo" reads
``max_distance`` with ``range_valid = 0``), the camera (``ER_TINY_RENDERER`` from the mount pose)
and, when the scene holds a tagged object, a fiducial detector ``marker = [seen, x, y]`` in the
robot frame (inside the camera's field of view and ``MARKER_RANGE``, with noise).
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from hardware.description import RobotDescription
from hardware.errors import DeviceError, Sim2PiError
from hardware.odometry import DiffDriveOdometry, ticks_to_radians
from hardware.robot import Robot, robot_observation_features, sanitize_action
from hardware.spec import Feature
from hardware.tasks import ARENA_HALF
from sim.randomization import DynamicsRandomization, DynamicsSample

log = logging.getLogger(__name__)

MARKER_RANGE = 1.5  # m: farthest distance at which the fiducial detector reports the tag
WALL_HEIGHT = 0.15  # m
WALL_THICKNESS = 0.05  # m
FLOOR_THICKNESS = 0.1  # m
WHEEL_MASS = 0.03  # kg each
# Rotational inertia of a wheel about any axis (kg*m^2): mostly the motor rotor reflected through
# the gearbox (a 1:48 TT gear motor's ~1e-7 kg*m^2 rotor gives ~2e-4). It also keeps the
# wheel/chassis mass ratio sane, so the solver converges in few iterations.
WHEEL_INERTIA = 2e-4
CASTER_MASS = 0.01  # kg
WHEEL_FRICTION = 1.0  # rubber on the floor (Bullet multiplies the two bodies' coefficients)
FLOOR_RGBA = (0.55, 0.55, 0.52, 1.0)
FLOOR_RGB = (140, 140, 137)  # FLOOR_RGBA as the tiny renderer shades a level floor
ULTRASONIC_RAYS = 7  # rays across the cone (horizontal fan)
# Default physics: 1/60 s steps (3 per 20 Hz control tick), motor targets refreshed every step,
# 10 solver iterations. `sim.accuracy.check_accuracy` holds these within 2 cm / 2 deg of a
# 1/480 s, 100-iteration reference on drive and push sequences (box sink < 2 mm).
DEFAULT_PHYSICS_DT = 1.0 / 60.0
DEFAULT_SUBSTEPS = 1
DEFAULT_SOLVER_ITERATIONS = 10


@dataclass(frozen=True)
class SceneObject:
    """An object placed in the arena.

    ``size``: box half extents ``(hx, hy, hz)``, or cylinder ``(radius, height)``. ``mass = 0``
    makes it static. ``tagged`` puts a fiducial on it (seen through the ``marker`` feature).
    """

    name: str
    shape: str  # "box" | "cylinder"
    size: tuple[float, ...]
    position: tuple[float, float]
    yaw: float = 0.0
    mass: float = 0.0
    color: tuple[float, float, float, float] = (0.6, 0.6, 0.6, 1.0)
    friction: float = 0.5
    tagged: bool = False

    @property
    def height(self) -> float:
        return 2 * self.size[2] if self.shape == "box" else self.size[1]

    @property
    def radius(self) -> float:
        """Footprint radius (box: half the side; cylinder: its radius), m."""
        return float(self.size[0])


def _quiet_client(mode: int) -> Any:
    """A ``BulletClient`` connected without an options string: ``BulletClient`` passes
    ``options=''``, and pybullet then prints ``argv[0]=`` on stdout for every env it builds."""
    import pybullet
    from pybullet_utils import bullet_client

    client = bullet_client.BulletClient.__new__(bullet_client.BulletClient)
    client._shapes = {}
    client._pid = os.getpid()
    client._client = pybullet.connect(mode)
    if client._client < 0:
        raise RuntimeError("pybullet.connect failed")
    return client


def _yaw_of(quat: Any) -> float:
    x, y, z, w = quat
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def _quat_yaw(yaw: float) -> tuple[float, float, float, float]:
    return (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))


class SimRobot(Robot):
    """The PyBullet twin of ``desc`` (see the module docstring).

    Args:
        desc: the robot description the twin is built from.
        randomization: dynamics/sensor ranges sampled at every :meth:`reset_scene` when enabled.
        seed: seeds sensor noise and randomization (also settable per :meth:`reset_scene`).
        camera: render camera frames (``image`` / ``image_age``) when the description has a camera;
            ``False`` behaves like a robot without one (much faster). The marker detector only
            needs the camera's geometry and works either way.
        ultrasonic: simulate the HC-SR04 when the description has one; ``False`` behaves like a
            robot without it (drops ``range*`` from the observation; faster).
        gui: open the PyBullet GUI instead of DIRECT mode.
        physics_dt: the physics solver step, s.
        substeps: solver steps per physics call; motor targets are refreshed between calls.
        solver_iterations: constraint solver iterations per step.
    """

    def __init__(
        self,
        desc: RobotDescription,
        *,
        randomization: DynamicsRandomization | None = None,
        seed: int | None = None,
        camera: bool = True,
        ultrasonic: bool = True,
        gui: bool = False,
        physics_dt: float = DEFAULT_PHYSICS_DT,
        substeps: int = DEFAULT_SUBSTEPS,
        solver_iterations: int = DEFAULT_SOLVER_ITERATIONS,
    ) -> None:
        self.description = desc
        self.randomization = randomization or DynamicsRandomization()
        self.camera_enabled = bool(camera and desc.camera.enabled)
        self.ultrasonic_enabled = bool(ultrasonic and desc.ultrasonic.enabled)
        self.gui = gui
        self.control_dt = 1.0 / desc.control.rate
        if physics_dt <= 0 or substeps < 1:
            raise Sim2PiError(
                f"physics_dt must be > 0 and substeps >= 1 (got {physics_dt}, {substeps})"
            )
        calls = self.control_dt / (physics_dt * substeps)
        self.calls_per_tick = max(1, round(calls))
        if abs(calls - self.calls_per_tick) > 1e-6:
            log.warning(
                "control period %.4f s is not a multiple of physics_dt*substeps (%.5f s); "
                "using %d physics calls per tick",
                self.control_dt,
                physics_dt * substeps,
                self.calls_per_tick,
            )
        self.substeps = int(substeps)
        self.physics_dt = self.control_dt / (self.calls_per_tick * self.substeps)
        self.solver_iterations = int(solver_iterations)
        self._rng = np.random.default_rng(seed)
        self._client: Any = None
        self._p: Any = None
        self._objects: list[SceneObject] = []
        self._object_ids: dict[str, int] = {}
        self._tagged: str | None = None
        self._start_pose = (0.0, 0.0, 0.0)
        self.dyn = DynamicsSample.nominal(desc)
        self._setup_geometry()

    # ------------------------------------------------------------------ construction
    def _setup_geometry(self) -> None:
        g = self.description.geometry
        self._r = g.wheel_radius
        self._z_bottom = max(2.0 * g.caster_radius, 0.5 * g.wheel_radius)
        self._zc = self._z_bottom + 0.5 * g.body_height  # chassis centre height
        # base (chassis centre) relative to the axle midpoint on the floor
        self._base_off = np.array([-g.axle_offset, 0.0, self._zc])
        self._caster_x = -g.axle_offset - 0.5 * g.body_length + g.caster_radius + 0.005

    @property
    def client(self) -> Any:
        """The ``BulletClient`` (``None`` when not connected)."""
        return self._client

    @property
    def observation_features(self) -> dict[str, Feature]:
        feats = robot_observation_features(self.description, marker=self._tagged is not None)
        if not self.camera_enabled:
            feats.pop("image", None)
            feats.pop("image_age", None)
        if not self.ultrasonic_enabled:
            for k in ("range", "range_valid", "range_age"):
                feats.pop(k, None)
        return feats

    @property
    def is_connected(self) -> bool:
        return self._client is not None

    def connect(self) -> None:
        """Open a PyBullet client and build the scene at the origin (no objects)."""
        if self._client is not None:
            return
        import pybullet

        self._p = pybullet
        mode = pybullet.GUI if self.gui else pybullet.DIRECT
        try:
            self._client = _quiet_client(mode)
        except Exception as e:  # pragma: no cover - depends on the display
            raise DeviceError(
                f"cannot open PyBullet ({e}); use gui=False on a headless machine"
            ) from None
        # The hot paths call pybullet directly with this id (BulletClient builds a
        # functools.partial on every attribute access).
        self._cid = self._client._client
        self.reset_scene((0.0, 0.0, 0.0), [])

    def disconnect(self) -> None:
        """Stop and close the PyBullet client (idempotent)."""
        if self._client is None:
            return
        try:
            self.stop()
            self._client.disconnect()
        except Exception:  # the server may already be gone (GUI closed)
            pass
        self._client = None

    def __del__(self) -> None:
        try:
            self.disconnect()
        except Exception:
            pass

    def seed(self, seed: int | None) -> None:
        """Reseed sensor noise and randomization."""
        self._rng = np.random.default_rng(seed)

    def reset_scene(
        self,
        pose: tuple[float, float, float],
        objects: list[SceneObject],
        *,
        seed: int | None = None,
    ) -> None:
        """Rebuild the world: robot at ``pose`` (axle midpoint x, y, heading) and ``objects``.

        The simulation is rebuilt from scratch so a reset never depends on the previous episode
        (same seed → same rollout). Odometry is initialised to the true start pose.
        """
        if self._client is None:
            self.connect()
            if not objects and tuple(pose) == (0.0, 0.0, 0.0) and seed is None:
                return
        if seed is not None:
            self.seed(seed)
        self.dyn = self.randomization.sample(self._rng, DynamicsSample.nominal(self.description))
        c, p = self._client, self._p
        c.resetSimulation()
        if self.gui:
            c.configureDebugVisualizer(p.COV_ENABLE_RENDERING, 0)
        c.setGravity(0, 0, -9.81)
        c.setPhysicsEngineParameter(
            fixedTimeStep=self.physics_dt * self.substeps,
            numSubSteps=self.substeps,
            numSolverIterations=self.solver_iterations,
            deterministicOverlappingPairs=1,
        )
        names = [o.name for o in objects]
        if len(set(names)) != len(names):
            raise Sim2PiError(f"scene object names must be unique, got {names}")
        tagged = [o.name for o in objects if o.tagged]
        if len(tagged) > 1:
            raise Sim2PiError(f"at most one tagged object is supported, got {tagged}")
        self._tagged = tagged[0] if tagged else None
        self._objects = list(objects)
        self._build_arena()
        self._build_robot(pose)
        self._object_ids = {o.name: self._build_object(o) for o in objects}
        if self.gui:
            c.configureDebugVisualizer(p.COV_ENABLE_RENDERING, 1)
        self._reset_state(pose)

    def _build_arena(self) -> None:
        c, p = self._client, self._p
        h = ARENA_HALF
        t = WALL_THICKNESS
        half_floor = h + 0.5
        boxes: list[tuple[tuple[float, float, float], tuple[float, float, float]]] = [
            ((half_floor, half_floor, FLOOR_THICKNESS / 2), (0.0, 0.0, -FLOOR_THICKNESS / 2))
        ]
        for sx, sy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            ext = (t / 2, h + t, WALL_HEIGHT / 2) if sx else (h + t, t / 2, WALL_HEIGHT / 2)
            pos = (sx * (h + t / 2), sy * (h + t / 2), WALL_HEIGHT / 2)
            boxes.append((ext, pos))
        col = c.createCollisionShapeArray(
            [p.GEOM_BOX] * 5,
            halfExtents=[b[0] for b in boxes],
            collisionFramePositions=[b[1] for b in boxes],
        )
        # The floor is painted by `render_view` (the tiny renderer's cost grows with the pixels
        # each object covers, and the floor covers most of them); the GUI draws it itself.
        shown = boxes if self.gui else boxes[1:]
        colors = [[*FLOOR_RGBA]] * (len(shown) - 4) + [[0.9, 0.9, 0.88, 1]] * 4
        vis = c.createVisualShapeArray(
            [p.GEOM_BOX] * len(shown),
            halfExtents=[b[0] for b in shown],
            visualFramePositions=[b[1] for b in shown],
            rgbaColors=colors,
        )
        self._arena = c.createMultiBody(0, col, vis, (0, 0, 0))
        c.changeDynamics(self._arena, -1, lateralFriction=self.dyn.floor_friction, restitution=0.0)

    def _build_robot(self, pose: tuple[float, float, float]) -> None:
        c, p = self._client, self._p
        g = self.description.geometry
        d = self.dyn
        r = g.wheel_radius
        body_mass = max(g.mass - 2 * WHEEL_MASS - CASTER_MASS, 0.2 * g.mass) * d.mass_scale
        half = (g.body_length / 2, g.body_width / 2, g.body_height / 2)
        chassis_col = c.createCollisionShape(p.GEOM_BOX, halfExtents=half)
        chassis_vis = c.createVisualShape(
            p.GEOM_BOX, halfExtents=half, rgbaColor=(0.25, 0.25, 0.27, 1)
        )
        # Wheels collide as spheres (a clean single contact point, stable at coarse steps) and
        # look like cylinders. Rolling kinematics are the same for a given radius.
        wheel_col = c.createCollisionShape(p.GEOM_SPHERE, radius=r)
        wheel_vis = c.createVisualShape(
            p.GEOM_CYLINDER,
            radius=r,
            length=g.wheel_width,
            rgbaColor=(0.1, 0.1, 0.1, 1),
            visualFrameOrientation=(math.sin(math.pi / 4), 0, 0, math.cos(math.pi / 4)),
        )
        caster_col = c.createCollisionShape(p.GEOM_SPHERE, radius=g.caster_radius)
        caster_vis = c.createVisualShape(
            p.GEOM_SPHERE, radius=g.caster_radius, rgbaColor=(0.7, 0.7, 0.7, 1)
        )
        ax = g.axle_offset
        z_w = r - self._zc
        link_pos = [
            (ax, g.track_width / 2, z_w),
            (ax, -g.track_width / 2, z_w),
            (self._caster_x + ax, 0.0, g.caster_radius - self._zc),
        ]
        x, y, th = pose
        base = self._base_world(x, y, th)
        self._body = c.createMultiBody(
            baseMass=body_mass,
            baseCollisionShapeIndex=chassis_col,
            baseVisualShapeIndex=chassis_vis,
            basePosition=base,
            baseOrientation=_quat_yaw(th),
            linkMasses=[WHEEL_MASS, WHEEL_MASS, CASTER_MASS],
            linkCollisionShapeIndices=[wheel_col, wheel_col, caster_col],
            linkVisualShapeIndices=[wheel_vis, wheel_vis, caster_vis],
            linkPositions=link_pos,
            linkOrientations=[(0, 0, 0, 1)] * 3,
            linkInertialFramePositions=[(0, 0, 0)] * 3,
            linkInertialFrameOrientations=[(0, 0, 0, 1)] * 3,
            linkParentIndices=[0, 0, 0],
            linkJointTypes=[p.JOINT_REVOLUTE, p.JOINT_REVOLUTE, p.JOINT_FIXED],
            linkJointAxis=[(0, 1, 0), (0, 1, 0), (0, 0, 1)],
        )
        for j in (0, 1):
            c.changeDynamics(
                self._body,
                j,
                lateralFriction=WHEEL_FRICTION * d.wheel_friction,
                rollingFriction=0.0,
                spinningFriction=0.0,
                restitution=0.0,
                localInertiaDiagonal=(WHEEL_INERTIA,) * 3,
            )
        c.changeDynamics(
            self._body,
            2,
            lateralFriction=0.0,
            rollingFriction=0.0,
            spinningFriction=0.0,
            restitution=0.0,
        )
        c.changeDynamics(self._body, -1, lateralFriction=0.3, linearDamping=0.0, angularDamping=0.0)
        # Release PyBullet's default joint motors; ours are set every physics call.
        c.setJointMotorControlArray(
            self._body, [0, 1], p.VELOCITY_CONTROL, targetVelocities=[0, 0], forces=[0, 0]
        )

    def _base_world(self, x: float, y: float, th: float) -> tuple[float, float, float]:
        ox, _, oz = self._base_off
        return (x + math.cos(th) * ox, y + math.sin(th) * ox, oz + 1e-4)

    def _build_object(self, o: SceneObject) -> int:
        c, p = self._client, self._p
        if o.shape == "box":
            col = c.createCollisionShape(p.GEOM_BOX, halfExtents=o.size)
            vis = c.createVisualShape(p.GEOM_BOX, halfExtents=o.size, rgbaColor=o.color)
        elif o.shape == "cylinder":
            col = c.createCollisionShape(p.GEOM_CYLINDER, radius=o.size[0], height=o.size[1])
            vis = c.createVisualShape(
                p.GEOM_CYLINDER, radius=o.size[0], length=o.size[1], rgbaColor=o.color
            )
        else:
            raise Sim2PiError(
                f"object '{o.name}': shape must be 'box' or 'cylinder', got {o.shape!r}"
            )
        mass = o.mass * self.dyn.object_mass_scale
        uid = c.createMultiBody(
            mass, col, vis, (o.position[0], o.position[1], o.height / 2), _quat_yaw(o.yaw)
        )
        c.changeDynamics(
            uid,
            -1,
            lateralFriction=o.friction,
            restitution=0.0,
            rollingFriction=0.0,
            spinningFriction=0.0,
        )
        return int(uid)

    def _reset_state(self, pose: tuple[float, float, float]) -> None:
        desc = self.description
        self._start_pose = tuple(float(v) for v in pose)  # type: ignore[assignment]
        self.time = 0.0
        self.ticks_elapsed = 0
        self._w = (0.0, 0.0)  # motor model wheel speed (rad/s)
        self._model_angle = (0.0, 0.0)  # integrated model rotation (no-encoder odometry)
        self._queue: deque[np.ndarray] = deque(
            [np.zeros(2)] * (self.dyn.latency_ticks + 1), maxlen=self.dyn.latency_ticks + 1
        )
        self._applied = np.zeros(2)
        self.odometry = DiffDriveOdometry(desc.geometry.wheel_radius, desc.geometry.track_width)
        self.odometry.reset(self._start_pose)
        self._wheel_angle = (0.0, 0.0)
        self._ticks = (0, 0)
        self._wheel_speed = (0.0, 0.0)
        self._range = (float(desc.ultrasonic.max_distance), 0.0)
        self._range_time = -1.0
        self._frame: np.ndarray | None = None
        self._frame_time = -1.0
        self._marker = np.zeros(3, np.float32)
        self._marker_time = -1.0
        if self.ultrasonic_enabled:
            self._measure_range()

    # ------------------------------------------------------------------ the Robot contract
    def reset_odometry(self, pose: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
        self.odometry.reset(pose)

    def stop(self) -> None:
        """Zero the commanded duty (the wheels coast down through the motor lag)."""
        if self._client is None:
            return
        self._queue.extend([np.zeros(2)] * len(self._queue))
        self._applied = np.zeros(2)

    def send_action(self, action: Any) -> np.ndarray:
        """Sanitize ``(left, right)`` duty, drive the motors and advance one control period.

        Returns the applied (sanitized) action; non-finite input stops the motors and returns
        ``(0, 0)``.
        """
        if self._client is None:
            raise DeviceError("the twin is not connected; call connect() or use `with robot:`")
        a, ok = sanitize_action(action, self.description.safety.max_duty)
        if not ok:
            log.warning("non-finite action %r: stopping the motors", action)
            self.stop()
        self._queue.append(a)
        self._applied = a
        self._advance(self._queue[0])
        return a.copy()

    def _target_speed(self, duty: np.ndarray) -> tuple[float, float]:
        d = self.dyn
        out = []
        for u, db, wmax in zip(duty.tolist(), d.deadband, d.max_wheel_speed, strict=True):
            mag = (abs(u) - db) / (1.0 - db)
            out.append(math.copysign(mag * wmax, u) if mag > 0 else 0.0)
        return out[0], out[1]

    def _advance(self, duty: np.ndarray) -> None:
        tl, tr = self._target_speed(duty)
        h = self.physics_dt * self.substeps
        tau = self.dyn.time_constant
        if tau > 1e-6:
            k = math.exp(-h / tau)
            avg_k = tau / h * (1.0 - k)  # mean of exp(-t/tau) over [0, h]
        else:
            k = avg_k = 0.0
        force = self.description.motors.stall_torque
        forces = (force, force)
        body, joints, mode = self._body, (0, 1), self._p.VELOCITY_CONTROL
        set_motors, step, cid = self._p.setJointMotorControlArray, self._p.stepSimulation, self._cid
        wl, wr = self._w
        al, ar = self._model_angle
        for _ in range(self.calls_per_tick):
            vl = tl + (wl - tl) * avg_k
            vr = tr + (wr - tr) * avg_k
            wl = tl + (wl - tl) * k
            wr = tr + (wr - tr) * k
            set_motors(
                body, joints, mode, targetVelocities=(vl, vr), forces=forces, physicsClientId=cid
            )
            step(physicsClientId=cid)
            al += vl * h
            ar += vr * h
        self._w = (wl, wr)
        self._model_angle = (al, ar)
        self.time += self.control_dt
        self.ticks_elapsed += 1
        self._update_encoders()
        if self.ultrasonic_enabled and (
            self.time - self._range_time >= 1.0 / self.description.ultrasonic.rate - 1e-9
        ):
            self._measure_range()

    def _update_encoders(self) -> None:
        desc = self.description
        if desc.encoders.enabled:
            (al, *_), (ar, *_) = self._p.getJointStates(
                self._body, (0, 1), physicsClientId=self._cid
            )
            tpr = desc.encoders.ticks_per_rev
            scale = tpr / (2 * math.pi)
            nl, nr = math.floor(al * scale), math.floor(ar * scale)
            dl = ticks_to_radians(nl - self._ticks[0], tpr)
            dr = ticks_to_radians(nr - self._ticks[1], tpr)
            self._ticks = (nl, nr)
            self.odometry.update(dl, dr)
            self._wheel_speed = (dl / self.control_dt, dr / self.control_dt)
        else:
            dl = self._model_angle[0] - self._wheel_angle[0]
            dr = self._model_angle[1] - self._wheel_angle[1]
            self._wheel_angle = self._model_angle
            self.odometry.update(dl, dr)
            self._wheel_speed = self._w

    def get_observation(self) -> dict[str, np.ndarray]:
        """The raw observation (see :mod:`hardware.robot`); rendering happens lazily here."""
        if self._client is None:
            raise DeviceError("the twin is not connected; call connect() or use `with robot:`")
        desc = self.description
        obs: dict[str, np.ndarray] = {
            "pose": self.odometry.pose,
            "wheel_speed": np.array(self._wheel_speed, np.float32),
        }
        if self.ultrasonic_enabled:
            obs["range"] = np.array([self._range[0]], np.float32)
            obs["range_valid"] = np.array([self._range[1]], np.float32)
            obs["range_age"] = np.array([max(self.time - self._range_time, 0.0)], np.float32)
        if self.camera_enabled:
            if self._frame_time != self.time or self._frame is None:
                self._frame = self.render_camera()
                self._frame_time = self.time
            fps = desc.camera.fps
            obs["image"] = self._frame
            obs["image_age"] = np.array(
                [self.time - math.floor(self.time * fps + 1e-9) / fps], np.float32
            )
        if self._tagged is not None:
            if self._marker_time != self.time:
                self._marker = self._detect_marker()
                self._marker_time = self.time
            obs["marker"] = self._marker.copy()
        return obs

    # ------------------------------------------------------------------ ground truth
    def true_pose(self) -> np.ndarray:
        """True (x, y, theta) of the axle midpoint in the arena frame."""
        pos, quat = self._p.getBasePositionAndOrientation(self._body, physicsClientId=self._cid)
        x, y, z, w = quat
        ox, _, oz = self._base_off
        # axle = base position - R(quat) @ (ox, 0, oz); first two rows of R
        ax = pos[0] - ((1 - 2 * (y * y + z * z)) * ox + 2 * (x * z + y * w) * oz)
        ay = pos[1] - (2 * (x * y + z * w) * ox + 2 * (y * z - x * w) * oz)
        return np.array([ax, ay, _yaw_of(quat)])

    def true_base_z(self) -> float:
        return float(self._client.getBasePositionAndOrientation(self._body)[0][2])

    def object_pose(self, name: str) -> np.ndarray:
        """True (x, y, z, yaw) of a scene object."""
        pos, quat = self._p.getBasePositionAndOrientation(
            self._object_ids[name], physicsClientId=self._cid
        )
        return np.array([pos[0], pos[1], pos[2], _yaw_of(quat)])

    @property
    def objects(self) -> list[SceneObject]:
        return list(self._objects)

    def ground_truth(self) -> dict[str, Any]:
        """True robot pose, object poses and the sampled dynamics (for ``info``)."""
        return {
            "true_pose": self.true_pose(),
            "objects": {o.name: self.object_pose(o.name) for o in self._objects},
            "time": self.time,
        }

    # ------------------------------------------------------------------ sensors
    def _mount_world(
        self, mount: Any, pose: np.ndarray, jitter: bool = False
    ) -> tuple[np.ndarray, float, float]:
        x, y, th = pose
        mx, my, mz = mount.x, mount.y, mount.z
        yaw, pitch = math.radians(mount.yaw), math.radians(mount.pitch)
        if jitter:
            ox, oy, oz = self.dyn.camera_offset
            mx, my, mz = mx + ox, my + oy, mz + oz
            yaw += math.radians(self.dyn.camera_angle_offset[0])
            pitch += math.radians(self.dyn.camera_angle_offset[1])
        c, s = math.cos(th), math.sin(th)
        pos = np.array([x + c * mx - s * my, y + s * mx + c * my, mz])
        return pos, th + yaw, pitch

    def _measure_range(self) -> None:
        us = self.description.ultrasonic
        pose = self.true_pose()
        origin, yaw, pitch = self._mount_world(us.mount, pose)
        half = math.radians(us.cone_angle) / 2
        angles = np.linspace(-half, half, ULTRASONIC_RAYS)
        cp, sp = math.cos(pitch), math.sin(pitch)
        dirs = np.stack(
            [np.cos(yaw + angles) * cp, np.sin(yaw + angles) * cp, np.full_like(angles, -sp)],
            axis=1,
        )
        starts = np.repeat(origin[None], ULTRASONIC_RAYS, axis=0)
        ends = starts + dirs * us.max_distance
        hits = self._client.rayTestBatch(starts.tolist(), ends.tolist())
        best = math.inf
        for uid, _link, frac, *_ in hits:
            if uid >= 0 and uid != self._body and frac < best:
                best = frac
        self._range_time = self.time
        d = self.dyn
        if math.isfinite(best) and self._rng.random() >= d.range_dropout:
            dist = best * us.max_distance + self._rng.normal(0.0, d.range_noise_std)
            dist = float(np.clip(dist, us.min_distance, us.max_distance))
            if dist < us.max_distance:
                self._range = (dist, 1.0)
                return
        self._range = (float(us.max_distance), 0.0)

    def _camera_frame(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        cam = self.description.camera
        pos, yaw, pitch = self._mount_world(cam.mount, self.true_pose(), jitter=True)
        cp, sp, cy, sy = math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
        fwd = np.array([cy * cp, sy * cp, -sp])
        left = np.array([-sy, cy, 0.0])
        up = np.array([cy * sp, sy * sp, cp])
        return pos, fwd, left, up

    def render_camera(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """An RGB uint8 frame from the camera mount (description's FOV and resolution)."""
        cam = self.description.camera
        pos, fwd, _left, up = self._camera_frame()
        return render_view(
            self, pos, fwd, up, cam.fov, width or cam.width, height or cam.height, cam.near, cam.far
        )

    def marker_visible(self, point: np.ndarray) -> bool:
        """Whether a world point is inside the camera's field of view and ``MARKER_RANGE``."""
        cam = self.description.camera
        pos, fwd, left, up = self._camera_frame()
        v = np.asarray(point, dtype=np.float64) - pos
        f = float(v @ fwd)
        if f <= cam.near or math.hypot(v[0], v[1]) > MARKER_RANGE:
            return False
        hfov = math.radians(cam.fov)
        vfov = 2 * math.atan(math.tan(hfov / 2) * cam.height / cam.width)
        return (
            abs(math.atan2(float(v @ left), f)) <= hfov / 2
            and abs(math.atan2(float(v @ up), f)) <= vfov / 2
        )

    def _detect_marker(self) -> np.ndarray:
        assert self._tagged is not None
        obj = self.object_pose(self._tagged)
        if not self.description.camera.enabled or not self.marker_visible(obj[:3]):
            return np.zeros(3, np.float32)
        d = self.dyn
        if self._rng.random() < d.marker_dropout:
            return np.zeros(3, np.float32)
        x, y, th = self.true_pose()
        dx, dy = obj[0] - x, obj[1] - y
        c, s = math.cos(th), math.sin(th)
        rel = np.array([c * dx + s * dy, -s * dx + c * dy])
        rel += self._rng.normal(0.0, d.marker_noise_std * (1.0 + math.hypot(dx, dy)), 2)
        return np.array([1.0, rel[0], rel[1]], np.float32)


def render_view(
    robot: SimRobot,
    pos: np.ndarray,
    fwd: np.ndarray,
    up: np.ndarray,
    hfov: float,
    width: int,
    height: int,
    near: float,
    far: float,
) -> np.ndarray:
    """Render with ``ER_TINY_RENDERER`` from ``pos`` looking along ``fwd`` (no roll), and paint
    the floor: every pixel the renderer left empty whose ray points below the horizon sees the
    floor (the arena is closed by walls), the others see the sky."""
    p, cid = robot._p, robot._cid
    aspect = width / height
    vfov = 2 * math.atan(math.tan(math.radians(hfov) / 2) / aspect)
    view = p.computeViewMatrix(pos.tolist(), (pos + fwd).tolist(), up.tolist(), physicsClientId=cid)
    proj = p.computeProjectionMatrixFOV(math.degrees(vfov), aspect, near, far, physicsClientId=cid)
    _, _, rgba, depth, _ = p.getCameraImage(
        width,
        height,
        view,
        proj,
        shadow=0,
        renderer=p.ER_TINY_RENDERER,
        flags=p.ER_NO_SEGMENTATION_MASK,
        physicsClientId=cid,
    )
    rgb = np.array(np.reshape(rgba, (height, width, 4))[:, :, :3], dtype=np.uint8)
    empty = np.reshape(depth, (height, width)) > 1.0 - 1e-6  # cleared depth (far plane)
    # ray z-component per row (row 0 = top of the image)
    y_ndc = 1.0 - (np.arange(height) + 0.5) * (2.0 / height)
    below = (fwd[2] + y_ndc * math.tan(vfov / 2) * up[2]) < 0.0
    rgb[empty & below[:, None]] = FLOOR_RGB
    return rgb


__all__ = ["MARKER_RANGE", "SceneObject", "SimRobot", "render_view"]
