"""Vectorized collection with several envs per worker process.

gymnasium's ``AsyncVectorEnv`` runs one env per process and pays roughly 0.4 ms of inter-process
traffic per call here — more than a rover step costs — so it barely beats a single process. This
vector env gives each worker process a *batch* of envs: one message per worker per step carries all
its envs' actions and returns their stacked observations, so the traffic is paid once per batch.

Autoreset follows gymnasium's ``SAME_STEP`` mode: when an env ends, the step returns the first
observation of its next episode and puts the last one in ``info["final_obs"]`` (with the mask
``info["_final_obs"]``), which is what off-policy learners with HER need.

Example::

    from sim.vector import BatchedVectorEnv
    venv = BatchedVectorEnv.from_id("sim2pi/RoverReach-v0", num_envs=8, num_workers=2)
    obs, info = venv.reset(seed=0)
    obs, rew, term, trunc, info = venv.step(venv.action_space.sample())
"""

from __future__ import annotations

import functools
import logging
import multiprocessing as mp
import os
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from hardware.errors import Sim2PiError

log = logging.getLogger(__name__)

EnvFn = Callable[[], gym.Env]


def _stack(items: list[Any]) -> Any:
    if isinstance(items[0], dict):
        return {k: np.stack([it[k] for it in items]) for k in items[0]}
    return np.stack(items)


def _index(batch: Any, i: int) -> Any:
    if isinstance(batch, dict):
        return {k: v[i] for k, v in batch.items()}
    return batch[i]


def _worker(conn: Connection, env_fns: list[EnvFn], info_keys: tuple[str, ...]) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    envs: list[gym.Env] = []
    try:
        envs = [fn() for fn in env_fns]
        conn.send(("ok", (envs[0].observation_space, envs[0].action_space)))
        while True:
            cmd, data = conn.recv()
            if cmd == "reset":
                seeds, options = data
                out = [env.reset(seed=s, options=options) for env, s in zip(envs, seeds)]
                infos = [{k: inf[k] for k in info_keys if k in inf} for _, inf in out]
                conn.send(("ok", (_stack([o for o, _ in out]), infos)))
            elif cmd == "step":
                obs_l, rew, term, trunc, infos = [], [], [], [], []
                for env, a in zip(envs, data):
                    o, r, te, tr, inf = env.step(a)
                    small = {k: inf[k] for k in info_keys if k in inf}
                    if te or tr:
                        small["final_obs"] = o
                        small["final_info"] = {k: inf[k] for k in info_keys if k in inf}
                        o, _ = env.reset()
                    obs_l.append(o)
                    rew.append(r)
                    term.append(te)
                    trunc.append(tr)
                    infos.append(small)
                conn.send(
                    (
                        "ok",
                        (
                            _stack(obs_l),
                            np.asarray(rew, np.float64),
                            np.asarray(term, bool),
                            np.asarray(trunc, bool),
                            infos,
                        ),
                    )
                )
            elif cmd == "call":
                name, args, kwargs = data
                res = []
                for env in envs:
                    attr = getattr(env.unwrapped, name)
                    res.append(attr(*args, **kwargs) if callable(attr) else attr)
                conn.send(("ok", res))
            elif cmd == "close":
                conn.send(("ok", None))
                break
    except (KeyboardInterrupt, EOFError):
        pass
    except Exception:  # report to the parent instead of dying silently
        try:
            conn.send(("error", traceback.format_exc()))
        except Exception:
            pass
    finally:
        for env in envs:
            env.close()


