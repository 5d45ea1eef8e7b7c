"""Vectorized collection with several envs per worker process.

gymnasium's ``AsyncVectorEnv`` runs one env per process and pays roughly 0.4 ms of inter-process
traffic per call here — more than a rover step costs — so it barely beats a single process. This
vector env gives each worker process a *batch* of envs: one message per worker per step carries all
its envs' actions and returns their stacked observations, so the traffic is paid once per batch.
Observations, actions, rewards, flags and ``is_success`` travel through shared memory; the pipe only
carries a few bytes per step (no pickling of arrays).

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


class _Shared:
    """Named shared-memory arrays for all envs; each worker writes only its own rows."""

    def __init__(
        self, layout: dict[str, tuple[tuple[int, ...], str]], names: dict[str, str] | None = None
    ):
        from multiprocessing import shared_memory

        self.layout = layout
        self.shms: dict[str, Any] = {}
        self.arrays: dict[str, np.ndarray] = {}
        for key, (shape, dtype) in layout.items():
            nbytes = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
            if names is None:
                shm = shared_memory.SharedMemory(create=True, size=nbytes)
            else:
                shm = shared_memory.SharedMemory(name=names[key])
            self.shms[key] = shm
            self.arrays[key] = np.ndarray(shape, dtype=dtype, buffer=shm.buf)

    @property
    def names(self) -> dict[str, str]:
        return {k: shm.name for k, shm in self.shms.items()}

    def close(self, unlink: bool = False) -> None:
        self.arrays = {}
        for shm in self.shms.values():
            shm.close()
            if unlink:
                try:
                    shm.unlink()
                except FileNotFoundError:
                    pass
        self.shms = {}


def _obs_keys(space: gym.Space) -> list[str]:
    if isinstance(space, gym.spaces.Dict):
        return list(space.spaces)
    return [""]


def _layout(
    obs_space: gym.Space, act_space: gym.Space, n: int, info_keys: tuple[str, ...]
) -> dict[str, tuple[tuple[int, ...], str]]:
    lay: dict[str, tuple[tuple[int, ...], str]] = {}
    spaces = obs_space.spaces if isinstance(obs_space, gym.spaces.Dict) else {"": obs_space}
    for k, sp in spaces.items():
        if not isinstance(sp, gym.spaces.Box):
            raise Sim2PiError(
                f"BatchedVectorEnv supports Box / Dict-of-Box observations; '{k}' is {sp}"
            )
        lay["obs/" + k] = ((n, *sp.shape), str(sp.dtype))
        lay["final/" + k] = ((n, *sp.shape), str(sp.dtype))
    if not isinstance(act_space, gym.spaces.Box):
        raise Sim2PiError(f"BatchedVectorEnv supports Box actions; got {act_space}")
    lay["act"] = ((n, *act_space.shape), str(act_space.dtype))
    lay["rew"] = ((n,), "float64")
    lay["term"] = ((n,), "bool")
    lay["trunc"] = ((n,), "bool")
    lay["ended"] = ((n,), "bool")
    for k in info_keys:
        lay["info/" + k] = ((n,), "float64")
        lay["has/" + k] = ((n,), "bool")
        lay["finalinfo/" + k] = ((n,), "float64")
    return lay


def call_env(env: gym.Env, name: str, *args: Any, **kwargs: Any) -> Any:
    """``name(*args, **kwargs)`` on ``env``, found through its wrappers; an attribute that is not
    callable is returned as it is."""
    attr = env.get_wrapper_attr(name)
    return attr(*args, **kwargs) if callable(attr) else attr


def _worker(
    conn: Connection,
    env_fns: list[EnvFn],
    rows: list[int],
    n_total: int,
    info_keys: tuple[str, ...],
) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    envs: list[gym.Env] = []
    shared: _Shared | None = None
    try:
        envs = [fn() for fn in env_fns]
        conn.send(("ok", (envs[0].observation_space, envs[0].action_space)))
        cmd, names = conn.recv()
        layout = _layout(envs[0].observation_space, envs[0].action_space, n_total, info_keys)
        shared = _Shared(layout, names)
        a = shared.arrays
        keys = _obs_keys(envs[0].observation_space)

        def put(prefix: str, row: int, o: Any) -> None:
            if keys == [""]:
                a[prefix + "/"][row] = o
            else:
                for k in keys:
                    a[prefix + "/" + k][row] = o[k]

        def put_info(prefix: str, row: int, inf: dict[str, Any]) -> None:
            for k in info_keys:
                present = k in inf
                if prefix == "info":
                    a["has/" + k][row] = present
                a[prefix + "/" + k][row] = float(inf[k]) if present else 0.0

        conn.send(("ok", None))
        while True:
            cmd, data = conn.recv()
            if cmd == "reset":
                seeds, options = data
                for env, row, seed in zip(envs, rows, seeds):
                    o, inf = env.reset(seed=seed, options=options)
                    put("obs", row, o)
                    put_info("info", row, inf)
                    a["ended"][row] = False
                conn.send(("ok", None))
            elif cmd == "step":
                for env, row in zip(envs, rows):
                    o, r, te, tr, inf = env.step(a["act"][row])
                    a["rew"][row] = r
                    a["term"][row] = te
                    a["trunc"][row] = tr
                    put_info("info", row, inf)
                    ended = bool(te or tr)
                    a["ended"][row] = ended
                    if ended:
                        put("final", row, o)
                        put_info("finalinfo", row, inf)
                        o, _ = env.reset()
                    put("obs", row, o)
                conn.send(("ok", None))
            elif cmd == "call":
                name, args, kwargs = data
                conn.send(("ok", [call_env(env, name, *args, **kwargs) for env in envs]))
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
        if shared is not None:
            shared.close()
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
        self.info_keys = tuple(info_keys)
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        self._shared: _Shared | None = None
        for idx in self._slices:
            parent, child = ctx.Pipe()
            p = ctx.Process(
                target=_worker,
                args=(child, [env_fns[i] for i in idx], idx, self.num_envs, self.info_keys),
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
        self._keys = _obs_keys(self.single_observation_space)
        self._shared = _Shared(
            _layout(
                self.single_observation_space,
                self.single_action_space,
                self.num_envs,
                self.info_keys,
            )
        )
        for conn in self._conns:
            conn.send(("attach", self._shared.names))
        for conn in self._conns:
            self._recv(conn)
        self.closed = False

    @classmethod
    def from_id(
        cls, env_id: str, num_envs: int, num_workers: int | None = None, **kwargs: Any
    ) -> BatchedVectorEnv:
        """Make ``num_envs`` copies of a registered env (``kwargs`` go to ``gym.make``)."""
        return cls([make_env_fn(env_id, **kwargs)] * num_envs, num_workers)

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
        for conn in self._conns:
            self._recv(conn)
        return self._read("obs"), self._infos(final=False)

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: Any) -> None:
        """Send the actions; the workers simulate while the caller does other work (a learner's
        gradient steps), then :meth:`step_wait` collects the result."""
        assert self._shared is not None
        a = self._shared.arrays
        a["act"][...] = np.asarray(actions).reshape(a["act"].shape)
        for conn in self._conns:
            conn.send(("step", None))

    def step_wait(self) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        assert self._shared is not None
        a = self._shared.arrays
        for conn in self._conns:
            self._recv(conn)
        return (
            self._read("obs"),
            a["rew"].copy(),
            a["term"].copy(),
            a["trunc"].copy(),
            self._infos(final=True),
        )

    def _read(self, prefix: str) -> Any:
        assert self._shared is not None
        a = self._shared.arrays
        if self._keys == [""]:
            return a[prefix + "/"].copy()
        return {k: a[prefix + "/" + k].copy() for k in self._keys}

    def _infos(self, final: bool) -> dict[str, Any]:
        assert self._shared is not None
        a = self._shared.arrays
        out: dict[str, Any] = {}
        for k in self.info_keys:
            has = a["has/" + k]
            if has.any():
                out[k] = a["info/" + k].copy()
                out["_" + k] = has.copy()
        ended = a["ended"]
        if final and ended.any():
            fin = self._read("final")
            fo = np.empty(self.num_envs, dtype=object)
            fi = np.empty(self.num_envs, dtype=object)
            for i in np.flatnonzero(ended):
                fo[i] = {k: fin[k][i] for k in self._keys} if self._keys != [""] else fin[i]
                fi[i] = {k: a["finalinfo/" + k][i] for k in self.info_keys}
            out["final_obs"], out["_final_obs"] = fo, ended.copy()
            out["final_info"], out["_final_info"] = fi, ended.copy()
        return out

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """``name(*args, **kwargs)`` on every env, found through its wrappers (an attribute that is
        not callable is returned as it is); the results in env order."""
        for conn in self._conns:
            conn.send(("call", (name, args, kwargs)))
        return tuple(r for c in self._conns for r in self._recv(c))

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
        if self._shared is not None:
            self._shared.close(unlink=True)
            self._shared = None


def _make(env_id: str, kwargs: dict[str, Any]) -> gym.Env:
    if env_id.startswith("sim2pi/"):
        import sim  # noqa: F401  (registers the sim2pi envs in the worker)

    return gym.make(env_id, **kwargs)


def make_env_fn(env_id: str, **kwargs: Any) -> EnvFn:
    """A picklable factory for a registered env (imports ``sim`` so the sim2pi ids exist)."""
    return functools.partial(_make, env_id, kwargs)


__all__ = ["BatchedVectorEnv", "call_env", "make_env_fn"]
