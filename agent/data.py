"""Episodes → torch: one in-memory representation for datasets on disk and fresh env rollouts.

An *episode* is a dict of equally long numpy arrays: the spec's observation keys (``observation``,
``achieved_goal``, ``desired_goal``, ``image``, ``task``) plus ``action`` and the per-step
``reward``, ``success``, ``done``, ``intervention`` — exactly what ``deploy.dataset.Dataset.episode``
returns, and what :func:`agent.rollout.collect_episodes` produces from the env. Both go through
:class:`EpisodeStore`, which concatenates them into flat arrays and cuts history windows:

- a window for step ``t`` holds steps ``t-H+1 .. t``; before the episode start it repeats the first
  observation (what the runtime does at episode start, see docs/architecture.md);
- sampling is uniform over steps, with episodes that contain a human intervention weighted by
  ``intervention_weight`` (DAgger / human-gated data);
- normalization statistics come from :func:`compute_stats` and are stored inside the policy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from hardware.errors import DatasetError, SpecMismatch
from hardware.spec import Spec

log = logging.getLogger(__name__)

Episode = dict[str, np.ndarray]
STEP_KEYS = ("action", "reward", "success", "done", "intervention")
MIN_STD = 1e-2  # features (nearly) constant in the data are left unscaled (std := 1)


def load_dataset(path: str | Path) -> tuple[Spec, list[Episode], dict[str, Any]]:
    """Read a LeRobot v3.0 dataset written by ``deploy.dataset`` into episodes.

    Returns (spec, episodes, info) with info = {"path", "fps", "num_episodes"}.
    """
    from deploy.dataset import Dataset

    ds = Dataset.open(path)
    episodes = [dict(ds.episode(i)) for i in range(ds.num_episodes)]
    if not episodes:
        raise DatasetError(f"dataset '{path}' has no episodes; record some with `sim2pi record`")
    info = {"path": str(path), "fps": getattr(ds, "fps", None), "num_episodes": ds.num_episodes}
    return ds.spec, episodes, info


def check_episode(spec: Spec, ep: Episode, index: int = 0) -> Episode:
    """Validate one episode against the spec; returns it with missing step columns filled.

    Missing ``reward``/``success`` are recomputed from the goals when the task is goal-conditioned
    (else zeros); missing ``done`` marks the last step; missing ``intervention`` is all False.
    A wrong shape or a missing observation feature raises :class:`SpecMismatch` naming it.
    """
    if "action" not in ep:
        raise DatasetError(f"episode {index} has no 'action' column")
    n = len(ep["action"])
    if n == 0:
        raise DatasetError(
            f"episode {index} is empty; drop it or repair the dataset (`sim2pi dataset repair`)"
        )
    out: Episode = {}
    for k, feat in {**spec.observation, "action": spec.action}.items():
        if k not in ep:
            raise SpecMismatch(
                k,
                "presence",
                "present",
                "missing",
                f"episode {index} lacks it; was the data recorded for task '{spec.task}'?",
            )
        arr = np.asarray(ep[k])
        if arr.shape != (n, *feat.shape):
            raise SpecMismatch(k, "shape", (n, *feat.shape), arr.shape, f"episode {index}")
        out[k] = arr.astype(np.uint8 if feat.is_image else np.float32, copy=False)
    goals = spec.goal_keys
    if "reward" in ep:
        out["reward"] = np.asarray(ep["reward"], np.float32).reshape(n)
    if "success" in ep:
        out["success"] = np.asarray(ep["success"]).astype(bool).reshape(n)
    if ("reward" not in out or "success" not in out) and goals:
        from hardware.tasks import compute_reward, is_success

        ag, dg = out[goals[0]], out[goals[1]]
        nxt = ag[np.minimum(np.arange(n) + 1, n - 1)]
        out.setdefault("reward", compute_reward(spec.task, nxt, dg, None))
        out.setdefault("success", is_success(spec.task, nxt, dg))
    out.setdefault("reward", np.zeros(n, np.float32))
    out.setdefault("success", np.zeros(n, bool))
    if "done" in ep:
        out["done"] = np.asarray(ep["done"]).astype(bool).reshape(n)
    else:
        out["done"] = np.arange(n) == n - 1
    if "intervention" in ep:
        out["intervention"] = np.asarray(ep["intervention"]).astype(bool).reshape(n)
    else:
        out["intervention"] = np.zeros(n, bool)
    return out


def compute_stats(
    spec: Spec, episodes: Sequence[Episode] | EpisodeStore, config: Any = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-dimension (mean, std) of every per-step vector input of the network (the spec's vector
    features and the derived goal inputs of ``config``, a :class:`agent.policies.PolicyConfig`).

    Dimensions with std < 1e-2 get std 1 (left unscaled), so a feature that is constant in the
    data (e.g. a one-hot task id of single-task data) cannot blow up at deployment.
    """
    from agent.policies import PolicyConfig, vector_inputs

    cfg = config or PolicyConfig()
    if isinstance(episodes, EpisodeStore):
        data = {k: episodes.data[k] for k in spec.vector_keys}
    else:
        data = {k: np.concatenate([e[k] for e in episodes]) for k in spec.vector_keys}
    with torch.no_grad():
        raw = vector_inputs(
            spec, cfg, {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in data.items()}
        )
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for k, v in raw.items():
        x = v.double().numpy()
        m, s = x.mean(0), x.std(0)
        s = np.where(s < MIN_STD, 1.0, s)
        stats[k] = (m.astype(np.float32), s.astype(np.float32))
    return stats


