"""The checkpoint format shared by every trainer (GC-BC, DAgger, SAC+HER), ``sim2pi eval`` and
``sim2pi export``.

A run directory ``RUN/`` holds the latest checkpoint::

    RUN/model.safetensors   the policy's state dict (weights + normalization buffers)
    RUN/checkpoint.json     {"format": "sim2pi-checkpoint", "version": 1, "algo", "step",
                             "policy": PolicyConfig, "spec": Spec.to_dict(), "robot_hash",
                             "stats": {key: {"mean", "std"}}, "train": trainer config,
                             "dataset", "commit", "seed", "eval": {...}, "created"}
    RUN/resume.pt           optional trainer state for --resume (optimizer, RNG states, extras)
    RUN/config.json         the resolved trainer config (written by the trainer at start)
    RUN/tb/                 TensorBoard scalars

Usage (any trainer, e.g. SAC+HER saving its actor)::

    from agent.checkpoint import save_checkpoint, load_policy
    save_checkpoint(run, actor, algo="sac_her", step=step, train_config=asdict(cfg),
                    dataset=None, seed=cfg.seed, trainer_state={"critic": critic.state_dict()})
    policy, meta = load_policy(run)      # a ready Policy in eval mode + CheckpointMeta

Files are written to temporary names and renamed, so a crash never leaves a half checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from agent.policies import Policy, PolicyConfig
from deploy.fileio import atomic_write_json, jsonable
from hardware.errors import Sim2PiError
from hardware.spec import Spec

log = logging.getLogger(__name__)

FORMAT = "sim2pi-checkpoint"
VERSION = 1
WEIGHTS = "model.safetensors"
META = "checkpoint.json"
RESUME = "resume.pt"


@dataclass
class CheckpointMeta:
    """Everything in ``checkpoint.json`` besides the weights."""

    algo: str
    step: int
    policy: PolicyConfig
    spec: Spec
    robot_hash: str
    stats: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    commit: str | None = None
    seed: int | None = None
    eval: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "algo": self.algo,
            "step": self.step,
            "policy": self.policy.to_dict(),
            "spec": self.spec.to_dict(),
            "robot_hash": self.robot_hash,
            "stats": self.stats,
            "train": self.train,
            "dataset": self.dataset,
            "commit": self.commit,
            "seed": self.seed,
            "eval": self.eval,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckpointMeta:
        if d.get("format") != FORMAT:
            raise Sim2PiError(
                f"not a sim2pi checkpoint (format={d.get('format')!r}); pass the "
                "run directory written by `sim2pi train ...`"
            )
        if int(d.get("version", 0)) > VERSION:
            raise Sim2PiError(
                f"checkpoint version {d['version']} is newer than this sim2pi "
                f"(reads <= {VERSION}); upgrade sim2pi"
            )
        return cls(
            algo=d["algo"],
            step=int(d["step"]),
            policy=PolicyConfig.from_dict(d["policy"]),
            spec=Spec.from_dict(d["spec"]),
            robot_hash=d.get("robot_hash", ""),
            stats=d.get("stats", {}),
            train=d.get("train", {}),
            dataset=d.get("dataset"),
            commit=d.get("commit"),
            seed=d.get("seed"),
            eval=d.get("eval", {}),
            created=d.get("created", ""),
        )


def git_commit() -> str | None:
    """The short commit hash of the source tree (``+dirty`` if modified), or None."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            text=True,
            capture_output=True,
            timeout=10,
        )
        if out.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            text=True,
            capture_output=True,
            timeout=10,
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def save_checkpoint(
    run: str | Path,
    policy: Policy,
    *,
    algo: str,
    step: int,
    train_config: dict[str, Any] | None = None,
    dataset: str | None = None,
    seed: int | None = None,
    eval_results: dict[str, Any] | None = None,
    trainer_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``policy`` (+ optional resume state) into ``run``; returns the run directory.

    ``trainer_state`` (optimizer state dicts, RNG states, step counters, ...) goes to
    ``resume.pt`` and is only read back by :func:`load_trainer_state` for ``--resume``.
    """
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    stats = {k: {"mean": m.tolist(), "std": s.tolist()} for k, (m, s) in policy.get_stats().items()}
    meta = CheckpointMeta(
        algo=algo,
        step=int(step),
        policy=policy.config,
        spec=policy.spec,
        robot_hash=policy.spec.robot_hash,
        stats=stats,
        train=jsonable(train_config or {}),
        dataset=dataset,
        commit=git_commit(),
        seed=seed,
        eval=jsonable(eval_results or {}),
        created=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    state = {k: v.detach().contiguous().clone() for k, v in policy.state_dict().items()}
    tmp = run / (WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"format": FORMAT, "algo": algo})
    os.replace(tmp, run / WEIGHTS)
    if trainer_state is not None:
        tmp = run / (RESUME + ".tmp")
        torch.save(trainer_state, tmp)
        os.replace(tmp, run / RESUME)
    atomic_write_json(run / META, meta.to_dict())
    log.debug("saved checkpoint step %d to %s", step, run)
    return run


def read_meta(run: str | Path) -> CheckpointMeta:
    """Read ``checkpoint.json`` of a run directory (no torch weights are loaded)."""
    run = Path(run)
    path = run / META
    if not path.exists():
        raise Sim2PiError(
            f"no checkpoint in '{run}' (missing {META}); train one with "
            "`sim2pi train gcbc --data DIR --out RUN` or pass the right RUN"
        )
    return CheckpointMeta.from_dict(json.loads(path.read_text()))


def load_policy(run: str | Path) -> tuple[Policy, CheckpointMeta]:
    """Rebuild the policy of a run directory, in eval mode, with its weights and statistics."""
    run = Path(run)
    meta = read_meta(run)
    policy = Policy(meta.spec, meta.policy)
    weights = run / WEIGHTS
    if not weights.exists():
        raise Sim2PiError(
            f"'{run}' has {META} but no {WEIGHTS}; the run was interrupted before "
            "its first checkpoint — train again"
        )
    missing, unexpected = policy.load_state_dict(load_file(str(weights)), strict=False)
    if missing or unexpected:
        raise Sim2PiError(
            f"checkpoint weights do not fit the saved policy config (missing "
            f"{missing}, unexpected {unexpected}); the checkpoint is corrupt"
        )
    policy.eval()
    return policy, meta


def load_trainer_state(run: str | Path) -> dict[str, Any] | None:
    """The ``trainer_state`` saved with the latest checkpoint, or None if there is none."""
    path = Path(run) / RESUME
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def update_eval(run: str | Path, results: dict[str, Any]) -> None:
    """Merge evaluation figures into ``checkpoint.json`` (export copies them into the bundle)."""
    run = Path(run)
    d = json.loads((run / META).read_text())
    d.setdefault("eval", {}).update(jsonable(results))
    atomic_write_json(run / META, d)
