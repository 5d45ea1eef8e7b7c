"""``sim2pi teleop``: drive a robot (the twin, mock pins or a real Pi) from the web page or the
terminal keyboard, through the one control loop, optionally recording episodes.

Heavy imports (pybullet, uvicorn, gpiozero) happen inside the command body only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from deploy.teleop import CommandSource
    from hardware.robot import Robot

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    """Add the ``teleop`` command to the root ``sim2pi`` app."""

    @app.command()
    def teleop(
        robot: str = typer.Option(
            "sim",
            "--robot",
            help="'sim' for the PyBullet twin, or a robot description YAML "
            "(path or shipped name) for a real rover.",
        ),
        web: bool = typer.Option(
            False,
            "--web",
            help="Serve the teleop web page (joystick, keys, gamepad, live view) "
            "instead of reading the terminal keyboard.",
        ),
        host: str = typer.Option(
            "127.0.0.1",
            "--host",
            help="Address the web page binds to. Anything but loopback "
            "requires a token (one is generated and printed when --token is not given).",
        ),
        port: int = typer.Option(
            8000, "--port", min=0, max=65535, help="Web page port (0 = any free)."
        ),
        token: str | None = typer.Option(
            None, "--token", help="Access token for the web page (>= 32 URL-safe characters)."
        ),
        record: Path | None = typer.Option(
            None,
            "--record",
            help="Dataset folder (LeRobot v3.0) for episodes recorded from the "
            "page or the keyboard; appended to when it exists.",
        ),
        task: str = typer.Option("reach", "--task", help="Task: reach, push or seek."),
        backend: str = typer.Option(
            "pi",
            "--backend",
            help="For a real robot: 'pi' (lgpio pins) or 'mock' (gpiozero "
            "MockFactory pins, no hardware).",
        ),
        policy: Path | None = typer.Option(
            None,
            "--policy",
            help="Policy bundle for the page's policy / shared modes (on the "
            "twin the scripted expert is used when no bundle is given).",
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of the twin's scenes."),
        goal: str | None = typer.Option(
            None,
            "--goal",
            help="Real robot, reach/push: goal 'x,y' in metres in the odometry "
            "frame (default 0.5,0).",
        ),
        target: int = typer.Option(
            0, "--target", help="Real robot, seek: target id (0 red, 1 green, 2 blue)."
        ),
    ) -> None:
        """Teleoperate a robot from the browser (--web) or the terminal keyboard."""
        from deploy.web.cli import run_teleop

        run_teleop(
            robot=robot,
            web=web,
            host=host,
            port=port,
            token=token,
            record=record,
            task=task,
            backend=backend,
            policy=policy,
            seed=seed,
            goal=goal,
            target=target,
        )


def run_teleop(
    *,
    robot: str,
    web: bool,
    host: str,
    port: int,
    token: str | None,
    record: Path | None,
    task: str,
    backend: str,
    policy: Path | None,
    seed: int,
    goal: str | None,
    target: int,
) -> None:
    """The body of ``sim2pi teleop`` (see its ``--help``)."""
    from rich.console import Console

    from hardware.description import load_description
    from hardware.errors import Sim2PiError
    from hardware.tasks import task_info

    console = Console()
    info = task_info(task)
    twin = None
    if robot == "sim":
        from sim.backend import TwinBackend

        desc = load_description("rover")
        twin = TwinBackend(info.name, desc, seed=seed, camera=None)
        bot: Robot = twin.robot
        episode_args: dict[str, Any] | None = None
    else:
        desc = load_description(robot)
        if backend == "mock":
            from hardware.mock import make_mock_robot

            bot = make_mock_robot(desc)
        elif backend == "pi":
            from hardware.pi import PiRobot

            bot = PiRobot(desc)
        else:
            raise Sim2PiError(f"unknown --backend {backend!r}; choose pi or mock")
        episode_args = {}
        if info.goal_conditioned:
            try:
                gx, gy = (float(v) for v in (goal or "0.5,0").split(","))
            except ValueError:
                raise Sim2PiError(f"--goal must be 'x,y' in metres, got {goal!r}") from None
            episode_args["goal"] = (gx, gy)
        if info.n_task_ids:
            episode_args["task_id"] = target
    recorder = None
    if record is not None:
        from deploy.web.runner import open_recorder

        recorder = open_recorder(record, info.name, desc)
    pol: CommandSource | None = None
    if policy is not None:
        from deploy.policy import OnnxPolicy, PolicySource

        pol = PolicySource(OnnxPolicy(policy))
    elif twin is not None:
        from deploy.teleop import ExpertSource

        pol = ExpertSource(info.name, desc, seed=seed)

    if web:
        _run_web(
            bot,
            info.name,
            twin=twin,
            recorder=recorder,
            policy=pol,
            host=host,
            port=port,
            token=token,
            episode_args=episode_args,
            console=console,
        )
    else:
        _run_keyboard(
            bot, info.name, twin=twin, recorder=recorder, episode_args=episode_args, console=console
        )


def _run_web(
    bot, task, *, twin, recorder, policy, host, port, token, episode_args, console
) -> None:
    from deploy.web.app import resolve_token
    from deploy.web.runner import build_session

    token, generated = resolve_token(host, token)
    session = build_session(
        bot,
        task,
        backend=twin,
        recorder=recorder,
        policy=policy,
        host=host,
        port=port,
        token=token,
        episode_args=episode_args,
    )
    try:
        session.web.start()
        console.print(f"[bold green]teleop page:[/] {session.web.url}")
        if generated:
            console.print(
                "[yellow]a fresh access token was generated; the URL above carries it "
                "(in the #fragment). Keep it private.[/]"
            )
        console.print("Ctrl-C stops the robot and exits.")
        with session.loop.signals():
            session.run()
    finally:
        session.web.close()
        session.loop.close()
        if recorder is not None:
            recorder.close()
    console.print(f"{session.saved} episode(s) saved")


def _run_keyboard(bot, task, *, twin, recorder, episode_args, console) -> None:
    from deploy.loop import ControlLoop
    from deploy.teleop import KEY_HELP, KeyboardSource
    from hardware.tasks import Observer

    source = KeyboardSource()
    desc = bot.description
    loop = ControlLoop(
        bot,
        Observer(task, desc),
        source,
        recorder=recorder,
        paced=True,
        ground_truth=twin.ground_truth if twin is not None else None,
        mode="teleop",
    )
    console.print(KEY_HELP)
    try:
        with loop.signals():
            while not loop.stop_requested:
                args = twin.new_episode() if twin is not None else dict(episode_args or {})
                res = loop.run_episode(
                    **{
                        k: v
                        for k, v in args.items()
                        if k in ("goal", "task_id", "max_steps", "box_guess")
                    }
                )
                console.print(f"episode: {res.end}, {res.steps} steps, success {res.success}")
    finally:
        loop.close()
