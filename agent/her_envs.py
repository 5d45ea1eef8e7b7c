"""Batched goal-env stepping for the HER learner: in-process, or in worker processes that step
while the learner does gradient updates.

A rover step in PyBullet costs less than gymnasium ``AsyncVectorEnv``'s per-call inter-process
traffic (~0.4 ms), so one process per env buys little on two cores. Here each worker process owns a
*batch* of envs (one message per worker per step), and the interface is split into
:meth:`GoalEnvBatch.step_async` / :meth:`GoalEnvBatch.step_wait`: the learner sends the actions,
runs its gradient steps while the worker simulates, then collects the result. On two cores that
overlaps simulation with learning instead of alternating them.

Observations are flattened to three float32 arrays per step (``observation``, ``achieved_goal``,
``desired_goal``); episodes auto-reset in the same step, and the last observation of an ended
episode is returned in ``final_obs`` / ``final_achieved_goal``.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing as mp
import os
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from hardware.errors import Sim2PiError

log = logging.getLogger(__name__)

EnvFn = Callable[[], gym.Env]


class GoalObs(NamedTuple):
    """The flat arrays of a batch of goal-env observations."""

    observation: np.ndarray  # [N, obs_dim]
    achieved_goal: np.ndarray  # [N, goal_dim]
    desired_goal: np.ndarray  # [N, goal_dim]


class StepResult(NamedTuple):
    """One batched step (episodes that ended were already reset; see the module docstring)."""

    obs: GoalObs  # next observation (the next episode's first one where done)
    reward: np.ndarray  # [N] float32
    terminated: np.ndarray  # [N] bool
    truncated: np.ndarray  # [N] bool
    success: np.ndarray  # [N] bool: info["is_success"] of this step
    final_obs: np.ndarray  # [N, obs_dim]: last observation where done (else next obs)
    final_achieved_goal: np.ndarray  # [N, goal_dim]


def _flat(o: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.asarray(o["observation"], np.float32).ravel(),
        np.asarray(o["achieved_goal"], np.float32).ravel(),
        np.asarray(o["desired_goal"], np.float32).ravel(),
    )


class LocalEnvs:
    """``len(env_fns)`` goal envs stepped one after another in this process."""

    def __init__(self, env_fns: Sequence[EnvFn]):
        self.envs = [fn() for fn in env_fns]
        space = self.envs[0].observation_space
        if not isinstance(space, gym.spaces.Dict) or not {
            "observation",
            "achieved_goal",
            "desired_goal",
        } <= set(space.spaces):
            raise Sim2PiError(
                "HER needs a goal env: a Dict observation with 'observation', "
                f"'achieved_goal' and 'desired_goal'; got {space}"
            )
        self.observation_space = space
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
        return StepResult(o3, rew, term, trunc, succ, f3[0], f3[1])

    def compute_reward(self, achieved: np.ndarray, desired: np.ndarray, info: Any) -> np.ndarray:
        goal_env: Any = self.envs[0].unwrapped
        return goal_env.compute_reward(achieved, desired, info)

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _worker(conn: Connection, env_fns: list[EnvFn]) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    envs: LocalEnvs | None = None
    try:
        envs = LocalEnvs(env_fns)
        conn.send(("ok", (envs.observation_space, envs.action_space)))
        while True:
            cmd, data = conn.recv()
            if cmd == "step":
                envs.step_async(data)
                conn.send(("ok", envs.step_wait()))
            elif cmd == "reset":
                conn.send(("ok", envs.reset(data)))
            elif cmd == "close":
                conn.send(("ok", None))
                break
    except (KeyboardInterrupt, EOFError):
        pass
    except Exception:
        try:
            conn.send(("error", traceback.format_exc()))
        except Exception:
            pass
    finally:
        if envs is not None:
            envs.close()


class ProcessEnvs:
    """Goal envs split over ``num_workers`` processes, each stepping its share as one batch."""

    def __init__(self, env_fns: Sequence[EnvFn], num_workers: int = 1, context: str = "forkserver"):
        n = len(env_fns)
        self._reward_env: gym.Env | None = None
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        workers = max(1, min(num_workers, n))
        bounds = np.linspace(0, n, workers + 1).round().astype(int)
        self._slices = [(int(bounds[i]), int(bounds[i + 1])) for i in range(workers)]
        ctx: Any = mp.get_context(context)
        for lo, hi in self._slices:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(child, list(env_fns[lo:hi])), daemon=True)
            p.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(p)
        spaces = [self._recv(c) for c in self._conns]
        self.observation_space, self.action_space = spaces[0]
        self.num_envs = n
        self._fn0 = env_fns[0]

    def _recv(self, conn: Connection) -> Any:
        try:
            status, payload = conn.recv()
        except EOFError:
            status, payload = "error", "the worker process exited"
        if status != "ok":
            self.close()
            raise Sim2PiError(f"an env worker failed:\n{payload}")
        return payload

    def reset(self, seed: int | None = None) -> GoalObs:
        for c, (lo, _) in zip(self._conns, self._slices):
            c.send(("reset", None if seed is None else seed + lo))
        parts = [self._recv(c) for c in self._conns]
        return GoalObs(*(np.concatenate(x) for x in zip(*parts)))

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions, np.float32)
        for c, (lo, hi) in zip(self._conns, self._slices):
            c.send(("step", actions[lo:hi]))

    def step_wait(self) -> StepResult:
        parts: list[StepResult] = [self._recv(c) for c in self._conns]
        if len(parts) == 1:
            return parts[0]
        obs = GoalObs(*(np.concatenate(x) for x in zip(*[p.obs for p in parts])))
        rest = [np.concatenate(x) for x in zip(*[p[1:] for p in parts])]
        return StepResult(obs, *rest)

    def compute_reward(self, achieved: np.ndarray, desired: np.ndarray, info: Any) -> np.ndarray:
        # One env in this process only for its (pure, vectorized) reward function.
        if self._reward_env is None:
            self._reward_env = self._fn0()
        goal_env: Any = self._reward_env.unwrapped
        return goal_env.compute_reward(achieved, desired, info)

    def close(self) -> None:
        for c in self._conns:
            try:
                c.send(("close", None))
                c.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
        for p in self._procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
        self._conns, self._procs = [], []
        if self._reward_env is not None:
            self._reward_env.close()
            self._reward_env = None


GoalEnvBatch = LocalEnvs | ProcessEnvs


def make_env_fn(env_id: str, **kwargs: Any) -> EnvFn:
    """A picklable factory for a registered env (imports ``sim`` so the sim2pi ids exist)."""
    return functools.partial(_make, env_id, kwargs)


def _make(env_id: str, kwargs: dict[str, Any]) -> gym.Env:
    if env_id.startswith("sim2pi/"):
        import sim  # noqa: F401  (registers the sim2pi envs in this process)
    return gym.make(env_id, **kwargs)


def make_env_batch(env_fns: Sequence[EnvFn], num_workers: int) -> GoalEnvBatch:
    """``num_workers == 0``: step in this process; otherwise in that many worker processes."""
    if num_workers <= 0:
        return LocalEnvs(env_fns)
    return ProcessEnvs(env_fns, num_workers)
