"""``sim2pi train gcbc|dagger|her``, ``sim2pi eval`` and ``sim2pi export``.

Training options are generated from the trainers' config dataclasses (:class:`agent.gcbc.GCBCConfig`,
:class:`agent.dagger.DaggerConfig`), so every field and its doc shows in ``--help`` and nothing is
documented twice. Heavy packages (torch, pybullet, onnx) are imported inside command bodies; this
module imports only typer, rich, the standard library and the torch-free :mod:`agent.configs`.

SAC+HER: ``agent/her_cli.py`` (owned by the HER trainer) may define ``register_train(train_app)``;
:func:`register` calls it to add ``sim2pi train her`` — see :func:`_add_her`.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

log = logging.getLogger(__name__)
console = Console()


# ----------------------------------------------------------------------------------------------
# dataclass → typer options


def _option_type(tp: Any) -> tuple[Any, Callable[[Any], Any]]:
    """(typer annotation, converter back to the field's type)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner, conv = _option_type(args[0])
        return inner | None, lambda v: None if v is None else conv(v)
    if origin is tuple:
        (item, *_) = typing.get_args(tp)
        return str, lambda v: tuple(item(x) for x in str(v).split(",") if x.strip())
    return tp, lambda v: v


def dataclass_command(
    cls: type,
    run: Callable[[Any], None],
    *,
    doc: str,
    positional: tuple[str, ...] = (),
    rename: dict[str, str] | None = None,
    skip: tuple[str, ...] = (),
) -> Callable[..., None]:
    """A typer command function whose options are the fields of dataclass ``cls``.

    Each field becomes ``--field-name`` with its default and its ``metadata["doc"]`` as help;
    booleans become ``--x/--no-x``; tuples take comma-separated values. ``run(config)`` is called
    with the built config instance.
    """
    hints = typing.get_type_hints(cls)
    rename = rename or {}
    params = []
    convs: dict[str, Callable[[Any], Any]] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        ann, conv = _option_type(hints[f.name])
        convs[f.name] = conv
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, tuple):
            default = ",".join(str(x) for x in default)
        helptext = f.metadata.get("doc", "")
        if f.name in positional:
            info = typer.Argument(default, help=helptext)
        else:
            flag = rename.get(f.name, "--" + f.name.replace("_", "-"))
            if ann is bool:
                flag = f"{flag}/--no-{flag[2:]}"
            info = typer.Option(default, flag, help=helptext)
        params.append(
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=ann)
        )

    def command(**kwargs: Any) -> None:
        cfg = cls(**{k: convs[k](v) for k, v in kwargs.items()})
        run(cfg)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = doc
    return command


def _progress() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


# ----------------------------------------------------------------------------------------------
# commands


def _run_gcbc(cfg: Any) -> None:
    from agent.gcbc import train

    if cfg.data is None:
        raise typer.BadParameter("--data DIR is required (a dataset from `sim2pi record`)")
    if not cfg.progress:
        res = train(cfg)
    else:
        with _progress() as bar:
            tid = bar.add_task("gcbc", total=cfg.steps, info="")

            def cb(step: int, total: int, scalars: dict[str, float]) -> None:
                if step % 20 == 0 or step == total:
                    bar.update(
                        tid,
                        completed=step,
                        info=f"loss {scalars.get('losses/bc', float('nan')):.4f}",
                    )

            res = train(cfg, progress=cb)
    ev = res.metrics.get("eval")
    console.print(
        f"[green]trained[/] {res.step} steps → {res.run} "
        f"({res.metrics.get('steps_per_second', 0):.0f} steps/s)"
    )
    if ev:
        console.print(
            f"validation success {ev['success_rate']:.1%} "
            f"(95% CI {ev['ci95'][0]:.1%}–{ev['ci95'][1]:.1%}, {ev['episodes']} episodes)"
        )


def _run_dagger(cfg: Any) -> None:
    from agent.dagger import train_dagger

    if not cfg.progress:
        out = train_dagger(cfg)
    else:
        with _progress() as bar:
            tasks: dict[str, Any] = {}

            def cb(label: str, i: int, n: int) -> None:
                if label not in tasks:
                    tasks[label] = bar.add_task(label, total=n, info="")
                if i % 20 == 0 or i == n:
                    bar.update(tasks[label], completed=i)

            out = train_dagger(cfg, progress=cb)
    for r in out["rounds"]:
        sr = r.get("success_rate")
        console.print(
            f"round {r['round']}: {r['data_steps']} steps of data"
            + (f", success {sr:.1%}" if sr is not None else "")
        )
    console.print(f"[green]saved[/] {out['run']}")


def _add_her(train_app: typer.Typer) -> None:
    """Hook for SAC+HER: ``agent.her_cli.register_train(train_app)`` adds ``train her``."""
    import importlib

    try:
        mod = importlib.import_module("agent.her_cli")
    except ModuleNotFoundError as e:
        if e.name == "agent.her_cli":
            return
        raise
    mod.register_train(train_app)