class Batch(NamedTuple):
    """One training batch (torch tensors)."""

    obs: dict[str, torch.Tensor]  # key -> [B, H, *shape]
    action: torch.Tensor  # [B, action_dim]
    weight: torch.Tensor  # [B] per-sample loss weight


class EpisodeStore:
    """Flat, episode-contiguous storage of episodes with history windows and relabeling.

    Attributes (N = total steps): ``data[key]`` [N, ...]; ``first``/``last`` [N] flat indices of
    each step's episode start/end; ``episode`` [N] episode number; ``weight`` [N] sampling weight;
    ``relabel_ok`` [N] whether hindsight relabeling may touch the step.
    """

    def __init__(
        self, spec: Spec, episodes: Sequence[Episode] = (), *, intervention_weight: float = 1.0
    ):
        self.spec = spec
        self.intervention_weight = float(intervention_weight)
        self.keys = [*spec.observation, *STEP_KEYS]
        self.data: dict[str, np.ndarray] = {}
        self.first = np.zeros(0, np.int64)
        self.last = np.zeros(0, np.int64)
        self.episode = np.zeros(0, np.int64)
        self.weight = np.zeros(0, np.float64)
        self.relabel_ok = np.zeros(0, bool)
        self.num_episodes = 0
        self._chunks: dict[str, list[np.ndarray]] = {k: [] for k in self.keys}
        self.extend(episodes)

    def __len__(self) -> int:
        return len(self.first)

    def extend(
        self, episodes: Sequence[Episode], weight: float = 1.0, *, relabel: bool = True
    ) -> None:
        """Append episodes (validated against the spec); ``weight`` scales their sampling weight;
        ``relabel=False`` keeps their goals out of hindsight relabeling (DAgger's learner
        rollouts: their labels are not the actions that produced their achieved goals)."""
        if not episodes:
            return
        firsts, lasts, eps, ws = [self.first], [self.last], [self.episode], [self.weight]
        oks = [self.relabel_ok]
        offset = len(self)
        for i, raw in enumerate(episodes):
            ep = check_episode(self.spec, raw, self.num_episodes + i)
            n = len(ep["action"])
            for k in self.keys:
                self._chunks[k].append(ep[k])
            firsts.append(np.full(n, offset, np.int64))
            lasts.append(np.full(n, offset + n - 1, np.int64))
            eps.append(np.full(n, self.num_episodes + i, np.int64))
            w = weight * (self.intervention_weight if ep["intervention"].any() else 1.0)
            ws.append(np.full(n, w, np.float64))
            oks.append(np.full(n, relabel, bool))
            offset += n
        self.num_episodes += len(episodes)
        self.first, self.last = np.concatenate(firsts), np.concatenate(lasts)
        self.episode, self.weight = np.concatenate(eps), np.concatenate(ws)
        self.relabel_ok = np.concatenate(oks)
        self.data = {k: np.concatenate(v) if len(v) > 1 else v[0] for k, v in self._chunks.items()}
        self._chunks = {k: [v] for k, v in self.data.items()}

    def sample_indices(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """Flat step indices, uniform over steps times each episode's weight."""
        if len(self) == 0:
            raise DatasetError("no training data: the episode store is empty")
        if np.all(self.weight == self.weight[0]):
            return rng.integers(0, len(self), size=batch_size)
        p = self.weight / self.weight.sum()
        return rng.choice(len(self), size=batch_size, p=p)

    def window_indices(self, idx: np.ndarray, history: int) -> np.ndarray:
        """[B, H] flat indices of the history windows ending at ``idx`` (padded with the first)."""
        offs = np.arange(-history + 1, 1, dtype=np.int64)
        return np.maximum(idx[:, None] + offs[None, :], self.first[idx][:, None])

    def windows(
        self, idx: np.ndarray, history: int, desired_goal: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Observation windows {key: [B, H, *shape]}; ``desired_goal`` [B, g] overrides the goal
        in every frame of the window (a relabeled goal is constant over the episode)."""
        w = self.window_indices(np.asarray(idx, np.int64), history)
        out = {k: self.data[k][w] for k in self.spec.observation}
        if desired_goal is not None and self.spec.goal_keys is not None:
            d = self.spec.goal_keys[1]
            out[d] = np.repeat(np.asarray(desired_goal, np.float32)[:, None], history, axis=1)
        return out

    def batch(
        self,
        idx: np.ndarray,
        history: int,
        desired_goal: np.ndarray | None = None,
        weight: np.ndarray | None = None,
    ) -> Batch:
        """Windows + actions of ``idx`` as torch tensors."""
        obs = {
            k: torch.from_numpy(np.ascontiguousarray(v))
            for k, v in self.windows(idx, history, desired_goal).items()
        }
        act = torch.from_numpy(self.data["action"][idx].astype(np.float32))
        w = torch.ones(len(idx)) if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        return Batch(obs, act, w)

    def episodes(self) -> list[Episode]:
        """The stored episodes back as a list of dicts (views into the flat arrays)."""
        starts = (
            np.flatnonzero(np.r_[True, self.episode[1:] != self.episode[:-1]])
            if len(self)
            else np.zeros(0, np.int64)
        )
        return [{k: v[s : self.last[s] + 1] for k, v in self.data.items()} for s in starts]


def save_dataset(
    path: str | Path,
    spec: Spec,
    episodes: Sequence[Episode],
    *,
    robot: Any = None,
    task_text: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write in-memory episodes (e.g. from :func:`agent.rollout.collect_episodes`) as a dataset
    with ``deploy.dataset.DatasetWriter`` (crash-safe LeRobot v3.0 layout)."""
    from deploy.dataset import DatasetWriter

    fps = round(spec.control_rate) or 20
    text = task_text or f"{spec.task}"
    cols = [
        *spec.observation,
        "action",
        "action_applied",
        "reward",
        "success",
        "done",
        "intervention",
    ]
    with DatasetWriter.create(path, spec, fps, robot=robot, overwrite=overwrite) as w:
        for ep in episodes:
            w.start_episode(text)
            n = len(ep["action"])
            for t in range(n):
                w.add_frame({k: ep[k][t] for k in cols if k in ep})
            w.save_episode()
    return Path(path)
