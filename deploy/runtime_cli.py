"""``sim2pi deploy check|run``: check a bundle against a robot, and run it (on a Pi, mock pins or
the twin) through the one control loop.

Heavy packages (onnxruntime, gpiozero, pybullet) are imported inside the command bodies, so
``sim2pi --help`` works on a ``pi`` install without torch or pybullet.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import typer

from deploy.fileio import atomic_write_json
from hardware.description import RobotDescription
from hardware.errors import DeviceError, Sim2PiError
from hardware.robot import Robot
from hardware.spec import Feature
from hardware.tasks import task_info

log = logging.getLogger(__name__)


class Backend(str, Enum):
    """Where the robot is."""

    pi = "pi"
    mock = "mock"
    twin = "twin"


class Mode(str, Enum):
    """Who drives."""

    policy = "policy"
    shared = "shared"


BUNDLE_ARG = typer.Argument(..., help="Policy bundle folder (policy.onnx + bundle.json).")
ROBOT_OPT = typer.Option(
    "rover", "--robot", "-r", help="Robot description: a YAML path or a shipped name."
)
BACKEND_OPT = typer.Option(
    Backend.pi,
    "--backend",
    "-b",
    help="pi: real GPIO (lgpio pin factory); mock: gpiozero mock pins with a "
    "simulated world; twin: the PyBullet twin.",
)
GOAL_OPT = typer.Option(
    None,
    "--goal",
    help="Goal (x, y) in metres for goal tasks on pi/mock, "
    "relative to the robot at the start of each episode (x ahead, y to the "
    "left); the twin draws its own goals.",
)
TASK_ID_OPT = typer.Option(
    None, "--task-id", help="Task id for multi-task policies (seek: 0 red, 1 green, 2 blue)."
)


# ---------------------------------------------------------------------------------- helpers


def _load(bundle_dir: Path, robot: str) -> tuple[Any, RobotDescription]:
    from deploy.bundle import Bundle
    from hardware.description import load_description

    desc = load_description(robot)
    bundle = Bundle.load(bundle_dir)
    bundle.check_robot(desc)  # refuses another robot / task spec before any device is opened
    return bundle, desc


def _make_robot(
    backend: Backend,
    desc: RobotDescription,
    task: str,
    *,
    seed: int | None,
    twin_dynamics: Path | None,
) -> tuple[Robot, Any, Any]:
    """The robot for ``backend``, the twin's TwinBackend (else None), and the pin factory the
    caller must close (``pi`` only, else None)."""
    if twin_dynamics is not None and backend is not Backend.twin:
        raise Sim2PiError("--twin-dynamics only applies to --backend twin")
    if backend is Backend.pi:
        from hardware.pi import PiRobot
        from hardware.pins import make_pin_factory

        factory = make_pin_factory("pi")  # lgpio, explicitly; raises DeviceError, never falls back
        log.info("backend pi: gpiozero pin factory %s", type(factory).__name__)
        return PiRobot(desc, pin_factory=factory), None, factory
    if backend is Backend.mock:
        from hardware.mock import make_mock_robot

        return make_mock_robot(desc), None, None
    from sim.backend import TwinBackend
    from sim.randomization import DynamicsRandomization

    rand = DynamicsRandomization.from_yaml(twin_dynamics) if twin_dynamics is not None else None
    twin = TwinBackend(task, desc, randomization=rand, seed=seed)
    return twin.robot, twin, None


def _close_factory(factory: Any) -> None:
    """Close a pin factory the CLI made for a PiRobot (the robot does not own it)."""
    if factory is not None:
        try:
            factory.close()
        except Exception as e:
            log.warning("closing the pin factory failed: %s", e)


def _episode_args(
    bundle: Any,
    rob: Robot,
    twin: Any,
    goal: list[float] | None,
    task_id: int | None,
    max_steps: int | None,
    seed: int | None,
) -> Callable[[int], dict[str, Any]]:
    """Per-episode keyword arguments of ``ControlLoop.run_episode``. On the twin, a new scene per
    episode; on a robot, the odometry frame restarts at the robot's pose (goals are relative to
    where each episode starts)."""
    from hardware.tasks import task_info

    info = task_info(bundle.task)
    if twin is None:
        if info.goal_conditioned and goal is None:
            raise Sim2PiError(
                f"task '{info.name}' needs a goal: pass --goal X Y (metres, "
                "odometry frame: the robot starts at (0, 0) facing +x)"
            )
        if info.n_task_ids and task_id is None:
            raise Sim2PiError(f"task '{info.name}' needs --task-id in [0, {info.n_task_ids})")

    def args(i: int) -> dict[str, Any]:
        if twin is not None:
            ep = twin.new_episode(None if seed is None else seed + i)
            if max_steps is not None:
                ep["max_steps"] = max_steps
            return ep
        try:
            rob.reset_odometry()
        except NotImplementedError:
            log.warning("this robot cannot reset its odometry; goals stay in the first frame")
        return {"goal": goal, "task_id": task_id, "max_steps": max_steps}

    return args


def _motor_duty(robot: Robot) -> list[float] | None:
    """Duty on the motor pins (mock) or the applied action, for the shutdown report."""
    pins = getattr(robot, "motor_pins", None)
    if pins is not None:
        try:
            return [float(p.state) for side in pins.values() for p in side.values()]
        except Exception:
            return None
    applied = getattr(robot, "applied_action", None)
    return None if applied is None else [float(v) for v in np.asarray(applied).reshape(-1)]


def _write_json(path: Path | None, data: dict[str, Any]) -> None:
    """Write the run report atomically (readers never see half a file)."""
    if path is not None:
        atomic_write_json(path, data, default=str)


class _NoMotion(Robot):
    """Wraps a robot for ``deploy check``: sensors are real, every action is sent as (0, 0)."""

    def __init__(self, robot: Robot) -> None:
        self.inner = robot
        self.description = robot.description

    @property
    def observation_features(self) -> dict[str, Feature]:
        return self.inner.observation_features

    @property
    def is_connected(self) -> bool:
        return self.inner.is_connected

    def connect(self) -> None:
        self.inner.connect()

    def get_observation(self) -> dict[str, np.ndarray]:
        return self.inner.get_observation()

    def send_action(self, action: Any) -> np.ndarray:
        return self.inner.send_action(np.zeros(2))

    def stop(self) -> None:
        self.inner.stop()

    def disconnect(self) -> None:
        self.inner.disconnect()

    @property
    def estop_pressed(self) -> bool:
        return bool(getattr(self.inner, "estop_pressed", False))


# ---------------------------------------------------------------------------------- commands


def check(
    bundle_dir: Path = BUNDLE_ARG,
    robot: str = ROBOT_OPT,
    backend: Backend = BACKEND_OPT,
    ticks: int = typer.Option(200, "--ticks", help="Ticks of the timing run (motors held at 0)."),
    samples: int = typer.Option(10, "--samples", help="Sensor readings checked for freshness."),
    goal: tuple[float, float] = typer.Option(
        (0.3, 0.0),
        "--goal",
        help="Goal (x, y) fed to goal policies during the timing run (the motors do not move).",
    ),
    task_id: int = typer.Option(0, "--task-id", help="Task id fed to multi-task policies."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the report as JSON."),
) -> None:
    """Check a bundle against a robot before running it: the bundle matches the robot description
    and task spec (a mismatch is refused naming the feature), the pin factory is the intended one,
    sensors answer within their timeouts, camera frames are fresh, and a timing run (motors held
    at zero) reports p50/p99 per loop section."""
    from deploy.loop import ControlLoop
    from deploy.policy import OnnxPolicy, PolicySource
    from hardware.tasks import Observer

    bundle, desc = _load(bundle_dir, robot)
    typer.echo(
        f"bundle {bundle.path}: task {bundle.task}, history {bundle.history}, "
        f"{bundle.control_rate:g} Hz, made for '{bundle.robot}' ({bundle.robot_hash}): "
        "matches the robot description"
    )
    problems: list[str] = []
    report: dict[str, Any] = {
        "bundle": str(bundle.path),
        "robot": desc.name,
        "robot_hash": desc.hash,
        "backend": backend.value,
    }
    rob, twin, factory = _make_robot(backend, desc, bundle.task, seed=0, twin_dynamics=None)
    try:
        rob.connect()
        pf = getattr(rob, "pin_factory", None)
        fname = type(pf).__name__ if pf is not None else "none (twin)"
        report["pin_factory"] = fname
        typer.echo(f"pin factory: {fname}")
        if backend is Backend.pi and fname != "LGPIOFactory":
            problems.append(f"pin factory is {fname}, expected LGPIOFactory (no silent fallback)")
        if twin is not None:
            ep = twin.new_episode(0)
            goal_v: Any = ep.get("goal") or goal
            tid = ep.get("task_id") if ep.get("task_id") is not None else task_id
            box = ep.get("box_guess")
        else:
            goal_v, tid, box = goal, task_id, None
        report["sensors"] = _check_sensors(rob, desc, samples, problems)
        observer = Observer(bundle.task, desc)
        observer.reset(goal=goal_v, task_id=tid, box_guess=box)
        observer.spec.check(bundle.spec)
        bundle.spec.check_observation(observer(rob.get_observation()))
        typer.echo("observation: matches the bundle spec feature by feature")
        policy = OnnxPolicy(bundle)
        loop = ControlLoop(
            _NoMotion(rob),
            observer,
            PolicySource(policy),
            paced=twin is None,
            watchdog=twin is None,
            stop_on_success=False,
        )
        with loop.signals():
            loop.start()
            res = loop.run_episode(goal=goal_v, task_id=tid, max_steps=ticks, box_guess=box)
        if res.interrupted:
            problems.append(f"timing run interrupted ({res.end})")
        report["timing"] = loop.times.summary()
        report["safety"] = res.info["safety"]
        typer.echo(loop.times.report())
        if loop.times.missed_deadlines:
            problems.append(f"{loop.times.missed_deadlines} missed deadlines in {ticks} ticks")
    finally:
        rob.stop()
        rob.disconnect()
        _close_factory(factory)
    report["problems"] = problems
    report["ok"] = not problems
    _write_json(json_out, report)
    if problems:
        for p in problems:
            typer.echo(f"PROBLEM: {p}", err=True)
        raise typer.Exit(1)
    typer.echo("deploy check: OK")


def _check_sensors(
    rob: Robot, desc: RobotDescription, samples: int, problems: list[str]
) -> dict[str, Any]:
    """Read the sensors ``samples`` times: latency, range / camera age, echo rate."""
    s = desc.safety
    lat, range_age, image_age, valid = [], [], [], []
    wait = threading.Event()  # an interruptible sleep
    for _ in range(max(1, samples)):
        t0 = time.perf_counter()
        raw = rob.get_observation()
        lat.append(time.perf_counter() - t0)
        if "range_age" in raw:
            range_age.append(float(raw["range_age"][0]))
            valid.append(float(raw["range_valid"][0]))
        if "image_age" in raw:
            image_age.append(float(raw["image_age"][0]))
        wait.wait(1.0 / desc.control.rate)
    out: dict[str, Any] = {"read_ms_max": 1e3 * max(lat)}
    typer.echo(
        f"sensors: get_observation {1e3 * float(np.median(lat)):.2f} ms median, "
        f"{1e3 * max(lat):.2f} ms max"
    )
    if desc.ultrasonic.enabled:
        timeout = desc.ultrasonic.timeout
        if max(lat) > timeout:
            problems.append(
                f"reading the sensors took {1e3 * max(lat):.1f} ms, more than the "
                f"ultrasonic timeout {1e3 * timeout:.0f} ms: something blocks"
            )
        if not range_age:
            problems.append("ultrasonic: no 'range_age' in the observation")
        else:
            out["range_age_max"] = max(range_age)
            out["echo_rate"] = float(np.mean(valid))
            typer.echo(
                f"ultrasonic: age max {1e3 * max(range_age):.0f} ms, echo in "
                f"{100 * np.mean(valid):.0f}% of readings"
            )
            if max(range_age) > s.sensor_stale:
                problems.append(
                    f"ultrasonic reading {1e3 * max(range_age):.0f} ms old (limit "
                    f"{1e3 * s.sensor_stale:.0f} ms): check the wiring / the divider"
                )
    if "image_age" in rob.observation_features:
        if not image_age:
            problems.append("camera: no 'image_age' in the observation")
        else:
            out["image_age_max"] = max(image_age)
            typer.echo(f"camera: frame age max {1e3 * max(image_age):.0f} ms")
            if max(image_age) > s.camera_stale:
                problems.append(
                    f"camera frame {1e3 * max(image_age):.0f} ms old (limit "
                    f"{1e3 * s.camera_stale:.0f} ms): is the camera streaming?"
                )
    return out


def run(
    bundle_dir: Path = BUNDLE_ARG,
    robot: str = ROBOT_OPT,
    backend: Backend = BACKEND_OPT,
    episodes: int = typer.Option(1, "--episodes", "-n", help="Episodes to run."),
    goal: tuple[float, float] | None = GOAL_OPT,
    task_id: int | None = TASK_ID_OPT,
    max_steps: int | None = typer.Option(
        None, "--max-steps", help="Ticks per episode (default: the task's)."
    ),
    json_out: Path | None = typer.Option(
        None,
        "--json",
        help="Write per-episode results, timing "
        "and the shutdown state to this JSON file (updated after "
        "every episode).",
    ),
    record: Path | None = typer.Option(
        None,
        "--record",
        help="Record the episodes into this LeRobot dataset folder (appends if it exists).",
    ),
    twin_dynamics: Path | None = typer.Option(
        None, "--twin-dynamics", help="Dynamics randomization YAML for --backend twin."
    ),
    mode: Mode = typer.Option(
        Mode.policy,
        "--mode",
        help="policy: the policy drives; shared: an "
        "operator can take over (interventions are flagged).",
    ),
    takeover: str = typer.Option(
        "keyboard", "--takeover", help="Operator source for --mode shared: keyboard or gamepad."
    ),
    seed: int | None = typer.Option(0, "--seed", help="Seed of the twin's episodes."),
    paced: bool | None = typer.Option(
        None,
        "--paced/--unpaced",
        help="Hold the control rate (default: paced on pi/mock, unpaced on the twin).",
    ),
) -> None:
    """Run a bundle through the control loop. On the twin, report success per episode and overall.
    SIGINT / SIGTERM stop the motors, close the devices and finalize the recording (the episode in
    progress is discarded)."""
    from deploy.loop import ControlLoop, goal_judge
    from deploy.policy import OnnxPolicy, PolicySource
    from hardware.tasks import Observer

    bundle, desc = _load(bundle_dir, robot)
    policy = OnnxPolicy(bundle)  # loads and warms up before any device is opened
    rob, twin, factory = _make_robot(
        backend, desc, bundle.task, seed=seed, twin_dynamics=twin_dynamics
    )
    observer = Observer(bundle.task, desc)
    args = _episode_args(bundle, rob, twin, list(goal) if goal else None, task_id, max_steps, seed)
    recorder = None
    human = None
    report: dict[str, Any] = {
        "bundle": str(bundle.path),
        "robot": desc.name,
        "robot_hash": desc.hash,
        "backend": backend.value,
        "mode": mode.value,
        "episodes": [],
        "finished": False,
    }
    loop: ControlLoop | None = None
    exit_code = 0
    try:
        if record is not None:
            from deploy.dataset import DatasetWriter

            if (record / "meta" / "info.json").exists():
                recorder = DatasetWriter.open(record)
            else:
                recorder = DatasetWriter.create(
                    record, observer.spec, bundle.control_rate, robot=desc
                )
        if mode is Mode.shared:
            from deploy.teleop import make_source

            human = make_source(takeover, task=bundle.task, desc=desc)
        loop = ControlLoop(
            rob,
            observer,
            PolicySource(policy),
            takeover=human,
            recorder=recorder,
            rate=bundle.control_rate,
            paced=(twin is None) if paced is None else paced,
            ground_truth=twin.ground_truth if twin is not None else None,
            # Judge goal tasks exactly as `sim2pi eval` and the recorder do (the achieved goal in
            # the observation), so the twin's figure compares like for like; the twin's ground
            # truth is still reported per episode and as `true_success_rate`.
            judge=goal_judge(bundle.task) if task_info(bundle.task).goal_conditioned else None,
        )

        def done(i: int, res: Any) -> None:
            report["episodes"].append(res.to_dict())
            ok = "?" if res.success is None else ("yes" if res.success else "no")
            typer.echo(
                f"episode {i}: success {ok}, {res.steps} steps, reward {res.reward_sum:g}"
                f", end {res.end}"
            )
            _write_json(json_out, report)

        with loop, loop.signals():
            loop.run(episodes, args, on_episode=done)
            if loop.stop_reason is not None:
                report["stopped_by"] = loop.stop_reason
                sig = loop.stop_reason
                if sig.startswith("signal:"):
                    exit_code = 128 + int(getattr(signal, sig.split(":", 1)[1]))
            report["motor_duty_after_stop"] = _motor_duty(rob)
        report["finished"] = True
    finally:
        if loop is None:  # failed before the loop existed: still stop and close
            for fn in (rob.stop, rob.disconnect):
                try:
                    fn()
                except (DeviceError, Sim2PiError) as e:
                    log.warning("shutdown: %s", e)
            if recorder is not None:
                recorder.close()
        _close_factory(factory)
        if twin is not None:
            twin.close()
        report["robot_connected"] = rob.is_connected
        if loop is not None:
            report["timing"] = loop.times.summary()
        eps = report["episodes"]
        judged = [e["success"] for e in eps if e["success"] is not None and not e["interrupted"]]
        if judged:
            report["success_rate"] = float(np.mean(judged))
        truth = [
            e["info"]["ground_truth"].get("true_success")
            for e in eps
            if not e["interrupted"] and (e.get("info") or {}).get("ground_truth")
        ]
        truth = [t for t in truth if t is not None]
        if truth:
            report["true_success_rate"] = float(np.mean(truth))
        _write_json(json_out, report)
    if "success_rate" in report:
        n = len([e for e in report["episodes"] if e["success"] is not None])
        typer.echo(f"success: {report['success_rate']:.0%} of {n} episodes")
    if exit_code:
        raise typer.Exit(exit_code)


def register(app: typer.Typer) -> None:
    """Add the ``deploy`` sub-app (``check``, ``run``) to the root ``sim2pi`` app."""
    deploy = typer.Typer(
        help="Check and run a policy bundle on a robot (Pi, mock pins or twin).",
        no_args_is_help=True,
    )
    deploy.command("check")(check)
    deploy.command("run")(run)
    app.add_typer(deploy, name="deploy")
