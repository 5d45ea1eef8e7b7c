"""``sim2pi record`` and ``sim2pi dataset info|validate|repair|compact|plot``.

Heavy modules (pyarrow, PyAV, pybullet, matplotlib) are imported inside the command bodies so that
``sim2pi --help`` stays fast and works without them.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

logger = logging.getLogger(__name__)
console = Console()

dataset_app = typer.Typer(
    help="Inspect, check, repair, compact and plot recorded datasets.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add ``record`` and the ``dataset`` group to the root app."""
    app.command("record")(record)
    app.add_typer(dataset_app, name="dataset")


# ----------------------------------------------------------------------------------------------
# record


class StatusLine:
    """A live status line on stderr: episode, frames, achieved rate, dropped (late) ticks."""

    def __init__(self, writer: Any, loop: Any, period: float = 0.5) -> None:
        self.writer, self.loop, self.period = writer, loop, period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="record-status", daemon=True)
        self._last = (time.monotonic(), 0, -1)

    def line(self) -> str:
        now = time.monotonic()
        frames, ep = self.writer.episode_frames, self.writer.num_episodes
        t0, f0, e0 = self._last
        rate = (frames - f0) / (now - t0) if ep == e0 and now > t0 and frames >= f0 else 0.0
        self._last = (now, frames, ep)
        missed = getattr(self.loop.times, "missed_deadlines", 0)
        return (
            f"episode {ep} | frames {frames} | {rate:5.1f} Hz (target {self.loop.rate:g}) | "
            f"dropped {missed}"
        )

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            sys.stderr.write("\r" + self.line() + "   ")
            sys.stderr.flush()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        sys.stderr.write("\n")


def record(
    out: Path = typer.Option(
        ..., "--out", "-o", help="Dataset folder to create (or append to with --resume)."
    ),
    robot: str = typer.Option("sim", "--robot", help="Which robot: 'sim' (the PyBullet twin)."),
    task: str = typer.Option("reach", "--task", help="Task: reach, push or seek."),
    teleop: str = typer.Option(
        "keyboard", "--teleop", help="Command source: keyboard, gamepad or expert."
    ),
    episodes: int = typer.Option(
        10, "--episodes", "-n", min=1, help="Episodes to record (saved ones count)."
    ),
    fps: int | None = typer.Option(
        None,
        "--fps",
        min=1,
        help="Control and recording rate in Hz; default the description's control rate.",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Append to an existing dataset (after cleaning leftovers of an interrupted run).",
    ),
    noise: float = typer.Option(
        0.0,
        "--noise",
        min=0.0,
        help=(
            "DART noise std for the scripted expert: executed and recorded as "
            "'action_applied'; 'action' keeps the expert's clean action."
        ),
    ),
    seed: int = typer.Option(
        0, "--seed", help="Seed of the scenes (episode k uses seed, k) and the expert's noise."
    ),
    description: str = typer.Option(
        "rover", "--description", help="Robot description: a YAML path or a shipped name."
    ),
    max_steps: int | None = typer.Option(
        None, "--max-steps", min=1, help="Cap on steps per episode; default the task's."
    ),
    device: str | None = typer.Option(
        None, "--device", help="Gamepad device (/dev/input/eventN); default the first with a stick."
    ),
    video_codec: str = typer.Option(
        "h264", "--video-codec", help="Codec of camera videos: h264, hevc or libsvtav1."
    ),
) -> None:
    """Record demonstrations through the control loop into a LeRobot v3.0 dataset.

    Keyboard: W/A/S/D or arrows drive, space stops, n next episode, r re-record, g success,
    q quit, e e-stop, x reset e-stop. Expert runs in sim are unpaced (as fast as the simulator);
    human-driven runs are paced at --fps.
    """
    import numpy as np

    from deploy.dataset import DatasetWriter
    from deploy.loop import ControlLoop, goal_judge
    from deploy.teleop import KEY_HELP, make_source
    from hardware.description import load_description
    from hardware.errors import Sim2PiError
    from hardware.tasks import Observer

    desc = load_description(description)
    rate = fps or desc.control.rate
    if float(rate) != int(rate):
        raise Sim2PiError(
            f"the dataset needs an integer rate; give --fps (control rate is {rate} Hz)"
        )
    rate = int(rate)
    if robot != "sim":
        raise Sim2PiError(
            f"--robot {robot!r} is not supported by `record` yet; use --robot sim "
            "(record on the Pi with `sim2pi teleop`)"
        )
    from sim.backend import TwinBackend

    backend = TwinBackend(task, desc, seed=seed)
    observer = Observer(task, desc)
    if resume:
        writer = DatasetWriter.open(out)
        try:
            writer.spec.check(observer.spec)
            if writer.fps != rate:
                raise Sim2PiError(
                    f"{out} was recorded at {writer.fps} fps, not {rate}; pass --fps {writer.fps}"
                )
        except BaseException:
            writer.close()
            raise
    else:
        writer = DatasetWriter.create(out, observer.spec, rate, robot=desc, video_codec=video_codec)
    try:
        source = make_source(teleop, task=task, desc=desc, noise=noise, seed=seed, device=device)
    except BaseException:
        writer.close()
        backend.close()
        raise
    paced = teleop != "expert"
    # goal tasks: judge on the policy's own achieved/desired goal, so the recorded next.reward and
    # next.success agree with compute_reward on the recorded columns (what HER relabels); the twin's
    # ground truth still reaches the expert through ctx.info
    judge = goal_judge(observer.info.name) if observer.info.goal_conditioned else None
    loop = ControlLoop(
        backend.robot,
        observer,
        source,
        recorder=writer,
        rate=rate,
        paced=paced,
        ground_truth=backend.ground_truth,
        judge=judge,
    )
    if teleop == "keyboard":
        console.print(f"[bold]keys:[/] {KEY_HELP}")
    start_eps = writer.num_episodes
    status = StatusLine(writer, loop) if paced else None
    t0 = time.perf_counter()
    successes = 0
    saved = 0
    with loop, loop.signals():
        if status is not None:
            status.start()
        try:
            while saved < episodes and not loop.stop_requested:
                k = writer.num_episodes
                ep_seed = int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
                args = backend.new_episode(seed=ep_seed)
                if max_steps is not None:
                    args["max_steps"] = max_steps
                res = loop.run_episode(**args)
                if res.info.get("recorded"):
                    saved = writer.num_episodes - start_eps
                    successes += int(bool(res.success))
                if status is None:
                    dt = time.perf_counter() - t0
                    console.print(
                        f"episode {k}: {res.steps} steps, success {res.success}, "
                        f"{'saved' if res.info.get('recorded') else 'discarded'} "
                        f"({saved}/{episodes} in {dt:.1f} s)"
                    )
        finally:
            if status is not None:
                status.stop()
    dt = time.perf_counter() - t0
    console.print(
        f"recorded {saved} episode(s) ({successes} successful) into {out} in {dt:.1f} s; "
        f"dataset has {writer.num_episodes} episodes, {writer.num_frames} frames"
    )