class BatchedVectorEnv(VectorEnv):
    """``num_envs`` envs split evenly over ``num_workers`` processes (see the module docstring)."""

    def __init__(
        self,
        env_fns: Sequence[EnvFn],
        num_workers: int | None = None,
        *,
        info_keys: Sequence[str] = ("is_success",),
        context: str = "forkserver",
    ):
        if not env_fns:
            raise Sim2PiError("BatchedVectorEnv needs at least one env function")
        self.num_envs = len(env_fns)
        workers = num_workers or min(os.cpu_count() or 1, self.num_envs)
        workers = max(1, min(workers, self.num_envs))
        self.num_workers = workers
        self._slices = [list(range(self.num_envs))[i::workers] for i in range(workers)]
        # contiguous blocks keep env order simple
        sizes = [len(s) for s in self._slices]
        starts = np.cumsum([0, *sizes])
        self._slices = [list(range(starts[i], starts[i + 1])) for i in range(workers)]
        ctx: Any = mp.get_context(context)
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for idx in self._slices:
            parent, child = ctx.Pipe()
            p = ctx.Process(
                target=_worker,
                args=(child, [env_fns[i] for i in idx], tuple(info_keys)),
                daemon=True,
            )
            p.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(p)
        spaces = [self._recv(c) for c in self._conns]
        self.single_observation_space, self.single_action_space = spaces[0]
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}
        self.closed = False

    @classmethod
    def from_id(
        cls, env_id: str, num_envs: int, num_workers: int | None = None, **kwargs: Any
    ) -> BatchedVectorEnv:
        """Make ``num_envs`` copies of a registered env (``kwargs`` go to ``gym.make``)."""
        import sim  # noqa: F401  (registers the sim2pi envs in this process)

        fn = functools.partial(_make, env_id, kwargs)
        return cls([fn] * num_envs, num_workers)

    def _recv(self, conn: Connection) -> Any:
        try:
            status, payload = conn.recv()
        except EOFError:
            status, payload = "error", "the worker process exited (see its traceback above)"
        if status != "ok":
            self.close()
            raise Sim2PiError(f"a vector-env worker failed:\n{payload}")
        return payload

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
        for conn, idx in zip(self._conns, self._slices):
            conn.send(("reset", ([seeds[i] for i in idx], options)))
        parts = [self._recv(c) for c in self._conns]
        obs = self._concat([p[0] for p in parts])
        infos = [inf for p in parts for inf in p[1]]
        return obs, self._merge_infos(infos)

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions)
        for conn, idx in zip(self._conns, self._slices):
            conn.send(("step", actions[idx[0] : idx[-1] + 1]))
        parts = [self._recv(c) for c in self._conns]
        obs = self._concat([p[0] for p in parts])
        rew = np.concatenate([p[1] for p in parts])
        term = np.concatenate([p[2] for p in parts])
        trunc = np.concatenate([p[3] for p in parts])
        infos = [inf for p in parts for inf in p[4]]
        return obs, rew, term, trunc, self._merge_infos(infos)

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        for conn in self._conns:
            conn.send(("call", (name, args, kwargs)))
        return tuple(r for c in self._conns for r in self._recv(c))

    def _concat(self, parts: list[Any]) -> Any:
        if isinstance(parts[0], dict):
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return np.concatenate(parts)

    def _merge_infos(self, infos: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        keys = {k for inf in infos for k in inf}
        for k in keys:
            mask = np.array([k in inf for inf in infos])
            if k in ("final_obs", "final_info"):
                arr = np.empty(self.num_envs, dtype=object)
                for i, inf in enumerate(infos):
                    arr[i] = inf.get(k)
                out[k] = arr
            else:
                vals = [inf.get(k, 0) for inf in infos]
                out[k] = np.asarray(vals)
            out["_" + k] = mask
        return out

    def close_extras(self, **kwargs: Any) -> None:
        for conn in getattr(self, "_conns", []):
            try:
                conn.send(("close", None))
                conn.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
        for p in getattr(self, "_procs", []):
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
        self._conns, self._procs = [], []


def _make(env_id: str, kwargs: dict[str, Any]) -> gym.Env:
    import sim  # noqa: F401  (registers the sim2pi envs in the worker)

    return gym.make(env_id, **kwargs)


__all__ = ["BatchedVectorEnv", "_index"]
