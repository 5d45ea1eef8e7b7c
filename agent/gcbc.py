"""Goal-conditioned behavioral cloning with hindsight relabeling (GC-BC).

Reads top to bottom: config → data → network (:mod:`agent.policies`) → the training loop.

Each step samples steps uniformly from the episodes (episodes with human interventions weighted by
``intervention_weight``), relabels a fraction ``relabel_ratio`` of their goals with an achieved goal
of the same episode (:mod:`agent.relabel`), cuts history windows of length ``history`` and
minimizes the head's imitation loss (MSE, mixture NLL or per-dimension cross-entropy). Goal-
conditioned imitation with hindsight goals after Ghosh et al. 2019 ("Learning to Reach Goals via
Iterated Supervised Learning") and Lynch et al. 2019 ("Learning Latent Plans from Play").

Training also accepts in-memory episodes (e.g. :func:`agent.rollout.collect_episodes`) instead of
a dataset path; both go through :class:`agent.data.EpisodeStore`.

Run directory: see :mod:`agent.checkpoint`. TensorBoard tags: ``losses/bc``, ``charts/lr``,
``charts/relabeled_fraction``, ``charts/steps_per_second``, ``charts/success_rate``,
``charts/success_ci_low``, ``charts/mean_final_distance``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agent.checkpoint import load_policy, load_trainer_state, read_meta, save_checkpoint
from agent.configs import GCBCConfig, PolicyConfig
from agent.data import EpisodeStore, compute_stats, load_dataset
from agent.policies import Policy
from agent.relabel import RelabelConfig, Relabeler
from hardware.errors import Sim2PiError
from hardware.spec import Spec

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    policy: Policy
    run: Path
    step: int
    metrics: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------


class Trainer:
    """Gradient steps of a policy on an :class:`EpisodeStore` with relabeling (GC-BC, DAgger)."""

    def __init__(
        self,
        policy: Policy,
        store: EpisodeStore,
        relabel: RelabelConfig,
        *,
        lr: float,
        weight_decay: float,
        grad_clip: float,
        batch_size: int,
        total_steps: int,
        seed: int,
        skip_reached: bool = True,
        image_shift: int = 0,
    ):
        self.policy = policy
        self.store = store
        self.relabeler = Relabeler(store.spec, relabel)
        self.batch_size = batch_size
        self.skip_reached = skip_reached
        self.image_shift = image_shift
        self.grad_clip = grad_clip
        self.total_steps = max(1, total_steps)
        self.base_lr = lr
        self.opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=weight_decay)
        self.rng = np.random.default_rng(seed)
        self.step = 0

    @classmethod
    def from_config(
        cls, policy: Policy, store: EpisodeStore, cfg: GCBCConfig, *, total_steps: int
    ) -> Trainer:
        """The trainer a :class:`GCBCConfig` (or a DAgger config, which extends it) describes."""
        return cls(
            policy,
            store,
            cfg.relabel_config(),
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            grad_clip=cfg.grad_clip,
            batch_size=cfg.batch_size,
            total_steps=total_steps,
            seed=cfg.seed,
            skip_reached=cfg.skip_reached,
            image_shift=cfg.image_shift,
        )

    def lr_at(self, step: int) -> float:
        """Cosine decay from ``lr`` to 10 % of it over ``total_steps``."""
        frac = min(1.0, step / self.total_steps)
        return self.base_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    def sample(self) -> tuple[Any, float]:
        """One (relabeled) batch and the fraction of relabeled goals in it."""
        s = self.store
        idx = s.sample_indices(self.batch_size, self.rng)
        goal = weight = None
        frac = 0.0
        if s.spec.goal_keys is not None:
            a, d = s.spec.goal_keys
            r = self.relabeler(
                idx,
                s.data[a],
                s.data[d],
                s.data["reward"],
                s.data["success"],
                s.first,
                s.last,
                self.rng,
                s.relabel_ok,
            )
            goal, frac = r.desired_goal, float(r.relabeled.mean())
            if self.skip_reached:
                # Relabeling makes many steps whose goal is already reached (e.g. turning in
                # place towards a far goal): their action is no lesson for that goal.
                weight = np.where(r.relabeled & r.reached, 0.0, 1.0)
                weight *= len(weight) / max(weight.sum(), 1.0)
        batch = s.batch(idx, self.policy.config.history, goal, weight)
        if self.image_shift > 0:
            for k in s.spec.image_keys:
                batch.obs[k] = torch.from_numpy(
                    random_shift(batch.obs[k].numpy(), self.image_shift, self.rng)
                )
        return batch, frac

    def train_step(self) -> dict[str, float]:
        """One gradient step; returns scalars to log."""
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        batch, frac = self.sample()
        self.policy.train()
        loss = (self.policy.loss(batch.obs, batch.action) * batch.weight).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = 0.0
        if self.grad_clip > 0:
            gnorm = float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.grad_clip))
        self.opt.step()
        self.step += 1
        return {
            "losses/bc": float(loss.detach()),
            "charts/lr": self.opt.param_groups[0]["lr"],
            "charts/relabeled_fraction": frac,
            "losses/grad_norm": gnorm,
        }

    def state(self) -> dict[str, Any]:
        """Everything needed to resume bit-for-bit (optimizer, RNGs, step)."""
        return {
            "optimizer": self.opt.state_dict(),
            "step": self.step,
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state(self, st: dict[str, Any]) -> None:
        self.opt.load_state_dict(st["optimizer"])
        self.step = int(st["step"])
        self.rng.bit_generator.state = st["numpy_rng"]
        torch.set_rng_state(st["torch_rng"])


def random_shift(images: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """Shift every window of images [B, H, h, w, c] by up to ``pad`` pixels (edge-padded, the same
    shift for all frames of a window): the random-shift augmentation of DrQ (Kostrikov et al. 2020),
    which keeps a small CNN from memorizing a few demos."""
    b, _, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    oy = np.asarray(rng.integers(0, 2 * pad + 1, size=b))
    ox = np.asarray(rng.integers(0, 2 * pad + 1, size=b))
    rows = (oy[:, None] + np.arange(h))[:, None, :, None]
    cols = (ox[:, None] + np.arange(w))[:, None, None, :]
    bi = np.arange(b)[:, None, None, None]
    ti = np.arange(images.shape[1])[None, :, None, None]
    return np.ascontiguousarray(padded[bi, ti, rows, cols])


def build_policy(spec: Spec, pcfg: PolicyConfig, store: EpisodeStore, seed: int) -> Policy:
    """A freshly initialized policy (seeded) with normalization statistics from ``store``."""
    torch.manual_seed(seed)
    policy = Policy(spec, pcfg)
    policy.set_stats(compute_stats(spec, store, pcfg))
    return policy


class RunLogger:
    """TensorBoard scalars + Python logging, with steps/s."""

    def __init__(self, run: Path, enabled: bool = True):
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run / "tb"))
            except ImportError:  # tensorboard is optional at runtime
                log.warning("tensorboard is not installed; scalars go to the log only")
        self._t = time.perf_counter()
        self._step = 0

    def scalars(self, values: Mapping[str, float | None], step: int) -> None:
        now = time.perf_counter()
        if step > self._step:
            values = {**values, "charts/steps_per_second": (step - self._step) / (now - self._t)}
        self._t, self._step = now, step
        for k, v in values.items():
            if self.writer is not None and v is not None:
                self.writer.add_scalar(k, v, step)
        log.debug("step %d %s", step, {k: round(v, 5) for k, v in values.items() if v is not None})

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def eval_scalars(result: dict[str, Any]) -> dict[str, float | None]:
    """TensorBoard scalars of an evaluation result."""
    return {
        "charts/success_rate": result["success_rate"],
        "charts/success_ci_low": result["ci95"][0],
        "charts/mean_final_distance": result["mean_final_distance"],
        "charts/mean_steps_to_success": result["mean_steps_to_success"],
    }


def train(
    cfg: GCBCConfig,
    *,
    episodes: Sequence[dict[str, np.ndarray]] | None = None,
    spec: Spec | None = None,
    env_factory: Callable[[bool], Any] | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    algo: str = "gcbc",
    policy: Policy | None = None,
) -> TrainResult:
    """Train GC-BC on ``cfg.data`` (or in-memory ``episodes`` with their ``spec``).

    ``env_factory(render) -> env`` replaces the registered env for evaluation (toy tasks in tests).
    ``progress(step, total, scalars)`` is called after every step (the CLI's progress bar).
    ``policy`` continues training an existing policy (DAgger) instead of a fresh one.
    """
    torch.set_num_threads(cfg.threads)
    run = Path(cfg.out)
    if episodes is None:
        if cfg.data is None:
            raise Sim2PiError("no training data: pass --data DIR (a dataset from `sim2pi record`)")
        spec, episodes, _ = load_dataset(cfg.data)
        dataset = str(cfg.data)
    else:
        if spec is None:
            raise Sim2PiError("in-memory episodes need their spec")
        dataset = cfg.data or "in-memory"
    if run.exists() and (run / "checkpoint.json").exists() and not cfg.resume and policy is None:
        raise Sim2PiError(
            f"'{run}' already holds a run; pass --resume to continue it or choose another --out"
        )
    run.mkdir(parents=True, exist_ok=True)
    store = EpisodeStore(spec, episodes, intervention_weight=cfg.intervention_weight)
    if cfg.relabel != "none" and spec.goal_keys is None:
        log.info("task '%s' is not goal-conditioned: relabeling is off", spec.task)
        cfg.relabel = "none"
    log.info(
        "GC-BC on %s: %d episodes, %d steps of data, task %s; config %s",
        dataset,
        store.num_episodes,
        len(store),
        spec.task,
        json.dumps(cfg.to_dict()),
    )
    (run / "config.json").write_text(json.dumps({"algo": algo, **cfg.to_dict()}, indent=2))

    pcfg = cfg.policy_config()
    if policy is None:
        policy = build_policy(spec, pcfg, store, cfg.seed)
    trainer = Trainer.from_config(policy, store, cfg, total_steps=cfg.steps)
    if cfg.resume and (run / "checkpoint.json").exists():
        meta = read_meta(run)
        if meta.algo != algo:
            raise Sim2PiError(f"'{run}' holds a '{meta.algo}' run, not '{algo}'")
        loaded, _ = load_policy(run)
        if loaded.config != pcfg:
            raise Sim2PiError(
                f"--resume with a different network: the run has {meta.policy}, "
                f"the options give {pcfg}; use the run's options"
            )
        policy.load_state_dict(loaded.state_dict())
        st = load_trainer_state(run)
        if st is not None:
            trainer.load_state(st)
        log.info("resumed %s at step %d", run, trainer.step)

    logger = RunLogger(run)
    metrics: dict[str, Any] = {}
    last: dict[str, float] = {}
    t0 = time.perf_counter()
    start = trainer.step

    def checkpoint(eval_results: dict[str, Any] | None = None) -> None:
        save_checkpoint(
            run,
            policy,
            algo=algo,
            step=trainer.step,
            train_config=cfg.to_dict(),
            dataset=dataset,
            seed=cfg.seed,
            eval_results=eval_results,
            trainer_state=trainer.state(),
        )

    def run_eval() -> dict[str, Any]:
        from agent.evaluate import evaluate

        res = evaluate(
            policy,
            episodes=cfg.eval_episodes,
            goals="valid",
            description=cfg.description,
            env_factory=env_factory,
        )
        logger.scalars(eval_scalars(res), trainer.step)
        log.info(
            "step %d: success %.1f%% (95%% CI %.1f-%.1f%%) over %d validation episodes",
            trainer.step,
            100 * res["success_rate"],
            100 * res["ci95"][0],
            100 * res["ci95"][1],
            res["episodes"],
        )
        return res

    try:
        while trainer.step < cfg.steps:
            last = trainer.train_step()
            s = trainer.step
            if s % cfg.log_every == 0 or s == cfg.steps:
                logger.scalars(last, s)
            if cfg.eval_every and cfg.eval_episodes and s % cfg.eval_every == 0 and s < cfg.steps:
                metrics["eval"] = run_eval()
            if cfg.save_every and s % cfg.save_every == 0 and s < cfg.steps:
                checkpoint()
            if progress is not None:
                progress(s, cfg.steps, last)
        train_time = time.perf_counter() - t0
        metrics["train_seconds"] = train_time
        metrics["steps_per_second"] = (trainer.step - start) / max(train_time, 1e-9)
        metrics["final_loss"] = last.get("losses/bc")
        if cfg.eval_episodes:
            metrics["eval"] = run_eval()
        checkpoint(metrics.get("eval"))
    finally:
        logger.close()
    log.info(
        "trained %d steps in %.1f s (%.0f steps/s); run in %s",
        trainer.step - start,
        metrics.get("train_seconds", 0.0),
        metrics.get("steps_per_second", 0.0),
        run,
    )
    policy.eval()
    return TrainResult(policy, run, trainer.step, metrics)
