"""Simulation throughput and physics accuracy of the rover twin, beside panda-gym as the peer.

Measures env steps/s in one process without rendering (RoverReach, RoverPush), RoverSeek with its
64×64 camera, and the vectorized collection path (``sim.vector.BatchedVectorEnv``: several envs per
worker process) against the single process. panda-gym's PandaReach-v3 / PandaPush-v3 run in the same
script, interleaved round by round with ours, so machine load hits both alike; medians and ratios are
reported. The physics check drives a fixed command sequence at the env's settings and at a fine
reference (physics dt 1/480) and prints the final-pose error and how far a pushed box sinks into the
floor.

    python benchmarks/sim_throughput.py [--rounds 5] [--steps 2000] [--no-peer]

Targets: RoverReach ≥ 5× PandaReach; RoverPush ≥ 3× PandaPush; RoverSeek ≥ 800 steps/s; vectorized
≥ 1.7× single process on two idle cores; pose error ≤ 2 cm / 2°; box sink ≤ 2 mm.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import gymnasium as gym
import numpy as np
from _common import append, load, median, table


def ensure_panda_gym() -> bool:
    try:
        importlib.import_module("panda_gym")
        return True
    except ImportError:
        print("installing panda-gym into this venv for the peer measurement ...")
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "panda-gym"])
        if r.returncode != 0:
            return False
        importlib.invalidate_caches()
        try:
            importlib.import_module("panda_gym")
            return True
        except ImportError:
            return False


def steps_per_second(env: gym.Env, steps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    lo, hi = env.action_space.low, env.action_space.high
    acts = rng.uniform(lo, hi, size=(steps, *env.action_space.shape)).astype(np.float32)
    t0 = time.perf_counter()
    for a in acts:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - t0)


def vec_steps_per_second(venv: gym.vector.VectorEnv, steps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    venv.reset(seed=seed)
    n = venv.num_envs
    shape = venv.single_action_space.shape
    iters = max(1, steps // n)
    acts = rng.uniform(-1, 1, size=(iters, n, *shape)).astype(np.float32)
    t0 = time.perf_counter()
    for a in acts:
        venv.step(a)
    return iters * n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    ap.add_argument("--steps", type=int, default=2000, help="env steps per measurement")
    ap.add_argument("--no-peer", action="store_true", help="skip panda-gym")
    ap.add_argument(
        "--envs-per-worker", type=int, default=8, help="vectorized path: envs per worker"
    )
    ap.add_argument("--no-append", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()

    import sim  # noqa: F401  (registers the rover envs)

    peer = not args.no_peer and ensure_panda_gym()
    if peer:
        import panda_gym  # noqa: F401

    print(f"machine: {load()}")
    ours = {
        "RoverReach": gym.make("sim2pi/RoverReach-v0"),
        "RoverPush": gym.make("sim2pi/RoverPush-v0"),
        "RoverSeek (64x64 cam)": gym.make("sim2pi/RoverSeek-v0"),
    }
    peers = {}
    if peer:
        peers = {
            "PandaReach-v3": gym.make("PandaReach-v3"),
            "PandaPush-v3": gym.make("PandaPush-v3"),
        }
    results: dict[str, list[float]] = {k: [] for k in [*ours, *peers, "vectorized", "single"]}
    from sim.vector import BatchedVectorEnv

    workers = 2
    venv = BatchedVectorEnv.from_id(
        "sim2pi/RoverReach-v0", num_envs=workers * args.envs_per_worker, num_workers=workers
    )
    for r in range(args.rounds):
        for name, env in ours.items():
            n = args.steps if "Seek" not in name else max(200, args.steps // 4)
            results[name].append(steps_per_second(env, n, seed=r))
        for name, env in peers.items():
            n = max(200, args.steps // 4)
            results[name].append(steps_per_second(env, n, seed=r))
        results["single"].append(steps_per_second(ours["RoverReach"], args.steps, seed=100 + r))
        results["vectorized"].append(vec_steps_per_second(venv, args.steps * 2, seed=r))
        print(
            f"round {r + 1}/{args.rounds}: "
            + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in results.items() if v)
        )
    venv.close()

    med = {k: median(v) for k, v in results.items()}
    rows = [
        [
            "RoverReach-v0",
            med["RoverReach"],
            "PandaReach-v3",
            med.get("PandaReach-v3", float("nan")),
            med["RoverReach"] / med.get("PandaReach-v3", float("nan")) if peer else float("nan"),
            "≥ 5×",
        ],
        [
            "RoverPush-v0",
            med["RoverPush"],
            "PandaPush-v3",
            med.get("PandaPush-v3", float("nan")),
            med["RoverPush"] / med.get("PandaPush-v3", float("nan")) if peer else float("nan"),
            "≥ 3×",
        ],
        [
            "RoverSeek-v0 (camera)",
            med["RoverSeek (64x64 cam)"],
            "—",
            float("nan"),
            float("nan"),
            "≥ 800 steps/s",
        ],
        [
            f"RoverReach vectorized ({workers}×{args.envs_per_worker})",
            med["vectorized"],
            "RoverReach single process",
            med["single"],
            med["vectorized"] / med["single"],
            "≥ 1.7×",
        ],
    ]
    body = table(["ours", "steps/s (median)", "peer", "peer steps/s", "ratio", "target"], rows)

    from sim.accuracy import check_accuracy

    rep = check_accuracy()
    acc_rows = [
        [name, rep.pos_error[name] * 100, rep.ang_error_deg[name], "≤ 2 cm, ≤ 2°"]
        for name in rep.pos_error
    ]
    acc_rows.append(["box sink into the floor (mm)", rep.box_sink * 1000, float("nan"), "≤ 2 mm"])
    body += (
        f"\n\nPhysics at the env's settings vs the reference {rep.reference}: "
        f"{'PASS' if rep.passed else 'FAIL'}\n\n"
        + table(["scenario", "final position error (cm)", "heading error (°)", "target"], acc_rows)
    )
    print(body)
    if not args.no_append:
        append("sim_throughput", body, f"{args.rounds} interleaved rounds of {args.steps} steps.")


if __name__ == "__main__":
    main()
