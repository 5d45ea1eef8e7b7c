"""DAgger: roll out the learner, label the states it visits with the scripted expert, aggregate,
retrain (Ross, Gordon & Bagnell 2011), with DART-style noise at collection (Laskey et al. 2017) and
human-gated data merged with a weight (HG-DAgger, Kelly et al. 2019).

Reads top to bottom: config → initial data → BC → rounds of (collect, aggregate, retrain).

- Round ``i`` (1-based) executes the expert's action with probability ``beta_i = beta * decay^(i-1)``
  per step, else the learner's; Gaussian noise of std ``dart_noise`` is added to the executed action.
  Every visited state is labeled with the expert's clean action.
- Aggregation keeps all data; training continues the same network and optimizer for
  ``steps_per_round`` gradient steps per round (normalization statistics stay those of the initial
  data, so the inputs the network learned on do not shift).
- ``--human DIR`` merges a recorded dataset (e.g. from the Pi with operator take-overs); its episodes
  with an ``intervention`` flag are sampled ``intervention_weight`` times as often.

Collection seeds are ``DAGGER_SEED_BASE + ...``: inside the training range of
:mod:`agent.rollout`, never overlapping the demos collected from seed 0 or held-out evaluation.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agent.checkpoint import save_checkpoint
from agent.configs import DaggerConfig
from agent.data import EpisodeStore, load_dataset
from agent.gcbc import RunLogger, Trainer, build_policy, eval_scalars
from agent.rollout import TRAIN_SEED_BASE, collect_episodes, make_env
from hardware.errors import Sim2PiError

log = logging.getLogger(__name__)

DAGGER_SEED_BASE = TRAIN_SEED_BASE + 200_000
__all__ = ["DAGGER_SEED_BASE", "DaggerConfig", "train_dagger"]


def train_dagger(
    cfg: DaggerConfig,
    *,
    env_factory: Callable[[bool], Any] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Run DAgger; returns per-round metrics. The final policy is saved in ``cfg.out``."""
    from agent.evaluate import evaluate

    torch.set_num_threads(cfg.threads)
    if cfg.resume:
        raise Sim2PiError("DAgger does not support --resume; start a new --out")
    run = Path(cfg.out)
    if (run / "checkpoint.json").exists():
        raise Sim2PiError(f"'{run}' already holds a run; choose another --out")
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps({"algo": "dagger", **cfg.to_dict()}, indent=2))

    # -- initial data ----------------------------------------------------------------------------
    spec = None
    episodes: list[dict[str, np.ndarray]] = []
    sources = []
    if cfg.data:
        spec, episodes, _ = load_dataset(cfg.data)
        sources.append(str(cfg.data))
    task = cfg.task or (spec.task if spec is not None else None)
    if task is None:
        raise Sim2PiError("DAgger needs --task or --data (to know which task to collect)")
    env = env_factory(False) if env_factory else make_env(task, cfg.description)
    env_spec = env.unwrapped.spec_
    if spec is not None:
        env_spec.check(spec)
    spec = env_spec
    if cfg.demos:
        eps, st = collect_episodes(
            task, cfg.demos, seed=TRAIN_SEED_BASE, noise=cfg.demo_noise, env=env
        )
        episodes += eps
        sources.append(f"{cfg.demos} expert demos (noise {cfg.demo_noise})")
        log.info(
            "collected %d expert demos, expert success %.0f%%",
            cfg.demos,
            100 * np.mean([s.success for s in st]),
        )
    if not episodes:
        raise Sim2PiError("no initial data: pass --data DIR or --demos N")
    store = EpisodeStore(spec, episodes, intervention_weight=cfg.intervention_weight)
    if cfg.human:
        hspec, heps, _ = load_dataset(cfg.human)
        spec.check(hspec)
        store.extend(heps)
        sources.append(f"human: {cfg.human}")
    if spec.goal_keys is None:
        cfg.relabel = "none"

    # -- initial BC ------------------------------------------------------------------------------
    policy = build_policy(spec, cfg.policy_config(), store, cfg.seed)
    total = cfg.steps + cfg.rounds * cfg.steps_per_round
    trainer = Trainer.from_config(policy, store, cfg, total_steps=total)
    logger = RunLogger(run)
    history: list[dict[str, Any]] = []
    dataset = "; ".join(sources)

    def fit(n: int, label: str) -> None:
        t0, s0 = time.perf_counter(), trainer.step
        for i in range(n):
            scalars = trainer.train_step()
            if trainer.step % cfg.log_every == 0:
                logger.scalars(scalars, trainer.step)
            if progress is not None:
                progress(label, i + 1, n)
        log.info(
            "%s: %d steps, %.0f steps/s",
            label,
            n,
            (trainer.step - s0) / max(time.perf_counter() - t0, 1e-9),
        )

    def judge(round_: int) -> dict[str, Any]:
        if not cfg.eval_episodes:
            return {"round": round_, "data_steps": len(store), "episodes": store.num_episodes}
        res = evaluate(
            policy,
            episodes=cfg.eval_episodes,
            goals="valid",
            description=cfg.description,
            env_factory=env_factory,
        )
        logger.scalars(
            {**eval_scalars(res), "charts/dagger_round": round_, "charts/data_steps": len(store)},
            trainer.step,
        )
        log.info(
            "round %d: success %.1f%% (95%% CI %.1f-%.1f%%), %d steps of data",
            round_,
            100 * res["success_rate"],
            100 * res["ci95"][0],
            100 * res["ci95"][1],
            len(store),
        )
        return {
            "round": round_,
            "data_steps": len(store),
            "episodes": store.num_episodes,
            **{k: res[k] for k in ("success_rate", "ci95", "mean_final_distance")},
        }

    try:
        fit(cfg.steps, "bc")
        history.append(judge(0))
        for r in range(1, cfg.rounds + 1):
            beta = cfg.beta_at(r)
            seed = DAGGER_SEED_BASE + (r - 1) * cfg.episodes_per_round
            new, st = collect_episodes(
                task,
                cfg.episodes_per_round,
                seed=seed,
                noise=cfg.dart_noise,
                policy=policy,
                beta=beta,
                env=env,
            )
            store.extend(new, relabel=False)
            log.info(
                "round %d: beta %.2f, learner+expert success while collecting %.0f%%",
                r,
                beta,
                100 * np.mean([s.success for s in st]),
            )
            fit(cfg.steps_per_round, f"round {r}")
            history.append({**judge(r), "beta": beta})
            save_checkpoint(
                run,
                policy,
                algo="dagger",
                step=trainer.step,
                train_config=cfg.to_dict(),
                dataset=dataset,
                seed=cfg.seed,
                eval_results={"rounds": history},
            )
        save_checkpoint(
            run,
            policy,
            algo="dagger",
            step=trainer.step,
            train_config=cfg.to_dict(),
            dataset=dataset,
            seed=cfg.seed,
            eval_results={**history[-1], "rounds": history},
        )
    finally:
        logger.close()
        env.close()
    policy.eval()
    return {"rounds": history, "run": str(run), "policy": policy}
