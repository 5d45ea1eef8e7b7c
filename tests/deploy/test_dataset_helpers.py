"""Synthetic specs, frames and episodes for the dataset tests (no sim needed; no tests here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hardware.spec import Spec, action_feature, image, vector

H, W = 64, 64
TASKS = ("reach the goal", "park by the wall")


def make_spec(with_image: bool = True, h: int = H, w: int = W) -> Spec:
    """A goal-conditioned spec like reach, plus (optionally) a camera."""
    obs = {
        "observation": vector(
            "observation",
            ("x", "y", "cos_theta", "sin_theta", "wl", "wr"),
            ("m", "m", "-", "-", "rad/s", "rad/s"),
            (-2, -2, -1, -1, -50, -50),
            (2, 2, 1, 1, 50, 50),
        ),
    }
    if with_image:
        obs["image"] = image("image", h, w)
    obs["achieved_goal"] = vector("achieved_goal", ("x", "y"), ("m", "m"), (-2, -2), (2, 2))
    obs["desired_goal"] = vector("desired_goal", ("x", "y"), ("m", "m"), (-1, -1), (1, 1))
    return Spec(
        observation=obs,
        action=action_feature(),
        task="reach",
        robot="testbot",
        robot_hash="0123456789abcdef",
        control_rate=20.0,
    )


def synthetic_frame(k: int, episode: int, h: int = H, w: int = W) -> np.ndarray:
    """A smooth RGB frame (gradients and a moving square) that codecs compress well."""
    yy, xx = np.mgrid[0:h, 0:w]
    r = (20 + xx * 200 // max(1, w - 1)).astype(np.uint8)
    g = (30 + yy * 190 // max(1, h - 1)).astype(np.uint8)
    b = np.full((h, w), 40 + (40 * episode) % 180, np.uint8)
    img = np.stack([r, g, b], -1)
    x0 = (2 * k) % max(1, w - 8)
    y0 = (k + 3 * episode) % max(1, h - 8)
    img[y0 : y0 + 8, x0 : x0 + 8] = (230, 220, 40)
    return img


def synthetic_episode(episode: int, length: int, spec: Spec, seed: int = 0) -> list[dict[str, Any]]:
    """Deterministic frames for ``episode`` (same arguments, same frames)."""
    rng = np.random.default_rng([seed, episode])
    goal = rng.uniform(-0.8, 0.8, 2).astype(np.float32)
    frames = []
    for k in range(length):
        obs = rng.normal(size=6).astype(np.float32)
        act = rng.uniform(-1, 1, 2).astype(np.float32)
        f: dict[str, Any] = {
            "observation": obs,
            "achieved_goal": obs[:2].copy(),
            "desired_goal": goal,
            "action": act,
            "action_applied": np.clip(act * 0.5, -1, 1).astype(np.float32),
            "reward": float(-1.0 if k < length - 1 else 0.0),
            "success": k == length - 1,
            "done": k == length - 1,
            "intervention": bool(k % 7 == 3),
        }
        if "image" in spec.observation:
            f["image"] = synthetic_frame(k, episode, *spec.observation["image"].shape[:2])
        frames.append(f)
    return frames


def record(
    path: Path, spec: Spec, lengths: list[int], fps: int = 20, seed: int = 0, resume: bool = False
) -> list[list[dict[str, Any]]]:
    """Write episodes with the given lengths; returns their frames."""
    from deploy.dataset import DatasetWriter

    out = []
    w = DatasetWriter.open(path) if resume else DatasetWriter.create(path, spec, fps)
    with w:
        for length in lengths:
            e = w.num_episodes
            frames = synthetic_episode(e, length, spec, seed)
            w.start_episode(TASKS[e % 2])
            for f in frames:
                w.add_frame(f)
            assert w.save_episode() == e
            out.append(frames)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
