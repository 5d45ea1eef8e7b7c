"""Rollouts in the gymnasium envs: expert demonstrations, learner episodes (DAgger) and evaluation.

One function, :func:`rollout`, runs one episode with any mix of actors:

- ``policy``: a :class:`agent.policies.Policy` fed a history window (filled with copies of the
  first observation at episode start, as the runtime does);
- ``expert``: a scripted expert ``act(policy_obs, info) -> action`` (``sim.experts``);
- ``beta``: probability per step of executing the expert's action instead of the policy's (DAgger's
  mixture; ``beta=1`` is pure expert collection);
- ``noise``: DART-style Gaussian noise added to the *executed* action (Laskey et al. 2017), while
  the stored label stays the clean expert action.

The returned episode has exactly the keys of a dataset episode (see :mod:`agent.data`), so rollouts
and datasets go through the same training code. ``action`` is the label (the expert's clean action
when an expert is given, else the executed one); ``action_applied`` is what the env received.

Seeds: data collection uses env seeds from :data:`TRAIN_SEED_BASE`, evaluation during training from
:data:`VALID_SEED_BASE`, and held-out evaluation from :data:`HELDOUT_SEED_BASE`; the ranges never
overlap for fewer than 500 000 episodes each.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hardware.spec import Spec
from hardware.tasks import goal_distance, is_success, task_info

log = logging.getLogger(__name__)

TRAIN_SEED_BASE = 0
VALID_SEED_BASE = 500_000
HELDOUT_SEED_BASE = 1_000_000


class HistoryBuffer:
    """The last H observations of an episode as one window ``{key: [1, H, *shape]}``."""

    def __init__(self, spec: Spec, history: int):
        self.keys = list(spec.observation)
        self.history = history
        self._frames: deque[dict[str, np.ndarray]] = deque(maxlen=history)

    def reset(self, obs: dict[str, np.ndarray]) -> None:
        """Start an episode: the window is H copies of the first observation."""
        self._frames.clear()
        for _ in range(self.history):
            self._frames.append(obs)

    def push(self, obs: dict[str, np.ndarray]) -> None:
        self._frames.append(obs)

    def window(self) -> dict[str, np.ndarray]:
        return {k: np.stack([f[k] for f in self._frames])[None] for k in self.keys}


@dataclass
class EpisodeStats:
    """Outcome of one rollout."""

    seed: int | None
    success: bool
    steps: int
    steps_to_success: int | None
    final_distance: float  # goal distance of the achieved goal (goal tasks), else info's
    true_final_distance: float | None  # ground-truth distance from the env's info, if any
    trajectory: np.ndarray  # [T+1, 2] true (else odometry) x, y of the robot
    goal: np.ndarray | None  # [2] the desired goal (goal tasks)
    frames: list[np.ndarray] = field(default_factory=list)  # rendered frames if requested
    # ground-truth success at the last step (the twin's info), if any: the push task's success is
    # judged on the box *estimate* from the camera, which can be centimetres off the true box
    true_success: bool | None = None


def make_env(task: str, description: Any = "rover", *, render: bool = False, **kwargs: Any) -> Any:
    """``gymnasium.make`` of a task's env (importing ``sim`` registers them)."""
    import gymnasium as gym

    import sim  # noqa: F401  (registers the envs)

    return gym.make(
        task_info(task).env_id,
        description=description,
        render_mode="rgb_array" if render else None,
        **kwargs,
    )