# ----------------------------------------------------------------------------------------------
# dataset ...


@dataset_app.command("info")
def info_cmd(
    path: Path = typer.Argument(..., help="Dataset folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Summarize a dataset: task, robot, episodes, frames, features, files."""
    from deploy.dataset import info_summary

    s = info_summary(path)
    if as_json:
        print(json.dumps(s, indent=2))
        return
    t = Table("field", "value", title=f"dataset {path}")
    for k, v in s.items():
        if k != "features":
            t.add_row(k, str(v))
    console.print(t)
    ft = Table("feature", "dtype / shape", title="features")
    for k, v in s["features"].items():
        ft.add_row(k, v)
    console.print(ft)


@dataset_app.command("validate")
def validate_cmd(
    path: Path = typer.Argument(..., help="Dataset folder."),
    deep: bool = typer.Option(False, "--deep", help="Also decode every video frame."),
) -> None:
    """Check a dataset against the LeRobot v3.0 rules; names the episode and file of each problem.
    Exits 1 when there is an error."""
    from deploy.dataset import validate

    problems = validate(path, deep=deep)
    errors = [p for p in problems if p.level == "error"]
    for p in problems:
        console.print(f"[{'red' if p.level == 'error' else 'yellow'}]{p}[/]", highlight=False)
    if errors:
        console.print(
            f"[red]{len(errors)} error(s)[/]; `sim2pi dataset repair {path}` rebuilds the "
            "metadata from the episode files"
        )
        raise typer.Exit(1)
    console.print(f"[green]ok[/]: {path}")


@dataset_app.command("repair")
def repair_cmd(path: Path = typer.Argument(..., help="Dataset folder.")) -> None:
    """Rebuild all metadata from the episode files; bad files go to DIR/quarantine/."""
    from deploy.dataset import repair, validate

    report = repair(path)
    console.print(report.summary())
    for f in report.quarantined:
        console.print(f"  quarantined {f}")
    for old, new in sorted(report.renumbered.items()):
        console.print(f"  episode {old} is now {new}")
    errors = [p for p in validate(path) if p.level == "error"]
    for p in errors:
        console.print(f"[red]{p}[/]", highlight=False)
    if errors:
        raise typer.Exit(1)


@dataset_app.command("compact")
def compact_cmd(
    path: Path = typer.Argument(..., help="Dataset folder."),
    max_data_mb: float = typer.Option(
        100.0, "--max-data-mb", help="Largest merged data file (MB)."
    ),
    max_video_mb: float = typer.Option(
        500.0, "--max-video-mb", help="Largest merged video file (MB)."
    ),
) -> None:
    """Merge one-file-per-episode into few large files (faster first open); crash-safe."""
    from deploy.dataset import compact

    r = compact(path, max_data_mb=max_data_mb, max_video_mb=max_video_mb)
    console.print(
        f"{r.episodes} episodes: data files {r.data_files_before} -> {r.data_files_after}, "
        f"episode files {r.meta_files_before} -> {r.meta_files_after} in {r.seconds:.2f} s"
    )


@dataset_app.command("plot")
def plot_cmd(
    path: Path = typer.Argument(..., help="Dataset folder."),
    out: Path | None = typer.Option(None, "--out", help="Folder for the PNGs; default DIR/plots."),
    episodes: int = typer.Option(50, "--episodes", min=1, help="Plot at most this many episodes."),
) -> None:
    """Write PNGs: trajectories over the arena, action histograms, a contact sheet of frames."""
    files = plot_dataset(path, out or Path(path) / "plots", max_episodes=episodes)
    for f in files:
        console.print(f"wrote {f}")


def plot_dataset(path: str | Path, out: str | Path, *, max_episodes: int = 50) -> list[Path]:
    """Trajectories (``observation.state`` x, y and the goals) over the arena, histograms of the
    requested and applied actions, and a contact sheet (first / middle / last frame per episode)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from deploy.dataset import Dataset
    from hardware.tasks import ARENA_HALF

    ds = Dataset.open(path, load_images=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = min(ds.num_episodes, max_episodes)
    eps = [ds.episode(i) for i in range(n)]
    files: list[Path] = []
    names = list(ds.spec.observation["observation"].names or ())
    if eps and "x" in names and "y" in names:
        ix, iy = names.index("x"), names.index("y")
        fig, ax = plt.subplots(figsize=(6, 6))
        ax.add_patch(
            plt.Rectangle(
                (-ARENA_HALF, -ARENA_HALF),
                2 * ARENA_HALF,
                2 * ARENA_HALF,
                fill=False,
                lw=2,
                color="k",
            )
        )
        cmap = plt.get_cmap("viridis")
        for j, ep in enumerate(eps):
            c = cmap(j / max(1, n - 1))
            obs = ep["observation"]
            ax.plot(obs[:, ix], obs[:, iy], "-", color=c, lw=1, alpha=0.8)
            ax.plot(obs[0, ix], obs[0, iy], "o", color=c, ms=3)
            if "desired_goal" in ep:
                g = ep["desired_goal"][0]
                ax.plot(g[0], g[1], "x", color="r" if bool(ep["success"][-1]) else "k", ms=6)
        ax.set_xlim(-ARENA_HALF - 0.1, ARENA_HALF + 0.1)
        ax.set_ylim(-ARENA_HALF - 0.1, ARENA_HALF + 0.1)
        ax.set_aspect("equal")
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
        ax.set_title(f"{ds.spec.task}: {n} trajectories (o start, x goal; red = success)")
        files.append(out / "trajectories.png")
        fig.savefig(files[-1], dpi=100)
        plt.close(fig)
    if eps:
        act_names = list(ds.spec.action.names or ("left", "right"))
        fig, axes = plt.subplots(1, len(act_names), figsize=(4 * len(act_names), 3.5))
        axes = np.atleast_1d(axes)
        req = np.concatenate([ep["action"] for ep in eps])
        app = np.concatenate([ep["action_applied"] for ep in eps])
        for d, ax in enumerate(axes):
            bins = np.linspace(-1, 1, 41)
            ax.hist(np.nan_to_num(req[:, d]), bins=bins, alpha=0.6, label="requested")
            ax.hist(app[:, d], bins=bins, alpha=0.6, label="applied")
            ax.set_title(f"action {act_names[d]}")
            ax.legend()
        fig.tight_layout()
        files.append(out / "actions.png")
        fig.savefig(files[-1], dpi=100)
        plt.close(fig)
    if eps and ds.spec.image_keys:
        key = ds.spec.image_keys[0]
        rows = min(n, 12)
        fig, axes = plt.subplots(rows, 3, figsize=(6, 2 * rows), squeeze=False)
        for j in range(rows):
            frames = ds.episode(j, load_images=True)[key]
            for col, k in enumerate((0, len(frames) // 2, len(frames) - 1)):
                axes[j, col].imshow(frames[k])
                axes[j, col].set_axis_off()
                axes[j, col].set_title(f"ep {j} t={k}", fontsize=7)
        fig.tight_layout()
        files.append(out / "frames.png")
        fig.savefig(files[-1], dpi=80)
        plt.close(fig)
    return files
