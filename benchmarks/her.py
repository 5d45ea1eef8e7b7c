"""SAC+HER benchmark: wall-clock to 95 % RoverReach success, ours vs Stable-Baselines3, and
RoverPush learning curves with and without demonstrations.

Reach: for each seed, our learner (``agent.her`` defaults) and SB3 SAC + ``HerReplayBuffer`` with
the rl-zoo's FetchReach settings run one after the other in this process (interleaved, so machine
load hits both alike). Both are evaluated the same way — every ``--eval-every`` env steps,
``--eval-episodes`` deterministic episodes on the same start states and goals — and the clock
excludes evaluation. Time to target = training wall clock at the first evaluation >= 95 %.

Push: ``--push-minutes M`` trains ours for M minutes without and with demos (``--push-demos N``
scripted-expert episodes recorded with ``sim2pi record`` with DART noise ``--push-demo-noise``
(0.3; the expert's clean action is the label); the demo run uses
``--push-actor``, discrete by default) and prints both curves; the target is
>= 90 % within an hour, so a short run reports the curve and how far it got.

    python benchmarks/her.py                          # reach, 3 seeds, SB3 up to 15 min each
    python benchmarks/her.py --seeds 0 --sb3-minutes 5 --push-minutes 10
    python benchmarks/her.py --only push --push-minutes 60   # the full push target
    # the demo run as measured in RESULTS.md (discrete actor, 200 DART-0.3 demos):
    python benchmarks/her.py --only push --push-runs demos --push-minutes 60 --push-demos 200 \
        --push-demo-restarts 0 --push-workers 1 --seeds 0
    # the best no-demo run in RESULTS.md (SAC, reverse curriculum, staged rewards, 5-step returns;
    # alone on 2 cores; the seed repeats ran --push-workers 0, two side by side, one core each):
    python benchmarks/her.py --only push --push-runs no-demos --push-minutes 60 --push-workers 1 \
        --seeds 0 --push-near-starts 0 --push-nodemo-set reverse_starts=0.8 \
        --push-nodemo-set curriculum_success=0.3 --push-nodemo-set gamma=0.99 \
        --push-nodemo-set n_step=5 --push-nodemo-set reward_on=staged
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import append, load, median, table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

log = logging.getLogger("benchmarks.her")

REACH = "sim2pi/RoverReach-v0"


@dataclass
class Run:
    """One training run's outcome."""

    method: str
    seed: int
    time_to_target: float | None  # s of training wall clock (evaluation excluded)
    steps_to_target: int | None
    train_seconds: float
    env_steps: int
    best_success: float
    # (s, steps, success on the robot's estimate, success on the twin's ground truth)
    curve: list[tuple[float, int, float, float]] = field(default_factory=list)

    @property
    def steps_per_s(self) -> float:
        return self.env_steps / max(self.train_seconds, 1e-9)

    @classmethod
    def judged(
        cls,
        method: str,
        seed: int,
        train_seconds: float,
        env_steps: int,
        curve: list[tuple[float, int, float, float]],
        col: int,
        target: float | None,
    ) -> Run:
        """A run whose time to target and best success are read from ``curve`` column ``col``."""
        run = cls(method, seed, None, None, train_seconds, env_steps, 0.0, curve)
        hit = run.first_at(col, target) if target is not None else None
        run.best_success = run.best(col)
        if hit is not None:
            run.time_to_target, run.steps_to_target = hit[0], hit[1]
        return run

    def first_at(self, col: int, target: float) -> tuple[float, int, float, float] | None:
        """The first curve point whose success in column ``col`` (2: estimate, 3: ground truth)
        reaches ``target``."""
        return next((c for c in self.curve if c[col] >= target), None)

    def best(self, col: int) -> float:
        return max((c[col] for c in self.curve), default=0.0)

    def median(self, col: int) -> float:
        return float(np.median([c[col] for c in self.curve])) if self.curve else 0.0


def run_ours(
    seed: int,
    minutes: float,
    eval_every: int,
    eval_episodes: int,
    target: float | None,
    task: str = "reach",
    demos: str | None = None,
    label: str = "ours",
    judge: str = "estimate",
    **overrides: Any,
) -> Run:
    """``judge``: which success the target is judged on (``estimate``, as the env and SB3 judge
    it, or ``truth``: the twin's ground truth); ``overrides``: more HerConfig fields."""
    from agent.her import HerConfig, train

    cfg = HerConfig(
        task=task,
        seed=seed,
        minutes=minutes,
        eval_every=eval_every,
        eval_episodes=eval_episodes,
        target_success=target if judge == "estimate" else None,
        demos=demos,
        log_every=30.0,
        **overrides,
    )
    res = train(cfg)
    curve = [
        (
            h["time_s"],
            int(h["env_steps"]),
            h["success_rate"],
            h.get("true_success_rate", float("nan")),
        )
        for h in res.history
    ]
    col = 2 if judge == "estimate" else 3
    return Run.judged(label, seed, res.train_seconds, res.env_steps, curve, col, target)


