"""``sim2pi train her``: registered by :func:`agent.cli.register` through :func:`register_train`.

Imports only typer/rich and the torch-free :mod:`agent.her_config` at module level; torch and
pybullet are imported when the command runs.
"""

from __future__ import annotations

import typer
from rich.console import Console

from agent.her_config import HerConfig

console = Console()


def _run_her(cfg: HerConfig) -> None:
    import dataclasses

    from agent.checkpoint import read_meta
    from agent.her import BEST, train

    if cfg.out is None:
        cfg = dataclasses.replace(cfg, out=f"runs/her-{cfg.task}-s{cfg.seed}")
    res = train(cfg)
    console.print(
        f"[green]trained[/] {res.env_steps} env steps, {res.updates} updates in "
        f"{res.train_seconds:.0f} s ({res.env_steps / max(res.train_seconds, 1e-9):.0f} "
        f"steps/s) → {res.run}"
    )
    if res.history:
        last = res.history[-1]
        truth = last.get("true_success_rate")
        console.print(
            f"last evaluation: success {last['success_rate']:.1%}"
            + (f" (twin's ground truth {truth:.1%})" if truth is not None else "")
            + f" over {int(last['episodes'])} episodes at {int(last['env_steps'])} steps"
        )
    if res.run is not None and (res.run / BEST / "checkpoint.json").exists():
        best = read_meta(res.run / BEST)
        truth = best.eval.get("true_success_rate")
        console.print(
            f"best evaluation: success {best.eval['success_rate']:.1%}"
            + (f" (twin's ground truth {truth:.1%})" if truth is not None else "")
            + f" at {best.step} steps → {res.run / BEST} (re-evaluate it with `sim2pi eval`: it "
            "was picked on these evaluation starts)"
        )
    if res.time_to_target is not None:
        console.print(f"reached {cfg.target_success:.0%} success after {res.time_to_target:.0f} s")


def register_train(train_app: typer.Typer) -> None:
    """Add ``her`` to the ``train`` sub-app."""
    from agent.cli import dataclass_command

    train_app.command("her")(
        dataclass_command(
            HerConfig,
            _run_her,
            doc="Off-policy SAC with Hindsight Experience Replay (optionally seeded from demos).\n\n"
            "Saves the actor like any policy, so `sim2pi eval RUN` and `sim2pi export RUN` work; "
            "RUN/best holds the actor of the best evaluation.\n\n"
            "Example: sim2pi train her --task reach --minutes 5 --out runs/reach-her",
        )
    )
