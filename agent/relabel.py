"""Hindsight goal relabeling, vectorized in numpy, shared by GC-BC/DAgger and SAC+HER.

Goal-conditioned data is judged against the goal it was recorded for, but every trajectory also
*reaches* the goals it visits. Relabeling replaces the recorded goal of a sampled step ``t`` by an
achieved goal of the same episode (Andrychowicz et al. 2017, "Hindsight Experience Replay"; for
imitation: Ghosh et al. 2019 / Lynch et al. 2019) and recomputes reward and success through
:func:`hardware.tasks.compute_reward`. Which features are achieved / desired goals comes from the
spec (:attr:`hardware.spec.Spec.goal_keys`).

Goal strategies (``t`` and the returned indices address one episode's achieved goals
``ag[start..end]``, inclusive):

=========== ===========================================================================
``none``    the recorded goal (nothing changes)
``final``   ``end``
``future``  uniform over ``t + min_offset .. end``
``geometric`` ``t + k`` with ``k ~ Geometric(1 - gamma)`` (so ``k >= 1``), clipped to ``end``
``episode`` uniform over ``start .. end``
=========== ===========================================================================

For BC (:class:`Relabeler` on :class:`agent.data.EpisodeStore`) ``ag[t]`` is the achieved goal of
the observation at step ``t``, and ``min_offset=0`` (the issue's "uniform over t..T"). An off-policy
learner whose ``ag`` also holds the episode's final next-observation calls :func:`goal_indices`
with ``start=1, min_offset=1`` so a relabeled goal is one the transition or a later one produced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from hardware.errors import Sim2PiError
from hardware.spec import Spec
from hardware.tasks import compute_reward, is_success

STRATEGIES = ("none", "final", "future", "geometric", "episode")


def goal_indices(
    strategy: str,
    t: np.ndarray,
    end: np.ndarray,
    rng: np.random.Generator,
    *,
    start: np.ndarray | int = 0,
    gamma: float = 0.98,
    min_offset: int = 0,
) -> np.ndarray:
    """Indices of the achieved goals to relabel steps ``t`` with (see the module table).

    Args:
        strategy: one of :data:`STRATEGIES` except ``none``.
        t: [B] int, current step indices.
        end: [B] int, index of the last achieved goal of each step's episode (``>= t``).
        rng: numpy random generator.
        start: first achieved-goal index of each episode (``episode`` strategy).
        gamma: discount of the ``geometric`` strategy; mean offset is ``1 / (1 - gamma)``.
        min_offset: smallest offset of ``future`` (0 for BC, 1 for off-policy transitions).
    """
    t = np.asarray(t, np.int64)
    end = np.asarray(end, np.int64)
    if strategy == "final":
        return end.copy()
    if strategy == "future":
        lo = np.minimum(t + min_offset, end)
        return lo + (rng.random(t.shape) * (end - lo + 1)).astype(np.int64)
    if strategy == "geometric":
        if not 0.0 <= gamma < 1.0:
            raise Sim2PiError(f"geometric relabeling needs 0 <= gamma < 1, got {gamma}")
        return np.minimum(t + rng.geometric(1.0 - gamma, size=t.shape), end)
    if strategy == "episode":
        s = np.broadcast_to(np.asarray(start, np.int64), t.shape)
        return s + (rng.random(t.shape) * (end - s + 1)).astype(np.int64)
    raise Sim2PiError(f"unknown relabeling strategy '{strategy}'; choose one of {list(STRATEGIES)}")


@dataclass
class RelabelConfig:
    """How goals are relabeled."""

    strategy: str = field(
        default="future",
        metadata={"doc": "goal strategy: none | final | future | geometric | episode"},
    )
    ratio: float = field(
        default=0.8, metadata={"doc": "fraction of sampled steps whose goal is relabeled (0..1)"}
    )
    gamma: float = field(
        default=0.98,
        metadata={
            "doc": "geometric strategy: offset ~ Geometric(1 - gamma), mean 1/(1-gamma) steps"
        },
    )

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise Sim2PiError(
                f"unknown relabeling strategy '{self.strategy}'; choose one of {list(STRATEGIES)}"
            )
        if not 0.0 <= self.ratio <= 1.0:
            raise Sim2PiError(f"relabel ratio must be in [0, 1], got {self.ratio}")
        if not 0.0 <= self.gamma < 1.0:
            raise Sim2PiError(f"relabel gamma must be in [0, 1), got {self.gamma}")


class Relabeled(NamedTuple):
    """Goals (and their reward/success) for a batch of sampled steps."""

    desired_goal: np.ndarray  # [B, goal_dim] float32
    reward: np.ndarray  # [B] float32: compute_reward(achieved at t+1, goal) (recorded if kept)
    success: np.ndarray  # [B] bool
    relabeled: np.ndarray  # [B] bool: goal replaced by an achieved goal
    goal_index: np.ndarray  # [B] int64 flat index of the achieved goal used (-1 if kept)
    reached: np.ndarray  # [B] bool: the goal is already achieved at step t itself


class Relabeler:
    """Relabels steps of flat, episode-contiguous arrays (as in :class:`agent.data.EpisodeStore`).

    ``achieved[i]`` / ``desired[i]`` are the goals of flat step ``i``; ``first[i]`` / ``last[i]``
    the flat indices of the first / last step of its episode. Reward and success of step ``i`` are
    judged on the achieved goal after its action, ``achieved[min(i + 1, last[i])]`` (the dataset
    stores no observation after the last action; its last achieved goal stands in).
    """

    def __init__(self, spec: Spec, config: RelabelConfig | None = None):
        self.config = config or RelabelConfig()
        self.task = spec.task
        if spec.goal_keys is None and self.config.strategy != "none":
            raise Sim2PiError(
                f"task '{spec.task}' is not goal-conditioned (its spec has no "
                "achieved_goal/desired_goal); use --relabel none"
            )
        self.goal_keys = spec.goal_keys

    def __call__(
        self,
        idx: np.ndarray,
        achieved: np.ndarray,
        desired: np.ndarray,
        reward: np.ndarray,
        success: np.ndarray,
        first: np.ndarray,
        last: np.ndarray,
        rng: np.random.Generator,
        allowed: np.ndarray | None = None,
    ) -> Relabeled:
        """Relabel the flat steps ``idx`` [B]; recorded arrays are left untouched.

        ``allowed`` [N] bool marks steps that may be relabeled: hindsight is only valid when the
        stored action is the one that produced the later achieved goals (demos, not DAgger steps
        whose label is the expert's action for the recorded goal while the learner drove).
        """
        cfg = self.config
        idx = np.asarray(idx, np.int64)
        goal = desired[idx].astype(np.float32, copy=True)
        rew = np.asarray(reward[idx], np.float32).copy()
        suc = np.asarray(success[idx]).astype(bool)
        mask = np.zeros(idx.shape, bool)
        gidx = np.full(idx.shape, -1, np.int64)
        a_now = achieved[idx]
        if cfg.strategy == "none" or cfg.ratio <= 0.0:
            return Relabeled(goal, rew, suc, mask, gidx, is_success(self.task, a_now, goal))
        mask = rng.random(idx.shape) < cfg.ratio
        if allowed is not None:
            mask &= np.asarray(allowed, bool)[idx]
        if mask.any():
            sel = idx[mask]
            g = goal_indices(cfg.strategy, sel, last[sel], rng, start=first[sel], gamma=cfg.gamma)
            gidx[mask] = g
            goal[mask] = achieved[g]
            nxt = np.minimum(sel + 1, last[sel])
            rew[mask] = compute_reward(self.task, achieved[nxt], goal[mask], None)
            suc[mask] = is_success(self.task, achieved[nxt], goal[mask])
        return Relabeled(goal, rew, suc, mask, gidx, is_success(self.task, a_now, goal))