def run_sb3(seed: int, minutes: float, eval_every: int, eval_episodes: int, target: float) -> Run:
    """SB3 SAC + HerReplayBuffer with the rl-zoo FetchReach-v1 SAC hyper-parameters
    (rl-baselines3-zoo hyperparams/sac.yml: buffer 1e6, ent_coef auto, batch 256, gamma 0.95,
    lr 1e-3, learning_starts 1000, normalize: True, HER future k=4, net_arch [64, 64]; SAC's
    defaults otherwise: train_freq 1, gradient_steps 1, tau 0.005), one env as in the zoo."""
    import torch
    from stable_baselines3 import SAC, HerReplayBuffer
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from agent.her import HerConfig, evaluate, task_setup
    from agent.her_envs import GoalObs, LocalEnvs, make_env_fn

    success_fn = task_setup(HerConfig(task="reach"))[3]

    torch.set_num_threads(1)  # as ours; small nets are faster single-threaded here
    env_fn = make_env_fn(REACH)
    venv = VecNormalize(DummyVecEnv([env_fn]), gamma=0.95)  # zoo `normalize: True`
    model = SAC(
        "MultiInputPolicy",
        venv,
        buffer_size=1_000_000,
        ent_coef="auto",
        batch_size=256,
        gamma=0.95,
        learning_rate=1e-3,
        learning_starts=1000,
        replay_buffer_class=HerReplayBuffer,
        replay_buffer_kwargs={"goal_selection_strategy": "future", "n_sampled_goal": 4},
        policy_kwargs={"net_arch": [64, 64]},
        seed=seed,
        device="cpu",
        verbose=0,
    )
    eval_envs = LocalEnvs([env_fn] * 10)

    def act(o: GoalObs) -> np.ndarray:
        d = venv.normalize_obs(
            {
                "observation": o.observation,
                "achieved_goal": o.achieved_goal,
                "desired_goal": o.desired_goal,
            }
        )
        return model.predict(d, deterministic=True)[0]

    budget = minutes * 60.0
    curve: list[tuple[float, int, float, float]] = []

    class Cb(BaseCallback):
        def _on_training_start(self) -> None:
            self.t0 = time.perf_counter()
            self.eval_time = 0.0
            self.next_log = 30.0

        def now(self) -> float:
            return time.perf_counter() - self.t0 - self.eval_time

        def _on_step(self) -> bool:
            if self.now() >= self.next_log:
                self.next_log += 30.0
                log.info(
                    "sb3 step %d (%.0f s): %.0f steps/s",
                    self.num_timesteps,
                    self.now(),
                    self.num_timesteps / self.now(),
                )
            if self.num_timesteps % eval_every == 0:
                t = time.perf_counter()
                ev = evaluate(act, eval_envs, eval_episodes, seed + 7, success_fn)
                self.eval_time += time.perf_counter() - t
                curve.append(
                    (self.now(), self.num_timesteps, ev["success_rate"], ev["true_success_rate"])
                )
                log.info(
                    "sb3 eval at %d steps (%.0f s): success %.2f",
                    self.num_timesteps,
                    self.now(),
                    ev["success_rate"],
                )
                if ev["success_rate"] >= target:
                    return False
            return self.now() < budget

    cb = Cb()
    try:
        model.learn(total_timesteps=10**8, callback=cb)
    finally:
        eval_envs.close()
        venv.close()
    return Run.judged("sb3", seed, cb.now(), int(model.num_timesteps), curve, 2, target)


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` strings → HerConfig overrides, each converted to its field's declared type
    (as the ``sim2pi train her`` options are: tuples from comma lists), refusing unknown fields."""
    import types
    import typing

    from agent.cli import _option_type
    from agent.her_config import HerConfig

    hints = typing.get_type_hints(HerConfig)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in hints:
            raise SystemExit(f"{item!r}: expected FIELD=VALUE with a HerConfig field")
        ann, conv = _option_type(hints[key])
        if isinstance(ann, types.UnionType):  # Optional[...]: the non-None type
            ann = next(a for a in typing.get_args(ann) if a is not type(None))
        if ann is bool:
            out[key] = raw.lower() in ("1", "true", "yes")
        else:
            out[key] = conv(ann(raw))
    return out


def record_demos(task: str, n: int, out: Path, noise: float) -> Path:
    """``n`` scripted-expert episodes through ``sim2pi record`` (the normal recording path), with
    DART noise of std ``noise`` on the executed actions (the expert's clean action is the label)."""
    if (out / "meta" / "info.json").exists():
        return out
    cmd = [
        sys.executable,
        "-m",
        "deploy.cli",
        "record",
        "--robot",
        "sim",
        "--teleop",
        "expert",
        "--task",
        task,
        "-n",
        str(n),
        "--noise",
        str(noise),
        "--out",
        str(out),
    ]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    return out


def fmt_time(x: float | None, budget: float) -> str:
    return f"{x:.0f}" if x is not None else f"> {budget:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", choices=("all", "reach", "push"), default="all")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--minutes", type=float, default=5.0, help="our reach budget per seed")
    ap.add_argument("--sb3-minutes", type=float, default=15.0, help="SB3 reach budget per seed")
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--eval-every", type=int, default=4000)
    ap.add_argument("--eval-episodes", type=int, default=50)
    ap.add_argument("--push-minutes", type=float, default=0.0, help="0 = skip push")
    ap.add_argument("--push-demos", type=int, default=100, help="expert episodes for push demos")
    ap.add_argument("--push-eval-every", type=int, default=20_000)
    ap.add_argument("--push-workers", type=int, default=1, help="env worker processes per push run")
    ap.add_argument(
        "--push-runs",
        choices=("both", "no-demos", "demos"),
        default="both",
        help="which push runs (two processes with one run each share two cores side by side)",
    )
    ap.add_argument(
        "--push-near-starts",
        type=float,
        default=0.5,
        help="no-demo run: share of episodes started near the box (HerConfig.near_starts)",
    )
    ap.add_argument(
        "--push-demo-restarts",
        type=float,
        default=0.5,
        help="demo run: share of episodes restarted from demo states (HerConfig.demo_restarts)",
    )
    ap.add_argument(
        "--push-actor",
        choices=("gaussian", "discrete"),
        default="discrete",
        help="demo run: the actor head (HerConfig.actor); the no-demo run stays SAC's gaussian",
    )
    ap.add_argument(
        "--push-set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="demo run: any other HerConfig field, e.g. --push-set hidden=256,256 "
        "--push-set bc_pretrain=20000 (repeatable)",
    )
    ap.add_argument(
        "--push-nodemo-set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="no-demo run: any other HerConfig field, e.g. --push-nodemo-set reverse_starts=0.8 "
        "--push-nodemo-set reward_on=both (repeatable)",
    )
    ap.add_argument(
        "--push-demo-noise",
        type=float,
        default=0.3,
        help="DART noise std of the recorded push demos (0 = clean; ignored when --demo-dir "
        "already holds demos)",
    )
    ap.add_argument("--demo-dir", type=Path, default=None, help="reuse/keep recorded demos here")
    ap.add_argument("--no-append", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    load_before = load()
    sections: list[str] = []
    raw: dict[str, Any] = {}

    if args.only in ("all", "reach"):
        runs: list[Run] = []
        for seed in args.seeds:  # interleaved: ours then SB3 for every seed
            log.info("reach seed %d: ours", seed)
            runs.append(
                run_ours(seed, args.minutes, args.eval_every, args.eval_episodes, args.target)
            )
            log.info("reach seed %d: sb3", seed)
            runs.append(
                run_sb3(seed, args.sb3_minutes, args.eval_every, args.eval_episodes, args.target)
            )
        rows = []
        for seed in args.seeds:
            o = next(r for r in runs if r.method == "ours" and r.seed == seed)
            s = next(r for r in runs if r.method == "sb3" and r.seed == seed)
            ratio = (
                (
                    (s.time_to_target if s.time_to_target is not None else s.train_seconds)
                    / o.time_to_target
                )
                if o.time_to_target
                else float("nan")
            )
            prefix = "" if s.time_to_target is not None else ">= "
            rows.append(
                [
                    seed,
                    fmt_time(o.time_to_target, args.minutes * 60),
                    o.steps_to_target or "n/a",
                    f"{o.steps_per_s:.0f}",
                    fmt_time(s.time_to_target, args.sb3_minutes * 60),
                    s.steps_to_target or "n/a",
                    f"{s.steps_per_s:.0f}",
                    f"{prefix}{ratio:.1f}x",
                ]
            )
        ours_t = [r.time_to_target for r in runs if r.method == "ours" and r.time_to_target]
        sb3_t = [r.time_to_target or r.train_seconds for r in runs if r.method == "sb3"]
        rows.append(
            [
                "median",
                f"{median(ours_t):.0f}",
                "",
                "",
                f"{median(sb3_t):.0f}",
                "",
                "",
                f"{median(sb3_t) / median(ours_t):.1f}x" if ours_t else "n/a",
            ]
        )
        hits = sum(
            r.time_to_target is not None and r.time_to_target <= 300
            for r in runs
            if r.method == "ours"
        )
        sections.append(
            f"RoverReach, time to {args.target:.0%} deterministic success ({args.eval_episodes} "
            f"episodes every {args.eval_every} env steps; evaluation time excluded). Ours within "
            f"5 min: {hits}/{len(args.seeds)} seeds (target: all, ratio >= 3x).\n\n"
            + table(
                [
                    "seed",
                    "ours s",
                    "ours steps",
                    "ours steps/s",
                    "SB3 s",
                    "SB3 steps",
                    "SB3 steps/s",
                    "SB3/ours",
                ],
                rows,
            )
        )
        raw["reach"] = [asdict(r) for r in runs]

    if args.only in ("all", "push") and args.push_minutes > 0:
        demo_dir = args.demo_dir or Path(tempfile.mkdtemp(prefix="her-push-demos-"))
        demos = demo_dir
        if args.push_runs != "no-demos":
            t0 = time.perf_counter()
            demos = record_demos("push", args.push_demos, demo_dir, args.push_demo_noise)
            log.info("push demos ready in %.0f s", time.perf_counter() - t0)
        variants = {  # --push-runs name: (label, the run's own options)
            "no-demos": (
                " ".join(
                    [f"no demos, near starts {args.push_near_starts:g}", *args.push_nodemo_set]
                ),
                {"near_starts": args.push_near_starts, **parse_sets(args.push_nodemo_set)},
            ),
            "demos": (
                f"{args.push_demos} demos (DART {args.push_demo_noise:g}), {args.push_actor} actor, "
                f"restarts {args.push_demo_restarts:g}",
                {
                    "demos": str(demos),
                    "demo_restarts": args.push_demo_restarts,
                    "actor": args.push_actor,
                    **parse_sets(args.push_set),
                },
            ),
        }
        push_runs = [
            run_ours(
                seed,
                args.push_minutes,
                args.push_eval_every,
                args.eval_episodes,
                0.9,
                task="push",
                label=label,
                judge="truth",
                workers=args.push_workers,
                **options,
            )
            for seed in args.seeds[:1]
            for name, (label, options) in variants.items()
            if args.push_runs in ("both", name)
        ]
        rows = []
        for r in push_runs:
            pts = ", ".join(f"{t / 60:.0f} min {s:.0%}/{g:.0%}" for t, _, s, g in r.curve[1::2])
            est = r.first_at(2, 0.9)
            rows.append(
                [
                    r.method,
                    r.seed,
                    fmt_time(est[0] if est else None, args.push_minutes * 60),
                    fmt_time(r.time_to_target, args.push_minutes * 60),
                    f"{r.best(2):.0%} / {r.best(3):.0%}",
                    f"{r.median(2):.0%} / {r.median(3):.0%}",
                    f"{r.steps_per_s:.0f}",
                    pts,
                ]
            )
        sections.append(
            f"RoverPush, {args.push_minutes:g} min per run (target: >= 90 % within 60 min, with "
            "and without demos), judged on the robot's box estimate (as the env and the Pi judge "
            "it) and on the twin's ground truth (the estimate can be gamed); curve = training "
            "minutes: deterministic success on the estimate / on ground truth, every other "
            "evaluation.\n\n"
            + table(
                [
                    "run",
                    "seed",
                    "s to 90% (estimate)",
                    "s to 90% (truth)",
                    "best est / truth",
                    "median est / truth",
                    "steps/s",
                    "curve",
                ],
                rows,
            )
        )
        raw["push"] = [asdict(r) for r in push_runs]

    body = "\n\n".join(sections)
    notes = (
        f"Load at start: {load_before}. Two shared cores: absolute times are noisy, the "
        "interleaved ratio less so. Ours: agent.her defaults (8 envs in 1 worker process, "
        "utd 0.5, batch 256, 128x128, gamma 0.98, rewards on the twin's ground truth with a "
        "privileged critic; with demos: 10k BC pretraining steps, 20k critic warm-up steps, "
        "BC weight 10, no Q-filter; the discrete actor learns by CRR). SB3: rl-zoo FetchReach "
        "SAC settings (rewards on the estimate), "
        "torch.set_num_threads(1) for both. Reach time to target is judged on the estimate "
        "(odometry) for both, as the env judges it."
    )
    print(body)
    print(json.dumps(raw)[:2000])
    if not args.no_append and body:
        append("her", body, notes)


if __name__ == "__main__":
    main()
