"""Evaluation of a policy in sim: success rate with a Wilson interval, distances, videos, plots.

``sim2pi eval RUN`` calls :func:`evaluate` on the run's checkpoint. Goals come from env seeds
(:mod:`agent.rollout`): ``heldout`` uses a seed range disjoint from data collection (and from the
validation seeds used during training), ``valid`` the validation range, ``train`` the collection
range (to measure fitting, not generalization).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agent.rollout import (
    HELDOUT_SEED_BASE,
    TRAIN_SEED_BASE,
    VALID_SEED_BASE,
    EpisodeStats,
    make_env,
    rollout,
)
from hardware.errors import Sim2PiError
from hardware.tasks import ARENA_HALF

log = logging.getLogger(__name__)

GOAL_SETS = {"heldout": HELDOUT_SEED_BASE, "valid": VALID_SEED_BASE, "train": TRAIN_SEED_BASE}


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95 % for the default z)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarize(stats: list[EpisodeStats]) -> dict[str, Any]:
    """Machine-readable figures of a list of episodes."""
    n = len(stats)
    k = sum(s.success for s in stats)
    lo, hi = wilson_interval(k, n)
    to_succ = [s.steps_to_success for s in stats if s.steps_to_success is not None]
    finals = [s.final_distance for s in stats if np.isfinite(s.final_distance)]
    true_finals = [s.true_final_distance for s in stats if s.true_final_distance is not None]
    true_ok = [s.true_success for s in stats if s.true_success is not None]
    return {
        "success_rate": k / n if n else 0.0,
        "successes": k,
        "episodes": n,
        "ci95": [lo, hi],
        "true_success_rate": float(np.mean(true_ok)) if true_ok else None,
        "mean_final_distance": float(np.mean(finals)) if finals else None,
        "mean_true_final_distance": float(np.mean(true_finals)) if true_finals else None,
        "median_true_final_distance": float(np.median(true_finals)) if true_finals else None,
        "mean_steps_to_success": float(np.mean(to_succ)) if to_succ else None,
        "median_steps_to_success": float(np.median(to_succ)) if to_succ else None,
        "mean_steps": float(np.mean([s.steps for s in stats])) if n else 0.0,
    }


def evaluate(
    policy: Any,
    *,
    episodes: int = 50,
    goals: str = "heldout",
    seed_offset: int = 0,
    description: Any = "rover",
    env_factory: Callable[[bool], Any] | None = None,
    video: str | Path | None = None,
    video_episodes: int = 3,
    plot: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Roll ``policy`` out for ``episodes`` episodes on the goal set ``goals``.

    Args:
        policy: a :class:`agent.policies.Policy` (its spec names the task).
        episodes: number of episodes.
        goals: ``heldout`` | ``valid`` | ``train`` (env seed ranges, see module docstring).
        seed_offset: first seed within the goal set's range.
        description: robot description for the env.
        env_factory: ``f(render) -> env`` instead of the registered env (tests, toy tasks).
        video: write the first ``video_episodes`` episodes (chase camera) to this mp4/gif.
        plot: write a PNG of all trajectories and goals over the arena.
        progress: called with the number of finished episodes.
    """
    if goals not in GOAL_SETS:
        raise Sim2PiError(f"unknown goal set '{goals}'; choose one of {list(GOAL_SETS)}")
    if episodes < 1:
        raise Sim2PiError("evaluate at least one episode (--episodes N, N >= 1)")
    spec = policy.spec
    base = GOAL_SETS[goals] + seed_offset
    factory = env_factory or (lambda render: make_env(spec.task, description, render=render))
    was = policy.training
    policy.eval()
    stats: list[EpisodeStats] = []
    env = factory(False)
    venv = factory(True) if video is not None and video_episodes > 0 else None
    try:
        for i in range(episodes):
            render = venv is not None and i < video_episodes
            _, st = rollout(
                venv if render else env, spec, seed=base + i, policy=policy, render=render
            )
            stats.append(st)
            if progress is not None:
                progress(i + 1)
    finally:
        env.close()
        if venv is not None:
            venv.close()
        policy.train(was)
    result = summarize(stats)
    result["goals"] = goals
    result["seeds"] = [base, base + episodes - 1]
    result["task"] = spec.task
    if video is not None:
        frames = [f for s in stats[:video_episodes] for f in s.frames if f is not None]
        if frames:
            write_video(video, frames, fps=round(spec.control_rate or 20))
            result["video"] = str(video)
    if plot is not None:
        plot_trajectories(
            plot,
            stats,
            title=f"{spec.task}: {result['success_rate']:.0%} success "
            f"({result['episodes']} {goals} episodes)",
        )
        result["plot"] = str(plot)
    return result


def write_video(path: str | Path, frames: list[np.ndarray], fps: int = 20) -> Path:
    """Write RGB frames to an mp4 (H.264 via PyAV) or, for a ``.gif`` path, an animated GIF."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    h2, w2 = h - h % 2, w - w % 2  # yuv420p needs even sizes
    if path.suffix.lower() == ".gif":
        from PIL import Image

        imgs = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
        imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
        return path
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = w2, h2
        stream.pix_fmt = "yuv420p"
        for f in frames:
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(f[:h2, :w2, :3], np.uint8), format="rgb24"
            )
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def plot_trajectories(path: str | Path, stats: list[EpisodeStats], title: str = "") -> Path:
    """A PNG of robot trajectories (green: success, red: failure) and goals over the arena."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    a = ARENA_HALF
    ax.plot([-a, a, a, -a, -a], [-a, -a, a, a, -a], color="k", lw=2)
    for s in stats:
        c = "tab:green" if s.success else "tab:red"
        ax.plot(s.trajectory[:, 0], s.trajectory[:, 1], color=c, lw=0.8, alpha=0.6)
        ax.plot(*s.trajectory[0], marker="o", ms=3, color=c)
        if s.goal is not None:
            ax.plot(*s.goal, marker="x", ms=6, color="k", alpha=0.8)
    ax.set_xlim(-a - 0.05, a + 0.05)
    ax.set_ylim(-a - 0.05, a + 0.05)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_json(path: str | Path, result: dict[str, Any]) -> Path:
    """Write evaluation results as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return path