def register(app: typer.Typer) -> None:
    """Add ``train`` (gcbc, dagger, her), ``eval`` and ``export`` to the root app."""
    from agent.configs import DaggerConfig, GCBCConfig  # torch-free

    train_app = typer.Typer(help="Train policies (GC-BC, DAgger, SAC+HER).", no_args_is_help=True)
    train_app.command("gcbc")(
        dataclass_command(
            GCBCConfig,
            _run_gcbc,
            doc="Goal-conditioned behavioral cloning with hindsight relabeling.\n\n"
            "Example: sim2pi train gcbc --data data/reach --out runs/reach --relabel future",
        )
    )
    train_app.command("dagger")(
        dataclass_command(
            DaggerConfig,
            _run_dagger,
            doc="DAgger: roll out the learner, label with the scripted expert, aggregate, retrain.\n\n"
            "Example: sim2pi train dagger --task push --demos 200 --demo-noise 0.3 "
            "--out runs/push-dagger",
        )
    )
    _add_her(train_app)
    app.add_typer(train_app, name="train")
    app.command("eval")(eval_command)
    app.command("export")(export_command)


def eval_command(
    run: Path = typer.Argument(..., help="run directory (from `sim2pi train ...`)"),
    episodes: int = typer.Option(50, "--episodes", "-n", help="number of evaluation episodes"),
    goals: str = typer.Option(
        "heldout",
        "--goals",
        help="goal set: heldout (seeds disjoint from data collection) | valid | train",
    ),
    json_out: Path | None = typer.Option(None, "--json", help="write the results as JSON here"),
    video: bool = typer.Option(True, "--video/--no-video", help="write RUN/eval/rollout.mp4"),
    video_episodes: int = typer.Option(3, "--video-episodes", help="episodes in the video"),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="write RUN/eval/trajectories.png"),
    description: str = typer.Option("rover", "--robot", help="robot description for the env"),
) -> None:
    """Evaluate a run in sim: success rate (95% Wilson interval), final distance, steps."""
    import torch

    from agent.checkpoint import load_policy, update_eval
    from agent.evaluate import evaluate, write_json

    torch.set_num_threads(1)
    policy, meta = load_policy(run)
    out = run / "eval"
    with _progress() as bar:
        tid = bar.add_task("eval", total=episodes, info=goals)
        res = evaluate(
            policy,
            episodes=episodes,
            goals=goals,
            description=description,
            video=out / "rollout.mp4" if video else None,
            video_episodes=video_episodes,
            plot=out / "trajectories.png" if plot else None,
            progress=lambda i: bar.update(tid, completed=i),
        )
    res["run"] = str(run)
    res["algo"] = meta.algo
    update_eval(run, {goals: res})
    if json_out is not None:
        write_json(json_out, res)
    ci = res["ci95"]
    console.print(
        f"[bold]{meta.spec.task}[/] {res['episodes']} {goals} episodes: success "
        f"[green]{res['success_rate']:.1%}[/] (95% CI {ci[0]:.1%}–{ci[1]:.1%})"
    )
    if res["mean_final_distance"] is not None:
        console.print(f"  final distance to goal: mean {100 * res['mean_final_distance']:.1f} cm")
    if res.get("true_success_rate") is not None:
        # Success is judged on the robot's own estimate (odometry, the camera's box estimate), as
        # on the Pi. The episode ends when the estimate crosses the threshold, so an estimate a
        # few cm off turns many true finishes into near misses at the same threshold.
        console.print(
            f"  twin's ground truth: success {res['true_success_rate']:.1%} at the same "
            f"threshold, median final distance {100 * res['median_true_final_distance']:.1f} cm"
        )
    if res["mean_steps_to_success"] is not None:
        console.print(f"  mean steps to success {res['mean_steps_to_success']:.1f}")
    for k in ("video", "plot"):
        if k in res:
            console.print(f"  {k}: {res[k]}")


def export_command(
    run: Path = typer.Argument(..., help="run directory (from `sim2pi train ...`)"),
    out: Path = typer.Option(..., "--out", "-o", help="bundle directory to write"),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="dataset for the parity check (default: the run's dataset, else random inputs)",
    ),
    samples: int = typer.Option(1000, "--samples", help="observations in the parity check"),
    tolerance: float = typer.Option(1e-5, "--tolerance", help="max |torch - onnxruntime|"),
) -> None:
    """Export a run to a policy bundle (policy.onnx + bundle.json) and check its parity."""
    import torch

    from agent.export import export_run

    torch.set_num_threads(1)
    summary = export_run(run, out, data=data, samples=samples, tolerance=tolerance)
    console.print(
        f"[green]exported[/] {summary['bundle']}: parity max |diff| "
        f"{summary['parity_max_abs_diff']:.2e} on {summary['parity_samples']} "
        f"{summary['parity_source']} observations"
    )
    console.print(json.dumps({k: v for k, v in summary.items()}, indent=None))
