"""Batched goal-env stepping for the HER learner: in-process, or in worker processes that step
while the learner does gradient updates.

A rover step in PyBullet costs less than gymnasium ``AsyncVectorEnv``'s per-call inter-process
traffic (~0.4 ms), so one process per env buys little on two cores. Here each worker process owns a
*batch* of envs (one message per worker per step), and the interface is split into
:meth:`GoalEnvBatch.step_async` / :meth:`GoalEnvBatch.step_wait`: the learner sends the actions,
runs its gradient steps while the worker simulates, then collects the result. On two cores that
overlaps simulation with learning instead of alternating them.

Observations are flattened to float32 arrays per step (``observation``, ``achieved_goal``,
``desired_goal`` and ``true_achieved_goal``); episodes auto-reset in the same step, and the last
observation of an ended episode is returned in ``final_obs`` / ``final_achieved_goal`` /
``final_true_achieved_goal``.

``true_achieved_goal`` is the simulator's ground truth of what the achieved goal estimates (the
twin's ``info["true_achieved_goal"]``: the true box for push, where the achieved goal is the
camera's noisy, sometimes stale estimate). The learner can be rewarded on it while the policy keeps
reading only on-robot sensors (see :class:`agent.her_config.HerConfig` ``reward_on``). Envs without
ground truth give their achieved goal again. Every env is wrapped in :class:`TrueGoal` to carry it
through the observation dict, so it also survives the worker processes' autoreset.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from hardware.errors import Sim2PiError
from sim.vector import call_env, make_env_fn

__all__ = [
    "TRUE_AG",
    "Curriculum",
    "StartStates",
    "GoalObs",
    "LevelSchedule",
    "LocalEnvs",
    "ProcessEnvs",
    "StepResult",
    "TrueGoal",
    "make_env_batch",
    "make_env_fn",
    "poll_curriculum",
    "with_start_states",
]

log = logging.getLogger(__name__)

EnvFn = Callable[[], gym.Env]
TRUE_AG = "true_achieved_goal"


class GoalObs(NamedTuple):
    """The flat arrays of a batch of goal-env observations."""

    observation: np.ndarray  # [N, obs_dim]
    achieved_goal: np.ndarray  # [N, goal_dim]
    desired_goal: np.ndarray  # [N, goal_dim]
    true_achieved_goal: np.ndarray | None = None  # [N, goal_dim]; None: same as achieved_goal

    @property
    def truth(self) -> np.ndarray:
        """``true_achieved_goal``, or ``achieved_goal`` where there is no ground truth."""
        return self.achieved_goal if self.true_achieved_goal is None else self.true_achieved_goal


class StepResult(NamedTuple):
    """One batched step (episodes that ended were already reset; see the module docstring)."""

    obs: GoalObs  # next observation (the next episode's first one where done)
    reward: np.ndarray  # [N] float32
    terminated: np.ndarray  # [N] bool
    truncated: np.ndarray  # [N] bool
    success: np.ndarray  # [N] bool: info["is_success"] of this step
    final_obs: np.ndarray  # [N, obs_dim]: last observation where done (else next obs)
    final_achieved_goal: np.ndarray  # [N, goal_dim]
    final_true_achieved_goal: np.ndarray  # [N, goal_dim]


class TrueGoal(gym.Wrapper):
    """Adds ``info["true_achieved_goal"]`` (or a copy of the achieved goal when the env has no
    ground truth) to a goal env's observation dict as ``"true_achieved_goal"``."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.observation_space
        _check_goal_space(space)
        assert isinstance(space, gym.spaces.Dict)
        self.observation_space = gym.spaces.Dict(
            {**space.spaces, TRUE_AG: space.spaces["achieved_goal"]}
        )

    @staticmethod
    def _add(obs: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
        truth = info.get(TRUE_AG)
        ag = obs["achieved_goal"]
        out = dict(obs)
        out[TRUE_AG] = np.asarray(ag if truth is None else truth, np.float32).reshape(np.shape(ag))
        return out

    def reset(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return self._add(obs, info), info

    def step(self, action: Any) -> tuple[dict[str, Any], Any, bool, bool, dict[str, Any]]:
        obs, rew, term, trunc, info = self.env.step(action)
        return self._add(obs, info), rew, term, trunc, info


def _wrapped(env_fn: EnvFn, wrapper: Callable[..., gym.Env], *args: Any) -> gym.Env:
    return wrapper(env_fn(), *args)


def all_true(info: dict[str, Any], keys: Sequence[str]) -> bool:
    """Whether every ``info[k]`` of ``keys`` is true (a missing key is false)."""
    return all(bool(info.get(k, False)) for k in keys)


class EndOnSuccess(gym.Wrapper):
    """Ends an episode (``terminated``) at the first step where every ``info[k]`` of ``keys`` is
    true, e.g. where the true box reaches the goal. Wrap an env built not to end episodes on its
    own success test, so training episodes end where the learner's rewards say the task is done."""

    def __init__(self, env: gym.Env, keys: Sequence[str]):
        super().__init__(env)
        self.keys = tuple(keys)

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, rew, term, trunc, info = self.env.step(action)
        term = bool(term) or all_true(info, self.keys)
        return obs, rew, term, trunc, info


def end_on_success(env_fn: EnvFn, keys: Sequence[str]) -> EnvFn:
    """Picklable env factory: ``env_fn()`` wrapped in :class:`EndOnSuccess`."""
    return functools.partial(_wrapped, env_fn, EndOnSuccess, tuple(keys))


class Curriculum:
    """A start sampler whose difficulty the learner sets: ``sample(rng, level) -> start`` for a
    ``level`` in [0, 1] (e.g. :func:`sim.backend.push_reverse_start`). Picklable if ``sample`` is
    a module-level function, so it travels to the env worker processes."""

    def __init__(self, sample: Callable[[np.random.Generator, float], dict[str, Any]]):
        self.sample = sample
        self.level = 0.0

    def __call__(self, rng: np.random.Generator) -> dict[str, Any]:
        return self.sample(rng, self.level)


class LevelSchedule:
    """When to make a :class:`Curriculum` harder: the level rises by ``step`` (up to 1) once at
    least ``min_episodes`` curriculum episodes have ended since the last change and their success
    rate is at least ``threshold`` (:class:`StartStates` counts only the episodes that started at
    the level in force when they end)."""

    def __init__(self, threshold: float, step: float = 0.1, min_episodes: int = 50):
        self.threshold, self.step, self.min_episodes = threshold, step, min_episodes
        self.level = 0.0
        self.episodes = self.successes = 0

    def update(self, episodes: int, successes: int) -> bool:
        """Add counts from :meth:`StartStates.curriculum_stats`; True if the level rose."""
        self.episodes += episodes
        self.successes += successes
        if self.level >= 1.0 or self.episodes < self.min_episodes:
            return False
        if self.successes < self.threshold * self.episodes:
            return False
        self.level = min(1.0, round(self.level + self.step, 6))
        self.episodes = self.successes = 0
        return True

    @property
    def rate(self) -> float:
        """Success rate of the curriculum episodes at the current level so far (0 if none)."""
        return self.successes / self.episodes if self.episodes else 0.0


def poll_curriculum(envs: Any, schedule: LevelSchedule) -> bool:
    """Collect the curriculum counts of every env of ``envs`` (:class:`LocalEnvs` or
    :class:`ProcessEnvs` of :class:`StartStates`-wrapped envs) into ``schedule``; if the level rose,
    set it in every env. Returns whether it rose."""
    counts = np.sum(envs.call("curriculum_stats"), axis=0)
    if not schedule.update(int(counts[0]), int(counts[1])):
        return False
    envs.call("set_curriculum_level", schedule.level)
    return True


StartGroup = tuple[Sequence[dict[str, Any]] | Curriculum, float]
"""Start states (``reset(options={"start": ...})`` dicts) or a :class:`Curriculum`, and the share of
resets drawn from them."""


class StartStates(gym.Wrapper):
    """Starts a share of the episodes from given states instead of the env's random ones.

    ``groups`` is a list of ``(states, prob)``: with probability ``prob`` a reset passes
    ``options={"start": s}`` for a uniformly drawn ``s`` of ``states`` to an env that supports it
    (the rover envs; see ``sim.envs.RoverEnv.reset``). Uses: states a demonstration visited (the
    "resets to demonstration states" of Nair et al. 2018) and an exploration curriculum
    (:func:`sim.backend.push_starts_near_box`). The remaining resets are the env's own.

    ``states`` may also be a :class:`Curriculum`, which draws a fresh start at its current level.
    The wrapper counts its curriculum episodes and those that succeeded (every ``info[k]`` of
    ``success_keys`` true at one step, as the learner's terminal transitions judge them); an
    episode that started before its level changed is not counted.
    :meth:`curriculum_stats` hands the counts over and :meth:`set_curriculum_level` sets the
    level, also from the learner's process through ``call`` on the worker processes.
    """

    def __init__(
        self,
        env: gym.Env,
        groups: Sequence[StartGroup],
        success_keys: Sequence[str] = ("is_success",),
    ):
        super().__init__(env)
        self.groups = [
            (st if isinstance(st, Curriculum) else list(st), float(p)) for st, p in groups if p > 0
        ]
        if any(not isinstance(st, Curriculum) and not st for st, _ in self.groups):
            raise Sim2PiError("StartStates: a group with a share > 0 has no start states")
        if sum(p for _, p in self.groups) > 1.0 + 1e-9:
            raise Sim2PiError(
                f"StartStates: the shares add up to more than 1 ({[p for _, p in self.groups]})"
            )
        self.success_keys = tuple(success_keys)
        self._rng: np.random.Generator | None = None
        # the curriculum of the episode under way (None: not a curriculum start) and its level
        self._curriculum: Curriculum | None = None
        self._start_level = 0.0
        self._hit = False
        self._episodes = 0
        self._successes = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        if self._rng is None or kwargs.get("seed") is not None:
            self._rng = np.random.default_rng(kwargs.get("seed"))
        self._curriculum, self._hit = None, False
        if kwargs.get("options") is None:
            u = self._rng.random()
            for states, p in self.groups:
                if u < p:
                    if isinstance(states, Curriculum):
                        start = states(self._rng)
                        self._curriculum, self._start_level = states, states.level
                    else:
                        start = states[int(self._rng.integers(len(states)))]
                    kwargs["options"] = {"start": start}
                    break
                u -= p
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, rew, term, trunc, info = self.env.step(action)
        if self._curriculum is not None:
            self._hit = self._hit or all_true(info, self.success_keys)
            if term or trunc:
                if self._curriculum.level == self._start_level:
                    self._episodes += 1
                    self._successes += int(self._hit)
                self._curriculum = None
        return obs, rew, term, trunc, info

    def set_curriculum_level(self, level: float) -> None:
        """Set the level of every :class:`Curriculum` group (clipped to [0, 1])."""
        for states, _ in self.groups:
            if isinstance(states, Curriculum):
                states.level = float(np.clip(level, 0.0, 1.0))

    def curriculum_stats(self) -> tuple[int, int]:
        """``(episodes, successes)`` of curriculum starts since the last call; resets the counts."""
        out = (self._episodes, self._successes)
        self._episodes = self._successes = 0
        return out


def with_start_states(
    env_fn: EnvFn, groups: Sequence[StartGroup], success_keys: Sequence[str] = ("is_success",)
) -> EnvFn:
    """Picklable env factory: ``env_fn()`` wrapped in :class:`StartStates`."""
    return functools.partial(_wrapped, env_fn, StartStates, list(groups), tuple(success_keys))


def _check_goal_space(space: gym.Space) -> None:
    if not isinstance(space, gym.spaces.Dict) or not {
        "observation",
        "achieved_goal",
        "desired_goal",
    } <= set(space.spaces):
        raise Sim2PiError(
            "HER needs a goal env: a Dict observation with 'observation', "
            f"'achieved_goal' and 'desired_goal'; got {space}"
        )


def _flat(o: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One :class:`TrueGoal`-wrapped observation as flat arrays, in :class:`GoalObs` order."""
    keys = ("observation", "achieved_goal", "desired_goal", TRUE_AG)
    a, b, c, d = (np.asarray(o[k], np.float32).ravel() for k in keys)
    return a, b, c, d


class LocalEnvs:
    """``len(env_fns)`` goal envs stepped one after another in this process."""

    def __init__(self, env_fns: Sequence[EnvFn]):
        self.envs = [TrueGoal(fn()) for fn in env_fns]
        self.observation_space = self.envs[0].observation_space
        self.action_space = self.envs[0].action_space
        self.num_envs = len(self.envs)
        self._actions: np.ndarray | None = None

    def reset(self, seed: int | None = None) -> GoalObs:
        rows = [
            _flat(env.reset(seed=None if seed is None else seed + i)[0])
            for i, env in enumerate(self.envs)
        ]
        return GoalObs(*(np.stack(c) for c in zip(*rows)))

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> StepResult:
        if self._actions is None:
            raise Sim2PiError("step_wait() without step_async()")
        n = self.num_envs
        obs, fin = [], []
        rew = np.zeros(n, np.float32)
        term = np.zeros(n, bool)
        trunc = np.zeros(n, bool)
        succ = np.zeros(n, bool)
        for i, (env, a) in enumerate(zip(self.envs, self._actions)):
            o, r, te, tr, info = env.step(a)
            rew[i], term[i], trunc[i] = r, te, tr
            succ[i] = bool(info.get("is_success", False))
            f = _flat(o)
            fin.append(f)
            if te or tr:
                o, _ = env.reset()
                f = _flat(o)
            obs.append(f)
        self._actions = None
        o3 = GoalObs(*(np.stack(c) for c in zip(*obs)))
        f3 = [np.stack(c) for c in zip(*fin)]
        return StepResult(o3, rew, term, trunc, succ, f3[0], f3[1], f3[3])

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """``name(*args, **kwargs)`` on every env (found through its wrappers); the results."""
        return tuple(call_env(env, name, *args, **kwargs) for env in self.envs)

    def compute_reward(self, achieved: np.ndarray, desired: np.ndarray, info: Any) -> np.ndarray:
        goal_env: Any = self.envs[0].unwrapped
        return goal_env.compute_reward(achieved, desired, info)

    def close(self) -> None:
        for env in self.envs:
            env.close()


class ProcessEnvs:
    """Goal envs split over ``num_workers`` processes, each stepping its share as one batch.

    A thin adapter over :class:`sim.vector.BatchedVectorEnv` (the one multi-env worker mechanism,
    shared-memory transport): it only flattens the goal observations into :class:`StepResult`.
    """

    def __init__(self, env_fns: Sequence[EnvFn], num_workers: int = 1, context: str = "forkserver"):
        from sim.vector import BatchedVectorEnv

        self._venv = BatchedVectorEnv(
            [functools.partial(_wrapped, fn, TrueGoal) for fn in env_fns],
            num_workers,
            context=context,
        )
        self.observation_space = self._venv.single_observation_space
        self.action_space = self._venv.single_action_space
        self.num_envs = self._venv.num_envs
        self._fn0 = env_fns[0]
        self._reward_env: gym.Env | None = None

    def reset(self, seed: int | None = None) -> GoalObs:
        obs, _ = self._venv.reset(seed=seed)
        return _goal_obs(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._venv.step_async(np.asarray(actions, np.float32))

    def step_wait(self) -> StepResult:
        obs, rew, term, trunc, info = self._venv.step_wait()
        o3 = _goal_obs(obs)
        succ = np.zeros(self.num_envs, bool)
        if "is_success" in info:
            succ = info["_is_success"] & (info["is_success"] != 0)
        final_obs, final_ag = o3.observation.copy(), o3.achieved_goal.copy()
        final_tag = o3.truth.copy()
        for i in np.flatnonzero(info.get("_final_obs", np.zeros(self.num_envs, bool))):
            final_obs[i], final_ag[i], _, final_tag[i] = _flat(info["final_obs"][i])
        return StepResult(
            o3, rew.astype(np.float32), term, trunc, succ, final_obs, final_ag, final_tag
        )

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """``name(*args, **kwargs)`` on every env in the workers (found through its wrappers)."""
        return self._venv.call(name, *args, **kwargs)

    def compute_reward(self, achieved: np.ndarray, desired: np.ndarray, info: Any) -> np.ndarray:
        # One env in this process only for its (pure, vectorized) reward function.
        if self._reward_env is None:
            self._reward_env = self._fn0()
        goal_env: Any = self._reward_env.unwrapped
        return goal_env.compute_reward(achieved, desired, info)

    def close(self) -> None:
        self._venv.close()
        if self._reward_env is not None:
            self._reward_env.close()
            self._reward_env = None


def _goal_obs(obs: dict[str, np.ndarray]) -> GoalObs:
    n = len(obs["observation"])
    keys = ("observation", "achieved_goal", "desired_goal", TRUE_AG)
    return GoalObs(*(np.asarray(obs[k], np.float32).reshape(n, -1) for k in keys))


GoalEnvBatch = LocalEnvs | ProcessEnvs


def make_env_batch(env_fns: Sequence[EnvFn], num_workers: int) -> GoalEnvBatch:
    """``num_workers == 0``: step in this process; otherwise in that many worker processes."""
    if num_workers <= 0:
        return LocalEnvs(env_fns)
    return ProcessEnvs(env_fns, num_workers)
