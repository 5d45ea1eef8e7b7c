"""``sim2pi demo``: the whole pipeline on the built-in simulated rover, ending in a report.

Stages (each one is the real ``sim2pi`` command, run in a subprocess, so the report's "repeat this"
commands are exactly what ran):

1. record expert demonstrations of RoverReach into a LeRobot v3.0 dataset;
2. train goal-conditioned BC with ``future`` hindsight relabeling;
3. evaluate in sim (held-out goals; video and trajectory plot);
4. export the ONNX bundle;
5. run the bundle through ``sim2pi deploy run --backend twin`` — the same loop and safety layer as
   on the Pi — for 20 episodes;
6. write ``OUT/report.html`` (success side by side, learning curve, trajectories, rollout video,
   runtime latency per section, the commands, the next step for a real Pi).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

console = Console()


@dataclass
class Plan:
    out: Path
    quick: bool
    seed: int = 0
    demos: int = 100
    steps: int = 3000
    eval_episodes: int = 100
    deploy_episodes: int = 20
    stages: list[tuple[str, list[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.quick:
            self.demos, self.steps, self.eval_episodes, self.deploy_episodes = 40, 1500, 30, 10
        o = self.out
        self.stages = [
            (
                "record",
                [
                    "record",
                    "--robot",
                    "sim",
                    "--task",
                    "reach",
                    "--teleop",
                    "expert",
                    "--episodes",
                    str(self.demos),
                    "--out",
                    str(o / "data"),
                    "--seed",
                    str(self.seed),
                ],
            ),
            (
                "train",
                [
                    "train",
                    "gcbc",
                    "--data",
                    str(o / "data"),
                    "--out",
                    str(o / "run"),
                    "--relabel",
                    "future",
                    "--steps",
                    str(self.steps),
                    "--seed",
                    str(self.seed),
                ],
            ),
            (
                "eval",
                [
                    "eval",
                    str(o / "run"),
                    "--episodes",
                    str(self.eval_episodes),
                    "--json",
                    str(o / "eval.json"),
                ],
            ),
            ("export", ["export", str(o / "run"), "--out", str(o / "bundle")]),
            (
                "deploy",
                [
                    "deploy",
                    "run",
                    str(o / "bundle"),
                    "--robot",
                    "rover",
                    "--backend",
                    "twin",
                    "--episodes",
                    str(self.deploy_episodes),
                    "--json",
                    str(o / "deploy.json"),
                ],
            ),
        ]


def _run_stage(name: str, args: list[str], log_dir: Path) -> float:
    cmd = [sys.executable, "-m", "deploy.cli", *args]
    console.rule(f"[bold]{name}[/]  sim2pi {shlex.join(args)}")
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(cmd, env=env)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        console.print(f"[red]stage '{name}' failed (exit {r.returncode}) after {dt:.1f} s[/]")
        raise typer.Exit(r.returncode or 1)
    return dt


def _b64(path: Path) -> str | None:
    if not path.exists():
        return None
    return base64.b64encode(path.read_bytes()).decode()


def learning_curve(run: Path, out_png: Path) -> Path | None:
    """Plot training loss and eval success from the run's TensorBoard scalars."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return None
    tb = run / "tb"
    if not tb.exists():
        return None
    # The accumulator logs "No path found after <file>" at INFO at the end of every event file.
    logging.getLogger("tensorboard").setLevel(logging.WARNING)
    acc = EventAccumulator(str(tb))
    acc.Reload()
    tags = acc.Tags().get("scalars", [])
    loss_tags = [t for t in tags if t.startswith("losses/")]
    succ_tags = [t for t in tags if "success" in t]
    if not loss_tags:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    for t in loss_tags[:1]:
        ev = acc.Scalars(t)
        ax.plot([e.step for e in ev], [e.value for e in ev], color="tab:blue", lw=1, label=t)
    ax.set_xlabel("gradient step")
    ax.set_ylabel(loss_tags[0], color="tab:blue")
    if succ_tags:
        ax2 = ax.twinx()
        ev = acc.Scalars(succ_tags[0])
        ax2.plot(
            [e.step for e in ev], [e.value for e in ev], "o-", color="tab:green", label=succ_tags[0]
        )
        ax2.set_ylim(0, 1.05)
        ax2.set_ylabel("success rate (sim eval)", color="tab:green")
    ax.set_title("learning curve")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * float(x):.0f} %"