def _xy(obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
    if "true_pose" in info:
        return np.asarray(info["true_pose"], np.float32)[:2]
    return np.asarray(obs["observation"], np.float32)[:2]


def rollout(
    env: Any,
    spec: Spec,
    *,
    seed: int | None = None,
    policy: Any = None,
    expert: Any = None,
    beta: float = 0.0,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
    render: bool = False,
    max_steps: int | None = None,
) -> tuple[dict[str, np.ndarray], EpisodeStats]:
    """Run one episode; returns (episode dict, stats). See the module docstring."""
    if policy is None and expert is None:
        raise ValueError("rollout needs a policy, an expert, or both")
    rng = rng or np.random.default_rng(seed)
    history = policy.config.history if policy is not None else 1
    buf = HistoryBuffer(spec, history)
    obs, info = env.reset(seed=seed)
    if expert is not None and hasattr(expert, "reset"):
        expert.reset()
    buf.reset(obs)
    keys = list(spec.observation)
    rec: dict[str, list[Any]] = {
        k: []
        for k in [*keys, "action", "action_applied", "reward", "success", "done", "intervention"]
    }
    traj = [_xy(obs, info)]
    frames = [env.render()] if render else []
    steps_to_success: int | None = None
    limit = max_steps or getattr(env.unwrapped, "max_steps", None) or task_info(spec.task).max_steps
    t = 0
    success = False
    while True:
        label = None
        if expert is not None:
            label = np.asarray(expert.act(obs, info), np.float32)
        use_expert = policy is None or (expert is not None and beta > 0 and rng.random() < beta)
        if use_expert:
            act = label
        else:
            with torch.no_grad():
                act = policy.act(buf.window())[0]
        act = np.asarray(act, np.float32)
        if noise > 0:
            act = act + rng.normal(0.0, noise, act.shape).astype(np.float32)
        act = np.clip(act, -1.0, 1.0)
        for k in keys:
            rec[k].append(obs[k])
        rec["action"].append(label if label is not None else act)
        rec["action_applied"].append(act)
        rec["intervention"].append(False)
        obs, reward, terminated, truncated, info = env.step(act)
        t += 1
        ok = bool(info.get("is_success", False))
        rec["reward"].append(float(reward))
        rec["success"].append(ok)
        traj.append(_xy(obs, info))
        if render:
            frames.append(env.render())
        if ok and steps_to_success is None:
            steps_to_success = t
        success = success or ok
        done = terminated or truncated or t >= limit
        rec["done"].append(bool(done))
        buf.push(obs)
        if done:
            break
    ep = {k: np.asarray(v) for k, v in rec.items()}
    for k in keys:
        ep[k] = ep[k].astype(np.uint8 if spec.observation[k].is_image else np.float32)
    goals = spec.goal_keys
    if goals is not None:
        final = float(goal_distance(obs[goals[0]], obs[goals[1]]))
        goal = np.asarray(obs[goals[1]], np.float32)
        success = success or bool(is_success(spec.task, obs[goals[0]], obs[goals[1]]))
    else:
        final = float(info.get("true_distance", np.nan))
        goal = None
    td = info.get("true_distance")
    ts = info.get("true_success")
    stats = EpisodeStats(
        seed=seed,
        success=bool(success),
        steps=t,
        steps_to_success=steps_to_success,
        final_distance=final,
        true_final_distance=None if td is None else float(td),
        trajectory=np.asarray(traj),
        goal=goal,
        frames=frames,
        true_success=None if ts is None else bool(ts),
    )
    return ep, stats


def collect_episodes(
    task: str,
    n: int,
    *,
    description: Any = "rover",
    seed: int = TRAIN_SEED_BASE,
    noise: float = 0.0,
    policy: Any = None,
    beta: float = 1.0,
    only_success: bool = False,
    progress: Callable[[int], None] | None = None,
    env: Any = None,
) -> tuple[list[dict[str, np.ndarray]], list[EpisodeStats]]:
    """Collect ``n`` episodes with the scripted expert (``beta=1``) or a policy/expert mixture.

    ``noise`` (DART) is added to the executed action while the stored label stays the expert's
    clean action (a "noisy expert" whose mistakes come with corrections). Env seeds are
    ``seed, seed + 1, ...``. With ``only_success`` failed episodes are dropped (and not replaced).
    """
    from sim.experts import make_expert

    own_env = env is None
    env = env or make_env(task, description)
    spec = env.unwrapped.spec_
    expert = make_expert(task, env.unwrapped.desc, noise=noise, seed=seed)
    rng = np.random.default_rng(seed)
    eps, stats = [], []
    try:
        for i in range(n):
            ep, st = rollout(
                env,
                spec,
                seed=seed + i,
                policy=policy,
                expert=expert,
                beta=beta,
                noise=noise,
                rng=rng,
            )
            if progress is not None:
                progress(i + 1)
            stats.append(st)
            if only_success and not st.success:
                continue
            eps.append(ep)
    finally:
        if own_env:
            env.close()
    return eps, stats
