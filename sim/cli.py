"""``sim2pi sim ...`` commands: run the scripted experts on the twin.

PyBullet and gymnasium are imported inside the command bodies, so ``sim2pi --help`` works without
them.
"""

from __future__ import annotations

import time

import typer

sim_app = typer.Typer(
    help="The PyBullet twin: run scripted experts, look at the tasks.", no_args_is_help=True
)


@sim_app.command("expert")
def expert(
    task: str = typer.Option("reach", "--task", "-t", help="Task: reach, push or seek."),
    episodes: int = typer.Option(10, "--episodes", "-n", min=1, help="Episodes to run."),
    noise: float = typer.Option(
        0.0, "--noise", min=0.0, help="Std of Gaussian noise added to executed actions (DART)."
    ),
    gui: bool = typer.Option(False, "--gui", help="Show the PyBullet GUI (needs a display)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the first episode (then seed+1, ...)."),
    robot: str = typer.Option("rover", "--robot", help="Robot description: YAML path or name."),
    randomize: str | None = typer.Option(
        None,
        "--randomize",
        help="Dynamics randomization config (YAML path or name, e.g. 'default'); off if omitted.",
    ),
) -> None:
    """Run the scripted expert of TASK and print its success rate and speed."""
    import gymnasium as gym
    from rich.console import Console
    from rich.progress import Progress

    import sim  # noqa: F401  (registers the envs)
    from hardware.description import load_description
    from hardware.tasks import task_info
    from sim.experts import make_expert

    console = Console()
    info_t = task_info(task)
    desc = load_description(robot)
    env = gym.make(info_t.env_id, description=desc, gui=gui, randomization=randomize)
    agent = make_expert(info_t.name, desc, noise=noise, seed=seed)
    successes = steps = 0
    t0 = time.perf_counter()
    try:
        with Progress(console=console, transient=True) as progress:
            bar = progress.add_task(f"{info_t.name} expert", total=episodes)
            for ep in range(episodes):
                obs, info = env.reset(seed=seed + ep)
                agent.reset()
                done = False
                while not done:
                    obs, _, term, trunc, info = env.step(agent.noisy(agent.act(obs, info)))
                    steps += 1
                    done = term or trunc
                successes += bool(info["is_success"])
                progress.update(
                    bar, advance=1, description=f"{info_t.name} expert: {successes}/{ep + 1} ok"
                )
    finally:
        env.close()
    secs = time.perf_counter() - t0
    console.print(
        f"[bold]{info_t.name}[/] expert (noise {noise}): success "
        f"[cyan]{successes / episodes:.1%}[/] ({successes}/{episodes}), {steps} steps, "
        f"{steps / max(secs, 1e-9):.0f} steps/s"
    )


def register(app: typer.Typer) -> None:
    """Add the ``sim`` sub-app to the ``sim2pi`` CLI."""
    app.add_typer(sim_app, name="sim")


__all__ = ["register", "sim_app"]