def write_report(plan: Plan, timings: dict[str, float]) -> Path:
    out = plan.out
    ev = json.loads((out / "eval.json").read_text()) if (out / "eval.json").exists() else {}
    dep = json.loads((out / "deploy.json").read_text()) if (out / "deploy.json").exists() else {}
    curve = learning_curve(out / "run", out / "learning_curve.png")
    traj = Path(ev.get("plot") or out / "run" / "eval" / "trajectories.png")
    video = Path(ev.get("video") or out / "run" / "eval" / "rollout.mp4")
    dep_eps = dep.get("episodes") or []
    n_dep = len(dep_eps) if isinstance(dep_eps, list) else int(dep_eps or 0)
    dep_rate = dep.get("success_rate")
    timing = dep.get("timing") or {}
    dists = [
        e.get("info", {}).get("ground_truth", {}).get("true_distance")
        for e in dep_eps
        if isinstance(e, dict)
    ]
    dists = [d for d in dists if d is not None]
    dep_dist = sum(dists) / len(dists) if dists else None
    dep_ci = None
    if n_dep and dep_rate is not None:
        from agent.evaluate import wilson_interval

        dep_ci = wilson_interval(round(dep_rate * n_dep), n_dep)

    def img(p: Path | None, alt: str) -> str:
        data = _b64(p) if p else None
        return (
            f'<img alt="{alt}" src="data:image/png;base64,{data}">'
            if data
            else f"<p>({alt} missing)</p>"
        )

    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{_fmt_ms(v.get('p50_ms'))}</td>"
        f"<td>{_fmt_ms(v.get('p99_ms'))}</td><td>{_fmt_ms(v.get('max_ms'))}</td></tr>"
        for k, v in _sections(timing).items()
    )
    cmds = "\n".join(f"sim2pi {shlex.join(a)}" for _, a in plan.stages)
    ci = ev.get("ci95") or [None, None]
    vid = (
        f'<video src="{os.path.relpath(video, out)}" controls autoplay loop muted width="480"></video>'
        if video.exists()
        else "<p>(no video)</p>"
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sim2pi demo report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .7em;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img,video{{max-width:100%}}pre{{background:#f4f4f4;padding:1em;overflow:auto}}
.big{{font-size:1.4em}}</style></head><body>
<h1>sim2pi demo: RoverReach, from demonstrations to the runtime</h1>
<p>{plan.demos} expert demonstrations → GC-BC with <code>future</code> relabeling ({plan.steps} steps)
→ ONNX bundle → the Pi runtime's loop on the PyBullet twin. Total {sum(timings.values()):.0f} s
on this machine ({"quick" if plan.quick else "full"} mode).</p>
<h2>Success</h2>
<table><tr><th></th><th>episodes</th><th>success</th><th>95 % interval</th><th>mean final distance</th></tr>
<tr><td>sim eval (gymnasium env, torch policy){_truth(ev)}</td><td>{ev.get("episodes", "n/a")}</td>
<td class="big">{_pct(ev.get("success_rate"))}</td><td>{_pct(ci[0])} – {_pct(ci[1])}</td>
<td>{_fmt_m(ev.get("mean_final_distance"))}</td></tr>
<tr><td>runtime on the twin (ONNX bundle, safety layer, control loop){_truth(dep)}</td><td>{n_dep}</td>
<td class="big">{_pct(dep_rate)}</td><td>{_ci(dep_ci)}</td><td>{_fmt_m(dep_dist)}</td></tr>
</table>
<h2>Learning curve</h2>{img(curve, "learning curve")}
<h2>Trajectories over the arena (sim eval)</h2>{img(traj, "trajectories")}
<h2>A rollout</h2>{vid}
<h2>Runtime latency per section (twin backend, unpaced; {timing.get("ticks", "n/a")} ticks,
{timing.get("overruns", "n/a")} overruns)</h2>
<table><tr><th>section</th><th>p50</th><th>p99</th><th>max</th></tr>{rows}</table>
<h2>Stage times</h2><table>{"".join(f"<tr><td>{k}</td><td>{v:.1f} s</td></tr>" for k, v in timings.items())}</table>
<h2>Repeat each step</h2><pre>{html.escape(cmds)}</pre>
<h2>Next: a real Pi</h2>
<ol><li>Copy <code>{html.escape(str(out / "bundle"))}</code> and your robot description to the Pi.</li>
<li>On the Pi (Raspberry Pi OS Bookworm 64-bit): <code>sudo apt install python3-picamera2 python3-lgpio</code>,
<code>python3 -m venv --system-site-packages .venv</code>, <code>.venv/bin/pip install '.[pi]'</code>.</li>
<li><code>sim2pi deploy check bundle --robot my_rover.yaml --backend pi</code> (wheels off the ground).</li>
<li><code>sim2pi deploy run bundle --robot my_rover.yaml --backend pi --goal 0.5 0.3</code>.</li></ol>
<p>See the README's "Going to a real Pi" for the systemd unit and the safety checklist.</p>
</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path


def _sections(timing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if "sections" in timing and isinstance(timing["sections"], dict):
        timing = timing["sections"]
    return {k: v for k, v in timing.items() if isinstance(v, dict)}


def _truth(res: dict[str, Any]) -> str:
    """The twin's ground-truth success of an eval or deploy result, as a small second line."""
    t = res.get("true_success_rate")
    return (
        "" if t is None else f"<br><small>judged on the twin's ground-truth pose: {_pct(t)}</small>"
    )


def _fmt_ms(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.3f} ms"


def _fmt_m(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.3f} m"


def _ci(ci: Any) -> str:
    if not ci:
        return "n/a"
    return f"{_pct(ci[0])} – {_pct(ci[1])}"


def demo(
    out: Path = typer.Option(
        Path("runs/demo"), "--out", help="Folder for the dataset, run, bundle and report."
    ),
    quick: bool = typer.Option(
        False, "--quick", help="Smaller budgets: about a minute instead of five."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for recording and training."),
) -> None:
    """Run the whole pipeline on the simulated rover and write a report you can open."""
    plan = Plan(out=out, quick=quick, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "run", "bundle"):
        target = out / sub
        if target.exists():
            import shutil

            shutil.rmtree(target)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    summaries: list[str] = []
    for name, args in plan.stages:
        timings[name] = _run_stage(name, args, out)
        summaries.append(_summary(name, plan, timings[name]))
        console.print(f"[green]✓[/] {summaries[-1]}")
    report = write_report(plan, timings)
    console.rule("[bold]summary")
    for s in summaries:
        console.print(f"  {s}")
    console.print(
        f"total {time.perf_counter() - t0:.0f} s — open the report: [bold]{report.resolve()}[/]"
    )


def _summary(name: str, plan: Plan, dt: float) -> str:
    o = plan.out
    if name == "record":
        return f"record: {plan.demos} expert episodes into {o / 'data'} ({dt:.1f} s)"
    if name == "train":
        return f"train: GC-BC, future relabeling, {plan.steps} steps ({dt:.1f} s)"
    if name == "eval" and (o / "eval.json").exists():
        ev = json.loads((o / "eval.json").read_text())
        return (
            f"eval: {_pct(ev.get('success_rate'))} success on {ev.get('episodes')} held-out goals "
            f"({dt:.1f} s)"
        )
    if name == "deploy" and (o / "deploy.json").exists():
        d = json.loads((o / "deploy.json").read_text())
        return f"deploy run (twin): {_pct(d.get('success_rate'))} success ({dt:.1f} s)"
    return f"{name}: done ({dt:.1f} s)"


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
