"""How much RoverPush ground-truth success the robot's own sensing allows.

Runs the scripted push expert twice on the same episodes:

- **sensors**: as on the Pi, from odometry and the camera's box estimate; the episode ends when the
  estimate is within 5 cm of the goal (the env's success);
- **truth**: the same expert fed the twin's true pose and true box (box always "seen"); the episode
  ends when the true box is within 5 cm.

The gap between the two is what imperfect sensing costs: with sensors, a run's "success" is
judged on an estimate whose error at the end is printed alongside. ``--policy RUN ...`` runs trained
checkpoints on the same episodes, to see where they fail: whether the true box ever reached the
goal (reached but never seen there, or never pushed there), and the success by where the robot
starts. Usage:
``python benchmarks/push_ceiling.py [--episodes 100] [--noise 0.0] [--policy RUN ...] [--no-append]``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _common import append, load, median, table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


TRUE_FEATURES = ("x", "y", "cos_theta", "sin_theta", "box_x", "box_y", "box_seen")


def truth_columns(desc: Any) -> list[int]:
    """Where :data:`TRUE_FEATURES` sit in the push observation, looked up by name in the task's
    spec (so a change of the observation layout cannot silently misplace them)."""
    from hardware.tasks import task_spec

    names = list(task_spec("push", desc).observation["observation"].names or ())
    missing = [n for n in TRUE_FEATURES if n not in names]
    if missing:
        raise SystemExit(f"the push observation has no {missing}; it has {names}")
    return [names.index(n) for n in TRUE_FEATURES]


def truthful(
    obs: dict[str, np.ndarray], info: dict[str, Any], cols: list[int]
) -> dict[str, np.ndarray]:
    """``obs`` with the odometry pose and the box estimate replaced by the twin's ground truth;
    ``cols``: :func:`truth_columns`."""
    o = {k: v.copy() for k, v in obs.items()}
    x, y, th = info["true_pose"]
    bx, by = info["true_box"]
    o["observation"][cols] = [x, y, math.cos(th), math.sin(th), bx, by, 1.0]
    o["achieved_goal"][:] = [bx, by]
    return o


# where the robot starts, by the cosine between (box - robot) and (goal - box)
SIDES = (("behind", 0.5, 1.01), ("beside", -0.5, 0.5), ("goal side", -1.01, -0.5))


def run(mode: str, episodes: int, noise: float, policy_run: str | None = None) -> dict[str, float]:
    """``mode``: ``sensors`` / ``truth`` (the expert fed either) or ``policy`` (the checkpoint
    ``policy_run``, as exported: deterministic, on its sensors)."""
    import gymnasium as gym

    import sim  # noqa: F401  (registers the envs)
    from hardware.description import load_description
    from hardware.tasks import is_success
    from sim.experts import make_expert

    def at(a: np.ndarray, b: np.ndarray) -> bool:  # the task's own success test (5 cm)
        return bool(is_success("push", a, b))

    env = gym.make("sim2pi/RoverPush-v0").unwrapped
    desc = load_description("rover")
    cols = truth_columns(desc)
    expert = make_expert("push", desc, noise=noise, seed=0)
    policy = None
    if mode == "policy":
        import torch

        from agent.checkpoint import load_policy

        torch.set_num_threads(1)
        policy, _ = load_policy(policy_run or "")
    est_ok, true_ok, ever_ok, est_err, true_dist, moved, side = [], [], [], [], [], [], []
    for ep in range(episodes):
        obs, info = env.reset(seed=1000 + ep)
        expert.reset()
        box0, goal = np.asarray(info["true_box"]), obs["desired_goal"].copy()
        u, v = goal - box0, box0 - np.asarray(info["true_pose"])[:2]
        side.append(float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-9)))
        ever, done = False, False
        while not done:
            if mode == "truth" and at(info["true_box"], goal):
                break  # the truth-fed expert ends on true success, as the sensing one on its own
            if policy is not None:
                action = policy.act({k: x[None, None] for k, x in obs.items()})[0]
            else:
                action = expert.noisy(
                    expert.act(truthful(obs, info, cols) if mode == "truth" else obs, info)
                )
            obs, _, term, trunc, info = env.step(np.asarray(action, np.float32))
            ever |= at(info["true_box"], goal)
            done = term or trunc
        true_box = np.asarray(info["true_box"])
        est_ok.append(float(at(obs["achieved_goal"], obs["desired_goal"])))
        true_ok.append(float(at(true_box, obs["desired_goal"])))
        ever_ok.append(float(ever or true_ok[-1]))
        est_err.append(float(np.linalg.norm(obs["achieved_goal"] - true_box)))
        true_dist.append(float(np.linalg.norm(true_box - obs["desired_goal"])))
        moved.append(float(np.linalg.norm(true_box - box0) > 0.02))
    env.close()
    out = {
        "estimate": float(np.mean(est_ok)),
        "truth": float(np.mean(true_ok)),
        "ever": float(np.mean(ever_ok)),
        "moved": float(np.mean(moved)),
        "est_err_cm": 100 * median(est_err),
        "true_dist_cm": 100 * median(true_dist),
    }
    for name, lo, hi in SIDES:
        rows = [e for e, c in zip(est_ok, side) if lo <= c < hi]
        out[name] = float(np.mean(rows)) if rows else float("nan")
        out[name + " n"] = float(len(rows))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--noise", type=float, default=0.0, help="DART noise of the expert's actions")
    ap.add_argument(
        "--policy",
        nargs="*",
        default=[],
        metavar="RUN",
        help="also run these checkpoints (e.g. a `sim2pi train her` RUN or RUN/best) on the same "
        "episodes",
    )
    ap.add_argument("--no-append", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    load_before = load()
    rows = []
    jobs = [("expert, sensors", "sensors", None), ("expert, truth", "truth", None)]
    jobs += [(f"policy {r}", "policy", r) for r in args.policy]
    for label, mode, policy_run in jobs:
        r = run(mode, args.episodes, args.noise, policy_run)
        rows.append(
            [
                label,
                f"{r['estimate']:.0%}",
                f"{r['truth']:.0%}",
                f"{r['ever']:.0%}",
                f"{r['moved']:.0%}",
                *(f"{r[n]:.0%} of {r[n + ' n']:.0f}" for n, _, _ in SIDES),
                f"{r['est_err_cm']:.1f}",
                f"{r['true_dist_cm']:.1f}",
            ]
        )
    body = (
        f"RoverPush, {args.episodes} episodes (seeds 1000+), expert action noise {args.noise:g}: "
        "the scripted expert fed the robot's sensors vs the twin's ground truth"
        + (", and trained policies on their sensors" if args.policy else "")
        + ". Success by the estimate is what the env and the Pi count; the side columns split it "
        "by where the robot starts relative to the box and its goal.\n\n"
        + table(
            [
                "who",
                "success (estimate)",
                "success (ground truth)",
                "true box on the goal at some step",
                "box moved > 2 cm",
                *(f"estimate, robot starts {n}" for n, _, _ in SIDES),
                "median estimate error at the end, cm",
                "median true box-goal distance, cm",
            ],
            rows,
        )
    )
    print(body)
    if not args.no_append:
        append("push ceiling", body, f"Load at start: {load_before}.")


if __name__ == "__main__":
    main()
