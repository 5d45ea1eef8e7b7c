"""SAC + Hindsight Experience Replay for the goal-conditioned rover tasks, tuned for a 2-core CPU.

Why SAC (and not TD3): the reach and push rewards are sparse (-1 until the goal is within 5 cm),
so exploration is what decides learning speed. SAC's entropy term, with its temperature tuned
automatically towards a target entropy, keeps exploring without a hand-set noise schedule per task,
and its actor is a squashed Gaussian whose deterministic output ``tanh(mean)`` is exactly the
``tanh_gaussian`` head of :class:`agent.policies.Policy`, so the trained actor saves, evaluates and
exports like any GC-BC policy. TD3's cheaper delayed actor update is matched here by fusing the
critic, actor and temperature updates into one backward pass and one optimizer step.

The discrete actor (``actor="discrete"``, for learning from demos): one policy per wheel over
``bins`` duty levels, autoregressive as in GC-BC's discrete head, so it clones the push expert's
switches between driving round the box and pushing it (a single Gaussian averages them: cloned, it
scored 30-40 % where the bins score 95 %). It cannot be trained through the critic with the
reparameterization trick, so its actor loss is critic-regularized regression (CRR, Wang et al.
2020, binary filter): the NLL of each batch action whose Q beats the actor's own value (the mean Q
of ``crr_samples`` actions drawn from it). That only ever moves the policy towards actions seen in
the buffer, demos included, which is what keeps a cloned start from being worn down. It explores
by drawing its bins; it has no entropy temperature.

Reads top to bottom: :class:`HerConfig` → networks (the actor is an ``agent.policies.Policy``; the
twin critics are one batched ensemble) → :class:`SacHer` (the update) → :func:`train` (the loop).

What makes it fast on two cores (measure with ``benchmarks/her.py``):

- envs step in a worker process (several per process) *while* the learner takes its gradient steps
  (``step_async`` → updates → ``step_wait``), so simulation and learning overlap;
- the update-to-data ratio is a knob: ``utd`` gradient steps per env step, taken in a block every
  vector step, with all the block's batches sampled and relabeled in one numpy call;
- the two critics are one ensemble (batched matmuls), critic + actor + temperature are one
  backward pass and one fused Adam step, target networks are updated with one ``_foreach_lerp_``;
- small networks and single-threaded torch (``torch.set_num_threads``) — with 256-sample batches
  more threads cost more in synchronisation than they save.

What the reward is computed on (``reward_on``): by default on the twin's ground truth of the
achieved goal (the true box for push, the true position for reach), while the actor keeps reading
only what the robot senses (odometry, the camera's box estimate). The alternative, rewarding the
estimate as the Pi would judge it, can be gamed: a push policy trained that way scored 20 % on the
estimate and 0 % on ground truth, because it learned to park by a wall and wait until detector noise
or odometry drift put the box *estimate* on the goal. With ``privileged_critic`` the critics also see
the true achieved goal (asymmetric actor-critic); the exported actor does not.

Hindsight relabeling and demonstrations: see :mod:`agent.her_buffer`. With ``--demos``, demo
episodes go to their own replay, each batch mixes in ``demo_fraction`` of demo transitions (with
their recorded goals, ``bc_goals``), and the actor gets a behaviour-cloning loss on them, optionally
filtered by the critic (the Q-filter of Nair et al. 2018: clone the demo action only where the
critic rates it above the actor's own action). In batches with demo rows the actor's critic term is
divided by its mean |Q| (as in TD3+BC), so ``bc_weight`` weighs cloning against the critic whatever
the scale of the returns. ``bc_pretrain`` clones the demos before RL; the pretrained actor then
collects the first data, keeps the demos' input statistics, and ``critic_warmup`` holds it back
from the critics until they have learned its values. ``demo_restarts`` starts a share of the
training episodes from states the demos visited (also Nair et al. 2018). ``near_starts`` is an
exploration curriculum for push that needs no demos: a share of the episodes start with the robot
near the box, facing it. ``reverse_starts`` is a reverse curriculum for push (Florensa et al.
2017): a share of the episodes start with the box near the goal and the robot behind it, and the
learner widens those starts towards the task's own (:func:`sim.backend.push_reverse_start`) each
time enough of them succeed (:class:`agent.her_envs.LevelSchedule`). Evaluation always uses the
task's own random starts.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from agent.her_buffer import EpisodeReplay, EpisodeStager, HerBatch
from agent.her_config import HerConfig
from agent.her_envs import (
    Curriculum,
    EnvFn,
    GoalObs,
    LevelSchedule,
    LocalEnvs,
    StartGroup,
    end_on_success,
    make_env_batch,
    make_env_fn,
    poll_curriculum,
    with_start_states,
)
from agent.policies import (
    EGO_PREFIX,
    GOAL_DELTA,
    DiscreteHead,
    Policy,
    PolicyConfig,
    TanhGaussianHead,
    input_dims,
    pose_index,
    robot_frame,
)
from hardware.errors import Sim2PiError
from hardware.spec import Spec

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Config


# HerConfig lives in the torch-free agent.her_config so `sim2pi --help` builds the `train her`
# options without importing torch; it is re-exported here as part of this algorithm's API.


# ----------------------------------------------------------------------------------------------
# Networks


def make_actor(
    spec: Spec,
    hidden: Sequence[int],
    egocentric: bool = True,
    head: str = "gaussian",
    bins: int = 21,
) -> Policy:
    """The actor: a :class:`~agent.policies.Policy` (history 1) with a ``tanh_gaussian`` head
    (SAC) or, with ``head="discrete"``, GC-BC's autoregressive per-wheel bins."""
    return Policy(
        spec,
        PolicyConfig(
            arch="mlp",
            head="discrete" if head == "discrete" else "tanh_gaussian",
            history=1,
            hidden=tuple(hidden),
            goal_delta=True,
            egocentric=egocentric,
            bins=bins,
        ),
    )


CURRICULUM_POLL = 2000  # env steps between polls of the curriculum's episode counts
EGO_KEYS = (EGO_PREFIX + "desired_goal", EGO_PREFIX + "achieved_goal")


class EnsembleCritic(nn.Module):
    """``n`` Q-networks evaluated together with batched matmuls: input [B, D] → Q [n, B]."""

    def __init__(self, in_dim: int, hidden: Sequence[int], n: int = 2):
        super().__init__()
        sizes = [in_dim, *hidden, 1]
        self.n = n
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in itertools.pairwise(sizes):
            bound = 1.0 / math.sqrt(a)  # nn.Linear's default init range
            self.weights.append(nn.Parameter(torch.empty(n, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n, 1, b).uniform_(-bound, bound)))

    def forward(self, x: Tensor, detach: bool = False) -> Tensor:
        """Q-values [n, B]; ``detach`` evaluates with the weights cut from autograd (the actor's
        loss then trains only the actor)."""
        h = x.unsqueeze(0).expand(self.n, *x.shape)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if detach:
                w, b = w.detach(), b.detach()
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = torch.relu(h)
        return h.squeeze(-1)


class RunningStats:
    """Running mean and variance (parallel-merge formula of Chan et al.) of flat inputs."""

    def __init__(self, dim: int):
        self.n = 0.0
        self.mean = np.zeros(dim, np.float64)
        self.m2 = np.zeros(dim, np.float64)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).reshape(-1, self.mean.shape[0])
        nb = x.shape[0]
        if nb == 0:
            return
        mb = x.mean(0)
        m2b = ((x - mb) ** 2).sum(0)
        delta = mb - self.mean
        tot = self.n + nb
        self.mean = self.mean + delta * nb / tot
        self.m2 = self.m2 + m2b + delta**2 * self.n * nb / tot
        self.n = tot

    def std(self, floor: float = 1e-2) -> np.ndarray:
        var = self.m2 / max(self.n, 1.0)
        return np.maximum(np.sqrt(var), floor)


class ColoredNoise:
    """Per-env AR(1) Gaussian noise with unit variance: ``e <- rho e + sqrt(1 - rho^2) n``.

    Every step's marginal is standard normal, as in SAC's sampling, but successive steps are
    correlated (time constant ``1 / (1 - rho)`` steps), so exploration drives somewhere instead of
    jittering in place (cf. Eberhard et al. 2023, colored noise for off-policy exploration).
    Measured on RoverPush with random actions ``tanh(e)``: the box moved > 5 cm in 0-2.5 % of
    episodes with independent noise and 5-12.5 % with rho 0.9-0.98 (12.5 % vs 35-37.5 % from the
    near-box starts).
    """

    def __init__(self, n: int, dim: int, rho: float, rng: np.random.Generator):
        self.rho, self.rng = float(rho), rng
        self.scale = math.sqrt(1.0 - self.rho**2)
        self.e = rng.standard_normal((n, dim))

    def step(self) -> np.ndarray:
        """The next noise [n, dim]."""
        self.e = self.rho * self.e + self.scale * self.rng.standard_normal(self.e.shape)
        return self.e

    def reset(self, rows: np.ndarray) -> None:
        """Fresh, independent noise for the envs whose episode just ended."""
        self.e[rows] = self.rng.standard_normal((int(np.count_nonzero(rows)), self.e.shape[1]))


class Batch(NamedTuple):
    """Torch tensors of one gradient step (inputs already normalized)."""

    x: Tensor  # [B, in]: normalized [obs, ag, goal, goal - ag]
    action: Tensor  # [B, A]: executed (what the critics judge)
    reward: Tensor  # [B]
    next_x: Tensor  # [B, in]
    discount: Tensor  # [B]: factor on the next state's value, gamma^m (1 - terminated)
    is_demo: Tensor  # [B] bool
    priv: Tensor | None = None  # [B, 2 * goal_dim]: critic-only ground truth (normalized)
    next_priv: Tensor | None = None
    relabeled: Tensor | None = None  # [B] bool: the goal is a hindsight one
    label: Tensor | None = None  # [B, A]: the BC target on demo rows (default: action)


def _cat(*parts: Tensor | None) -> Tensor:
    return torch.cat([p for p in parts if p is not None], -1)


# ----------------------------------------------------------------------------------------------
# The learner


class SacHer:
    """Actor, critics, temperature and the fused update (see the module docstring)."""

    def __init__(self, spec: Spec, cfg: HerConfig):
        if spec.goal_keys is None:
            raise Sim2PiError(
                f"SAC+HER needs a goal-conditioned spec; task '{spec.task}' has no "
                "achieved_goal/desired_goal features"
            )
        if spec.image_keys:
            raise Sim2PiError(
                f"SAC+HER here is for vector observations; the spec has images {spec.image_keys}"
            )
        self.spec, self.cfg = spec, cfg
        self.obs_dim = spec.observation["observation"].dim
        self.goal_dim = spec.observation["desired_goal"].dim
        self.act_dim = spec.action.dim
        self.actor = make_actor(spec, cfg.hidden, cfg.egocentric, cfg.actor, cfg.bins)
        self.layout = list(self.actor.stat_keys)  # input order of the actor's features
        expected = ["observation", "achieved_goal", "desired_goal", GOAL_DELTA]
        if self.layout[:4] != expected or not set(self.layout[4:]) <= set(EGO_KEYS):
            raise Sim2PiError(f"unexpected policy inputs {self.layout}; SAC+HER expects {expected}")
        self.ego = pose_index(spec) if len(self.layout) > 4 else None
        head = self.actor.head
        assert isinstance(head, (TanhGaussianHead, DiscreteHead))
        self.head: TanhGaussianHead | DiscreteHead = head
        self.discrete = isinstance(head, DiscreteHead)
        dims = input_dims(spec, self.actor.config)
        self.cuts = np.cumsum([0] + [dims[k] for k in self.layout])
        self.in_dim = int(self.cuts[-1])  # obs, ag, goal, goal - ag[, goal and ag in robot frame]
        # Asymmetric actor-critic: the critics may also see the true achieved goal and the goal
        # relative to it (the actor, which is exported, never does).
        self.privileged = cfg.reward_on != "estimate" and cfg.privileged_critic
        self.priv_dim = 2 * self.goal_dim if self.privileged else 0
        # input columns whose statistics normalize the privileged [true ag, goal - true ag]
        c = self.cuts
        self._priv_cols = torch.cat(
            [
                torch.arange(int(c[i]), int(c[i + 1]))
                for i in (self.layout.index("achieved_goal"), self.layout.index(GOAL_DELTA))
            ]
        )
        q_in = self.in_dim + self.priv_dim + self.act_dim
        self.critic = EnsembleCritic(q_in, cfg.hidden)
        self.critic_target = EnsembleCritic(q_in, cfg.hidden)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.init_alpha)))
        self.target_entropy = (
            -float(self.act_dim) if cfg.target_entropy is None else cfg.target_entropy
        )
        actor_params = list(self.actor.trunk.parameters()) + list(self.actor.head.parameters())
        groups = [
            {"params": list(self.critic.parameters()), "lr": cfg.lr},
            {"params": actor_params, "lr": cfg.lr},
            {"params": [self.log_alpha], "lr": cfg.alpha_lr},
        ]
        try:
            self.opt = torch.optim.Adam(groups, fused=True)
        except (RuntimeError, TypeError):  # fused Adam needs a recent torch on CPU
            self.opt = torch.optim.Adam(groups, foreach=True)
        self._online: list[Tensor] = list(self.critic.parameters())
        self._target: list[Tensor] = list(self.critic_target.parameters())
        self.stats = RunningStats(self.in_dim)
        self.mean_t = torch.zeros(self.in_dim)
        self.std_t = torch.ones(self.in_dim)
        self.updates = 0
        self.critic_warmup = int(cfg.critic_warmup or 0)  # None resolves in HerConfig

    # -- inputs ---------------------------------------------------------------------------------

    def features(self, obs: np.ndarray, ag: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """The flat (unnormalized) input in the actor's order: [obs, ag, goal, goal - ag] and, with
        ``egocentric``, the goal and the achieved goal in the robot frame (as
        :func:`agent.policies.vector_inputs` computes them for the exported policy)."""
        parts = [obs, ag, goal, goal - ag]
        if self.ego is not None:
            for p in (goal, ag):  # the order of input_dims: ego desired_goal, ego achieved_goal
                parts += robot_frame(obs, p, self.ego)
        return np.concatenate(parts, axis=-1).astype(np.float32, copy=False)

    def refresh_stats(self) -> None:
        """Install the running statistics in the actor (exported with it) and the flat tensors."""
        mean = self.stats.mean.astype(np.float32)
        std = self.stats.std().astype(np.float32)
        cuts = self.cuts
        self.actor.set_stats(
            {
                k: (mean[cuts[i] : cuts[i + 1]], std[cuts[i] : cuts[i + 1]])
                for i, k in enumerate(self.layout)
            }
        )
        self.mean_t = torch.from_numpy(mean)
        self.std_t = torch.from_numpy(std)

    def normalize(self, x: np.ndarray) -> Tensor:
        return (torch.from_numpy(x) - self.mean_t) / self.std_t

    def privileged_features(self, true_ag: np.ndarray, goal: np.ndarray) -> Tensor | None:
        """The critics' extra input ``[true ag, goal - true ag]``, normalized with the statistics
        of the achieved goal and of ``goal - ag`` (what they are the ground truth of)."""
        if not self.privileged:
            return None
        mean, std = self.mean_t[self._priv_cols], self.std_t[self._priv_cols]
        p = torch.from_numpy(np.concatenate([true_ag, goal - true_ag], -1).astype(np.float32))
        clip = self.cfg.norm_clip
        return ((p - mean) / std).clamp_(-clip, clip)

    @torch.no_grad()
    def act(self, obs: GoalObs, deterministic: bool, noise: np.ndarray | None = None) -> np.ndarray:
        """Actions [N, A] for a batch of env observations (same maths as the exported policy).

        Sampled actions are ``tanh(mean + std * noise)``; ``noise`` [N, A] defaults to fresh
        standard normal draws (SAC's own sampling), or pass temporally correlated noise
        (:class:`ColoredNoise`). The discrete actor draws its bins and ignores ``noise``."""
        x = self.normalize(self.features(obs.observation, obs.achieved_goal, obs.desired_goal))
        feat = self.actor.trunk(x)
        if deterministic:
            u = self.head.decode(feat)
        elif noise is not None and isinstance(self.head, TanhGaussianHead):
            mean, log_std = self.head.params(feat)
            u = torch.tanh(mean + log_std.exp() * torch.from_numpy(noise.astype(np.float32)))
        else:
            u, _ = self.head.sample(feat)
        return self.actor.unnormalize_action(u).numpy()

    def deterministic(self, obs: GoalObs) -> np.ndarray:
        """The deployed action (``tanh`` of the mean), as :meth:`act` with ``deterministic``."""
        return self.act(obs, deterministic=True)

    def inputs(self, obs: np.ndarray, ag: np.ndarray, goal: np.ndarray) -> Tensor:
        """The actor's normalized, clipped input for a batch (also the critics' state input)."""
        clip = self.cfg.norm_clip
        return self.normalize(self.features(obs, ag, goal)).clamp_(-clip, clip)

    def to_batch(self, b: HerBatch, n_demo: int = 0) -> Batch:
        """Normalize and convert a numpy batch (its last ``n_demo`` rows are demonstrations)."""
        n = b.action.shape[0]
        is_demo = torch.zeros(n, dtype=torch.bool)
        if n_demo:
            is_demo[n - n_demo :] = True
        return Batch(
            x=self.inputs(b.observation, b.achieved_goal, b.desired_goal),
            action=torch.from_numpy(np.ascontiguousarray(b.action)),
            reward=torch.from_numpy(b.reward),
            next_x=self.inputs(b.next_observation, b.next_achieved_goal, b.desired_goal),
            discount=torch.from_numpy(b.discount),
            is_demo=is_demo,
            priv=self.privileged_features(b.true_achieved_goal, b.desired_goal),
            next_priv=self.privileged_features(b.next_true_achieved_goal, b.desired_goal),
            relabeled=torch.from_numpy(np.asarray(b.relabeled, bool)),
            label=torch.from_numpy(np.ascontiguousarray(b.label)),
        )

    # -- the update -----------------------------------------------------------------------------

    def update(self, batch: Batch) -> dict[str, float]:
        """One fused step: the critics, the actor (SAC's loss, or CRR's for the discrete actor)
        with the optional behaviour cloning of demo rows, and SAC's temperature."""
        cfg = self.cfg
        actor, head = self.actor, self.head
        # the discrete actor is not entropy-regularized: it explores by drawing its bins
        alpha = torch.zeros(()) if self.discrete else self.log_alpha.exp().detach()
        with torch.no_grad():
            na, nlogp = head.sample(actor.trunk(batch.next_x))
            nq = self.critic_target(_cat(batch.next_x, batch.next_priv, na)).min(0).values
            target = batch.reward + batch.discount * (nq - alpha * nlogp)
        q = self.critic(_cat(batch.x, batch.priv, batch.action))
        critic_loss = ((q - target) ** 2).mean(1).sum()

        feat = actor.trunk(batch.x)
        warm = self.updates < self.critic_warmup  # the actor waits for the critics (may clone)
        bc_rows = cfg.bc_weight > 0 and bool(batch.is_demo.any())
        out: dict[str, float] = {}
        if isinstance(head, DiscreteHead):
            nll = head.nll(feat, batch.action)
            actor_loss, entropy = torch.zeros(()), float("nan")
            if not warm:
                actor_loss, kept, entropy = self._crr_loss(batch, feat, q.detach(), nll)
                out["charts/crr_kept"] = kept
            loss = critic_loss + actor_loss
            if bc_rows:
                d = batch.is_demo
                bc = (nll[d] if batch.label is None else head.nll(feat[d], batch.label[d])).mean()
                loss = loss + cfg.bc_weight * bc
                out["losses/bc"] = float(bc.detach())
        else:
            a_pi, logp = head.sample(feat)
            q_pi = self.critic(_cat(batch.x, batch.priv, a_pi), detach=True).min(0).values
            actor_loss = (alpha * logp - q_pi).mean()
            alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
            entropy = float(-logp.detach().mean())
            if warm:
                loss = critic_loss
            elif bc_rows:
                # TD3+BC's scaling: the critic term in units of the batch's mean |Q|, so the BC
                # weight means the same whatever the scale of the returns
                scale = q_pi.abs().mean().detach().clamp(min=1e-3)
                loss = critic_loss + actor_loss / scale + alpha_loss
            else:
                loss = critic_loss + actor_loss + alpha_loss
            if bc_rows:
                bc, kept = self._gaussian_bc(batch, feat, head, warm)
                loss = loss + cfg.bc_weight * bc
                out["losses/bc"] = float(bc.detach())
                out["charts/q_filter_kept"] = kept
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._target, self._online, cfg.tau)
        self.updates += 1
        out.update(
            {
                "losses/critic": float(critic_loss.detach()),
                "losses/actor": float(actor_loss.detach()),
                "losses/alpha": float(alpha),
                "losses/q": float(q.detach().mean()),
                "losses/entropy": entropy,
            }
        )
        return out

    def _gaussian_bc(
        self, batch: Batch, feat: Tensor, head: TanhGaussianHead, warm: bool
    ) -> tuple[Tensor, float]:
        """Squared error of the deterministic action on the demo rows, optionally Q-filtered
        (after the warm-up); returns the loss and the share of rows kept."""
        d = batch.is_demo
        mean_a = head.decode(feat[d])
        a_demo = batch.action[d] if batch.label is None else batch.label[d]
        if self.cfg.q_filter and not warm:
            with torch.no_grad():
                xd = batch.x[d]
                pd = None if batch.priv is None else batch.priv[d]
                q_demo = self.critic(_cat(xd, pd, a_demo)).min(0).values
                q_mean = self.critic(_cat(xd, pd, mean_a.detach())).min(0).values
                keep = (q_demo > q_mean).float()
        else:
            keep = torch.ones(a_demo.shape[0])
        bc = (keep * ((mean_a - a_demo) ** 2).sum(-1)).sum() / keep.sum().clamp(min=1.0)
        return bc, float(keep.mean())

    def _crr_loss(
        self, batch: Batch, feat: Tensor, q_data: Tensor, nll: Tensor
    ) -> tuple[Tensor, float, float]:
        """Critic-regularized regression with the binary filter (Wang et al. 2020): the NLL of
        the batch actions whose value beats the actor's own, V(s) = the mean Q of ``crr_samples``
        actions drawn from it; with ``crr_goals="real"`` only on rows whose goal is not a
        hindsight one. ``q_data``: the critics' [n, B] Q of the batch actions; ``nll``: the
        actor's [B] NLL of them. Returns (loss, share of rows kept, entropy estimate)."""
        assert isinstance(self.head, DiscreteHead)
        m = self.cfg.crr_samples
        with torch.no_grad():
            a, logp = self.head.sample(feat.detach().repeat(m, 1))
            priv = None if batch.priv is None else batch.priv.repeat(m, 1)
            qa = self.critic(_cat(batch.x.repeat(m, 1), priv, a)).min(0).values
            keep = (q_data.min(0).values > qa.view(m, -1).mean(0)).float()
            if self.cfg.crr_goals == "real" and batch.relabeled is not None:
                keep = keep * (~batch.relabeled).float()
        return (keep * nll).mean(), float(keep.mean()), float(-logp.mean())

    def pretrain_bc(self, demo: EpisodeReplay, steps: int, batch_size: int) -> float:
        """``steps`` gradient steps of behaviour cloning (squared error of the deterministic
        action; for the discrete actor the NLL of the demo action's bins) on demo transitions
        with their recorded goals; returns the last loss. Uses its own Adam, so RL starts with
        fresh optimizer moments."""
        params = list(self.actor.trunk.parameters()) + list(self.actor.head.parameters())
        opt = torch.optim.Adam(params, lr=self.cfg.lr)
        loss = torch.zeros(())
        for _ in range(steps):
            b = demo.sample(batch_size, relabel=False)
            x = self.inputs(b.observation, b.achieved_goal, b.desired_goal)
            a_demo = torch.from_numpy(np.ascontiguousarray(b.label))
            feat = self.actor.trunk(x)
            if isinstance(self.head, DiscreteHead):
                loss = self.head.nll(feat, a_demo).mean()
            else:
                loss = ((self.head.decode(feat) - a_demo) ** 2).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return float(loss.detach())


# ----------------------------------------------------------------------------------------------
# Demonstrations


def load_demo_replay(
    path: str | Path,
    cfg: HerConfig,
    max_steps: int,
    obs_dim: int,
    goal_dim: int,
    act_dim: int,
    reward_fn: Any,
    success_fn: Any,
    spec: Spec | None = None,
) -> EpisodeReplay:
    """Read demonstration episodes (``deploy.dataset``) into their own HER replay.

    A dataset row holds an observation and the action taken from it, so an episode of ``L`` rows
    gives ``L - 1`` transitions (the state after the last action is not recorded). The critics
    see ``action_applied`` (what the motors got, which produced the next state: with DART noise,
    the noisy action), behaviour cloning the requested ``action`` (the expert's clean action).
    """
    from deploy.dataset import Dataset

    ds = Dataset.open(path, load_images=False)
    if spec is not None:
        ds.spec.check(spec)  # names the feature (or the robot) that differs
    n_eps = _num_episodes(ds)
    if n_eps == 0:
        raise Sim2PiError(
            f"the demo dataset '{path}' has no episodes; record some with "
            "`sim2pi record --robot sim --teleop expert`"
        )
    total = 0
    episodes = []
    for i in range(n_eps):
        ep = ds.episode(i)
        obs = np.asarray(ep["observation"], np.float32)
        ag = np.asarray(ep["achieved_goal"], np.float32)
        dg = np.asarray(ep["desired_goal"], np.float32)
        label = np.asarray(ep["action"], np.float32)
        act = np.asarray(ep["action_applied"], np.float32)  # in every sim2pi dataset
        for name, arr, dim in (
            ("observation", obs, obs_dim),
            ("achieved_goal", ag, goal_dim),
            ("action", label, act_dim),
            ("action_applied", act, act_dim),
        ):
            if arr.ndim != 2 or arr.shape[1] != dim:
                raise Sim2PiError(
                    f"demo episode {i}: '{name}' has shape {arr.shape}, the task "
                    f"needs [L, {dim}]; were these demos recorded for this task?"
                )
        n = obs.shape[0] - 1
        if n < 1:
            continue
        n = min(n, max_steps)
        episodes.append((obs[: n + 1], ag[: n + 1], dg[:n], act[:n], None, label[:n]))
        total += n
    # one slot of max_steps per episode, so no demo is ever evicted
    replay = EpisodeReplay(
        obs_dim,
        goal_dim,
        act_dim,
        max_steps,
        max(len(episodes), 1) * max_steps,
        reward_fn=reward_fn,
        success_fn=success_fn,
        terminate_on_success=cfg.terminate_on_success,
        strategy=cfg.strategy,
        k=cfg.her_k,
        seed=cfg.seed + 1,
        shaping=cfg.shaping,
        gamma=cfg.gamma,
        n_step=cfg.n_step,
    )
    for e in episodes:
        replay.add_episode(*e)
    log.info("loaded %d demo episodes (%d transitions) from %s", len(episodes), total, path)
    return replay


def demo_start_states(demo: EpisodeReplay, spec: Spec) -> list[dict[str, Any]]:
    """Scene states visited by the demonstrations, as ``reset(options={"start": ...})`` dicts.

    Built from what the robot observed: the odometry pose, the goal and, for push, the box estimate
    of steps where the box was seen in that frame (a stale estimate can lie under the robot).
    """
    pose = pose_index(spec)
    feat = spec.observation["observation"]
    if pose is None or feat.names is None:
        return []
    names = list(feat.names)
    box = (
        (names.index("box_x"), names.index("box_y"), names.index("box_seen"))
        if {"box_x", "box_y", "box_seen"} <= set(names)
        else None
    )
    ix, iy, ic, is_ = pose
    limit = 0.85  # m: inside the walls (the backend refuses starts beyond 0.9)
    states: list[dict[str, Any]] = []
    for e in np.flatnonzero(demo.length):
        for t in range(int(demo.length[e])):
            o, g = demo.obs[e, t], demo.dg[e, t]
            st: dict[str, Any] = {
                "pose": (float(o[ix]), float(o[iy]), math.atan2(float(o[is_]), float(o[ic]))),
                "goal": (float(g[0]), float(g[1])),
            }
            pts = [o[[ix, iy]]]
            if box is not None:
                bx, by, seen = (float(o[i]) for i in box)
                if seen < 0.5 or math.hypot(bx - o[ix], by - o[iy]) < 0.1:
                    continue
                st["box"] = (bx, by)
                pts.append(np.array([bx, by]))
            if max(float(np.abs(p).max()) for p in pts) > limit:
                continue
            states.append(st)
    return states


def _num_episodes(ds: Any) -> int:
    for attr in ("num_episodes", "n_episodes", "total_episodes"):
        v = getattr(ds, attr, None)
        if v is not None:
            return int(v() if callable(v) else v)
    return len(ds)


# ----------------------------------------------------------------------------------------------
# Evaluation


def evaluate(
    act: Callable[[GoalObs], np.ndarray],
    envs: LocalEnvs,
    episodes: int,
    seed: int,
    success_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> dict[str, float]:
    """Success rate, mean return and length of ``act`` (a batch of observations → actions) over
    ``episodes`` episodes, batched over ``envs``. The episode seeds depend only on ``seed``, so
    two learners evaluated with the same seed see the same start states and goals.

    ``success_rate`` is the env's own verdict (on the achieved goal the robot observes); with
    ``success_fn`` and an env that gives ground truth, ``true_success_rate`` judges the last
    true achieved goal of each episode against its goal with it."""
    n = envs.num_envs
    true_successes: list[float] = []
    successes: list[float] = []
    returns: list[float] = []
    lengths: list[int] = []
    round_ = 0
    while len(successes) < episodes:
        obs = envs.reset(seed=seed + 100_003 * round_)
        round_ += 1
        active = np.ones(n, bool)
        ret = np.zeros(n)
        length = np.zeros(n, int)
        succ = np.zeros(n, bool)
        true_succ = np.zeros(n, bool)
        while active.any():
            envs.step_async(act(obs))
            r = envs.step_wait()
            ret += np.where(active, r.reward, 0.0)
            length += active
            done = r.terminated | r.truncated
            succ |= active & done & r.success
            if success_fn is not None:
                ok = np.asarray(success_fn(r.final_true_achieved_goal, obs.desired_goal), bool)
                true_succ |= active & done & ok
            active &= ~done
            obs = r.obs
        take = min(n, episodes - len(successes))
        successes += succ[:take].astype(float).tolist()
        true_successes += true_succ[:take].astype(float).tolist()
        returns += ret[:take].tolist()
        lengths += length[:take].tolist()
    out = {
        "success_rate": float(np.mean(successes)),
        "return": float(np.mean(returns)),
        "length": float(np.mean(lengths)),
        "episodes": float(len(successes)),
    }
    if success_fn is not None:
        out["true_success_rate"] = float(np.mean(true_successes))
    return out


# ----------------------------------------------------------------------------------------------
# The loop


@dataclass
class HerResult:
    """What :func:`train` returns."""

    agent: SacHer
    history: list[dict[str, float]]  # one row per evaluation (time_s, env_steps, success_rate,..)
    env_steps: int
    updates: int
    train_seconds: float  # wall clock, evaluation excluded
    time_to_target: float | None  # train_seconds when target_success was first reached
    run: Path | None


class _Tb:
    """TensorBoard scalars when tensorboard is installed, otherwise nothing."""

    def __init__(self, out: Path | None):
        self.w = None
        if out is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.w = SummaryWriter(str(out / "tb"))
            except Exception:  # tensorboard is optional
                self.w = None

    def log(self, scalars: dict[str, float], step: int) -> None:
        if self.w is not None:
            for k, v in scalars.items():
                self.w.add_scalar(k, v, step)

    def close(self) -> None:
        if self.w is not None:
            self.w.close()


def task_setup(
    cfg: HerConfig,
) -> tuple[Spec, str, int, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """(spec, env id, max steps, success test) of the config's sim2pi task."""
    from hardware.description import load_description
    from hardware.tasks import is_success, task_info, task_spec

    info = task_info(cfg.task)
    if not info.goal_conditioned:
        raise Sim2PiError(f"SAC+HER needs a goal-conditioned task (reach, push), not '{cfg.task}'")
    desc = load_description(cfg.robot)

    def success(ag: np.ndarray, dg: np.ndarray) -> np.ndarray:
        return is_success(info.name, ag, dg)

    return task_spec(info.name, desc), cfg.env_id or info.env_id, info.max_steps, success


def success_keys(cfg: HerConfig) -> tuple[str, ...]:
    """The info keys that must all be true where the rewards count the goal as reached."""
    return {"truth": ("true_success",), "estimate": ("is_success",)}.get(
        cfg.reward_on, ("true_success", "is_success")
    )


def curriculum_keys(cfg: HerConfig) -> tuple[str, ...]:
    """The info keys that must all be true for a reverse-curriculum episode to count as a
    success: those of the reward, except that staged rewards count the truth alone (their first
    half), so the starts widen as the pushing improves and the seeing is learned on top."""
    return ("true_success",) if cfg.reward_on == "staged" else success_keys(cfg)


def training_env_fn(
    cfg: HerConfig, env_id: str, kwargs: dict[str, Any], keys: Sequence[str]
) -> EnvFn:
    """The training envs' factory: the env itself, or with ``episode_end="reward"`` (and rewards
    not on the estimate) the env built without its own end on success and ended where every
    ``info[k]`` of ``keys`` is true."""
    if cfg.ends_on_reward:
        return end_on_success(make_env_fn(env_id, **kwargs, terminate_on_success=False), keys)
    return make_env_fn(env_id, **kwargs)


def train(
    cfg: HerConfig,
    *,
    env_fn: EnvFn | None = None,
    spec: Spec | None = None,
    max_steps: int | None = None,
    success_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    eval_callback: Callable[[dict[str, float]], None] | None = None,
) -> HerResult:
    """Train SAC+HER. Without ``env_fn``/``spec``, the config's sim2pi task is used.

    ``env_fn`` must build one goal env (picklable when ``cfg.workers > 0``); ``max_steps`` is its
    time limit and ``success_fn(achieved, desired)`` its vectorized success test (``None``: derived
    from the sparse reward).
    """
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    keys = success_keys(cfg)
    if env_fn is None or spec is None or max_steps is None:
        spec, env_id, max_steps, success_fn = task_setup(cfg)
        kwargs = {"description": cfg.robot} if env_id.startswith("sim2pi/") else {}
        env_fn = make_env_fn(env_id, **kwargs)
        train_env_fn = training_env_fn(cfg, env_id, kwargs, keys)
    elif cfg.ends_on_reward:
        raise Sim2PiError(
            "episode_end='reward' needs the config's sim2pi task (it builds the training envs "
            "without their own end on success); with a custom env_fn, build it that way yourself"
        )
    else:
        train_env_fn = env_fn
    out = Path(cfg.out) if cfg.out else None
    has_run = out is not None and (out / "checkpoint.json").exists()
    if has_run and not cfg.resume:
        raise Sim2PiError(
            f"'{out}' already holds a run; pass --resume to continue it or choose another --out"
        )
    if cfg.resume and not has_run:
        raise Sim2PiError(f"--resume: no checkpoint in '{out}' to continue from")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    log.info("SAC+HER config: %s", cfg.to_dict())

    eval_envs = LocalEnvs([env_fn] * cfg.eval_envs) if cfg.eval_episodes > 0 else None
    reward_env = eval_envs or LocalEnvs([env_fn])
    envs: Any = None
    tb = _Tb(out)
    try:
        agent = SacHer(spec, cfg)
        start_steps = 0
        if has_run:
            assert out is not None
            start_steps = resume_from(agent, out)
        od, gd, ad = agent.obs_dim, agent.goal_dim, agent.act_dim
        # the env's own vectorized compute_reward, from an env living in this process
        reward_fn = reward_env.compute_reward
        replay = EpisodeReplay(
            od,
            gd,
            ad,
            max_steps,
            cfg.buffer_size,
            reward_fn=reward_fn,
            success_fn=success_fn,
            terminate_on_success=cfg.terminate_on_success,
            strategy=cfg.strategy,
            k=cfg.her_k,
            seed=cfg.seed,
            # "estimate" episodes carry no truth, so judging them on it judges the estimate
            judge=cfg.reward_on if cfg.reward_on in ("both", "staged") else "truth",
            keep_labels=False,  # online data: the executed action is the label
            shaping=cfg.shaping,
            gamma=cfg.gamma,
            n_step=cfg.n_step,
        )
        demo = None
        if cfg.demos:
            demo = load_demo_replay(
                cfg.demos, cfg, max_steps, od, gd, ad, reward_fn, success_fn, spec=spec
            )
            if not has_run:
                _update_stats_from(agent, demo)
        pretrain_s = 0.0  # counted in the training time
        pretrained = demo is not None and bool(cfg.bc_pretrain) and not has_run
        if pretrained:
            assert demo is not None
            t0 = time.perf_counter()
            bc = agent.pretrain_bc(demo, cfg.bc_pretrain or 0, cfg.batch_size)
            pretrain_s = time.perf_counter() - t0
            log.info(
                "behaviour cloning: %d steps on the demos in %.1f s (loss %.4f)",
                cfg.bc_pretrain,
                pretrain_s,
                bc,
            )
        groups: list[StartGroup] = []
        if demo is not None and cfg.demo_restarts > 0:
            states = demo_start_states(demo, spec)
            if not states:
                raise Sim2PiError(
                    f"--demo-restarts: no usable start states in {cfg.demos} (needs an odometry "
                    "pose in the observation, and for push steps where the box was seen)"
                )
            log.info(
                "restarting %.0f%% of episodes from %d demo states",
                100 * cfg.demo_restarts,
                len(states),
            )
            groups.append((states, cfg.demo_restarts))
        if cfg.near_starts > 0:
            if spec.task != "push":
                raise Sim2PiError(f"--near-starts is for the push task, not '{spec.task}'")
            from sim.backend import push_starts_near_box

            starts = push_starts_near_box(
                20_000, seed=cfg.seed, behind=cfg.near_starts_side == "behind"
            )
            groups.append((starts, cfg.near_starts))
        truth = cfg.reward_on != "estimate"
        schedule: LevelSchedule | None = None
        if cfg.reverse_starts > 0:
            if spec.task != "push":
                raise Sim2PiError(f"--reverse-starts is for the push task, not '{spec.task}'")
            from sim.backend import push_reverse_start

            schedule = LevelSchedule(cfg.curriculum_success, cfg.curriculum_step)
            groups.append((Curriculum(push_reverse_start), cfg.reverse_starts))
        # curriculum episodes are judged as the reward judges them (staged: on the truth)
        train_fn = (
            with_start_states(train_env_fn, groups, curriculum_keys(cfg))
            if groups
            else train_env_fn
        )
        envs = make_env_batch([train_fn] * cfg.envs, cfg.workers)
        n_demo = round(cfg.batch_size * cfg.demo_fraction) if demo is not None else 0
        stager = EpisodeStager(cfg.envs, od, gd, ad, max_steps)
        noise = ColoredNoise(cfg.envs, ad, cfg.noise_rho, rng)
        obs = envs.reset(seed=cfg.seed + start_steps)
        stager.start(obs.observation, obs.achieved_goal, obs.truth if truth else None)
        # A fresh actor (neither resumed nor pretrained) explores at random at first, and its input
        # statistics follow the data. A resumed or pretrained one collects from the first step and
        # keeps its statistics: shifting them would change the function it has learned.
        fresh = not has_run and not pretrained
        if fresh:
            agent.stats.update(agent.features(obs.observation, obs.achieved_goal, obs.desired_goal))
            agent.refresh_stats()

        history: list[dict[str, float]] = []
        best_key = best_so_far(out) if cfg.resume and out is not None else None
        budget = cfg.minutes * 60.0
        env_steps, credit = start_steps, 0.0
        train_time, eval_time = 0.0, 0.0
        t_start = time.perf_counter() - pretrain_s
        next_eval = start_steps + cfg.eval_every
        next_log = cfg.log_every
        time_to_target: float | None = None
        next_poll = start_steps + CURRICULUM_POLL
        recent_success: list[float] = []
        last_losses: dict[str, float] = {}
        t_update = 0.0
        while env_steps < cfg.total_steps:
            now = time.perf_counter() - t_start - eval_time
            if now >= budget:
                break
            eps = noise.step()
            if fresh and env_steps < cfg.learning_starts:
                actions = np.tanh(eps).astype(np.float32)
            else:
                actions = agent.act(obs, deterministic=False, noise=eps)
            envs.step_async(actions)
            # Gradient steps while the workers simulate.
            if env_steps - start_steps >= cfg.learning_starts and replay.n_transitions > 0:
                credit += cfg.utd * cfg.envs
                n_up = int(credit)
                credit -= n_up
                if n_up:
                    t0 = time.perf_counter()
                    last_losses = _update_block(agent, replay, demo, n_up, cfg.batch_size, n_demo)
                    t_update += time.perf_counter() - t0
            r = envs.step_wait()
            done = r.terminated | r.truncated
            for ep in stager.step(
                obs.desired_goal,
                actions,
                r.obs.observation,
                r.obs.achieved_goal,
                done,
                r.final_obs,
                r.final_achieved_goal,
                r.obs.truth if truth else None,
                r.final_true_achieved_goal if truth else None,
            ):
                replay.add_episode(*ep)
                o, a_g, d_g, _, t_g = ep
                # train success as the rewards judge it: the goal reached at some step
                ok = replay.judge((a_g if t_g is None else t_g)[1:], a_g[1:], d_g)[1]
                recent_success.append(float(ok.any()))
                if fresh and agent.updates < 20_000:  # they settle early; stop paying later
                    agent.stats.update(agent.features(o[:-1], a_g[:-1], d_g))
            if done.any():
                noise.reset(done)
                recent_success = recent_success[-100:]
                if fresh and agent.updates < 20_000:
                    agent.refresh_stats()
            obs = r.obs
            env_steps += cfg.envs
            if schedule is not None and env_steps >= next_poll:
                next_poll = env_steps + CURRICULUM_POLL
                if poll_curriculum(envs, schedule):
                    log.info("curriculum: level %.2f at %d steps", schedule.level, env_steps)

            now = time.perf_counter() - t_start - eval_time
            if now >= next_log:
                next_log = now + cfg.log_every
                sps = env_steps / max(now, 1e-9)
                scalars = {
                    "charts/train_success": float(np.mean(recent_success or [0.0])),
                    "charts/steps_per_s": sps,
                    "charts/updates_per_s": agent.updates / max(now, 1e-9),
                    "charts/update_fraction": t_update / max(now, 1e-9),
                    **last_losses,
                }
                if schedule is not None:
                    scalars["charts/curriculum_level"] = schedule.level
                    scalars["charts/curriculum_success"] = schedule.rate
                tb.log(scalars, env_steps)
                log.info(
                    "step %d (%.0f s): %.0f steps/s, %d updates, train success %.2f, "
                    "critic %.3f, alpha %.3f",
                    env_steps,
                    now,
                    sps,
                    agent.updates,
                    scalars["charts/train_success"],
                    last_losses.get("losses/critic", 0.0),
                    last_losses.get("losses/alpha", 0.0),
                )
            if eval_envs is not None and env_steps >= next_eval:
                next_eval += cfg.eval_every
                t0 = time.perf_counter()
                ev = evaluate(
                    agent.deterministic, eval_envs, cfg.eval_episodes, cfg.seed + 7, success_fn
                )
                eval_time += time.perf_counter() - t0
                train_time = time.perf_counter() - t_start - eval_time
                row = {
                    "time_s": train_time,
                    "env_steps": float(env_steps),
                    "updates": float(agent.updates),
                    **ev,
                }
                if schedule is not None:
                    row["curriculum_level"] = schedule.level
                history.append(row)
                tb.log(
                    {
                        "charts/success_rate": ev["success_rate"],
                        "charts/true_success_rate": ev.get("true_success_rate", float("nan")),
                        "charts/eval_return": ev["return"],
                    },
                    env_steps,
                )
                log.info(
                    "eval at %d steps (%.0f s): success %.2f (ground truth %.2f), return %.1f",
                    env_steps,
                    train_time,
                    ev["success_rate"],
                    ev.get("true_success_rate", float("nan")),
                    ev["return"],
                )
                if eval_callback is not None:
                    eval_callback(row)
                if out is not None:  # keep the latest actor on disk during long runs
                    save_run(out, agent, env_steps, row)
                    if best_key is None or eval_rank(row) > best_key:
                        best_key = eval_rank(row)
                        save_run(out / BEST, agent, env_steps, row, resumable=False)
                        log.info("best evaluation so far: actor saved to %s", out / BEST)
                if (
                    cfg.target_success is not None
                    and time_to_target is None
                    and ev["success_rate"] >= cfg.target_success
                ):
                    time_to_target = train_time
                    break
        train_time = time.perf_counter() - t_start - eval_time
        log.info(
            "trained %d env steps, %d updates in %.1f s (%.0f steps/s)",
            env_steps,
            agent.updates,
            train_time,
            env_steps / max(train_time, 1e-9),
        )
        if out is not None:
            final = history[-1] if history else {}
            save_run(out, agent, env_steps, final)
        return HerResult(agent, history, env_steps, agent.updates, train_time, time_to_target, out)
    finally:
        if envs is not None:
            envs.close()
        reward_env.close()
        tb.close()


def resume_from(agent: SacHer, run: Path) -> int:
    """Load a saved SAC+HER run into ``agent``; returns the env steps it had trained."""
    from agent.checkpoint import load_policy, load_trainer_state, read_meta

    meta = read_meta(run)
    if meta.algo != "sac_her":
        raise Sim2PiError(f"'{run}' holds a '{meta.algo}' run, not 'sac_her'")
    actor, _ = load_policy(run)
    if actor.config != agent.actor.config:
        raise Sim2PiError(
            f"--resume with a different network: the run has {actor.config}, the options give "
            f"{agent.actor.config}; use the run's options (see {run / 'config.json'})"
        )
    st = load_trainer_state(run)
    if st is None:
        raise Sim2PiError(f"'{run}' has no trainer state (resume.pt) to continue from")
    try:
        agent.critic.load_state_dict(st["critic"])
        agent.critic_target.load_state_dict(st["critic_target"])
    except RuntimeError as e:
        raise Sim2PiError(
            f"--resume: the run's critics do not fit these options (was --reward-on or "
            f"--privileged-critic different?): {e}"
        ) from e
    agent.actor.load_state_dict(actor.state_dict())
    with torch.no_grad():
        agent.log_alpha.copy_(st["log_alpha"])
    agent.opt.load_state_dict(st["optimizer"])
    stats = st["stats"]
    agent.stats.n, agent.stats.mean, agent.stats.m2 = stats["n"], stats["mean"], stats["m2"]
    agent.refresh_stats()
    agent.updates = int(st["updates"])
    log.info("resumed %s at %d env steps, %d updates", run, meta.step, agent.updates)
    return int(meta.step)


def _update_stats_from(agent: SacHer, replay: EpisodeReplay, n: int = 10_000) -> None:
    b = replay.sample(min(n, max(replay.n_transitions, 1)))
    agent.stats.update(agent.features(b.observation, b.achieved_goal, b.desired_goal))
    agent.refresh_stats()


def _update_block(
    agent: SacHer,
    replay: EpisodeReplay,
    demo: EpisodeReplay | None,
    n_up: int,
    batch_size: int,
    n_demo: int,
) -> dict[str, float]:
    """``n_up`` gradient steps; all batches are sampled and relabeled in one numpy call."""
    big = replay.sample(n_up * batch_size)
    parts = [big]
    if demo is not None and n_demo:
        # demo rows keep their recorded goals for the BC loss (bc_goals=recorded), see HerConfig
        parts.append(demo.sample(n_up * n_demo, relabel=agent.cfg.bc_goals == "all"))
    losses: dict[str, float] = {}
    per = batch_size + (n_demo if len(parts) > 1 else 0)
    if len(parts) > 1:
        # interleave: step i gets RL rows [i*B, (i+1)*B) then demo rows [i*D, (i+1)*D)
        rl, dm = parts
        cat = HerBatch(
            *(
                np.concatenate(
                    [
                        a.reshape(n_up, batch_size, *a.shape[1:]),
                        b.reshape(n_up, n_demo, *b.shape[1:]),
                    ],
                    axis=1,
                ).reshape(n_up * per, *a.shape[1:])
                for a, b in zip(rl, dm)
            )
        )
    else:
        cat = big
    full = agent.to_batch(cat, 0)
    is_demo = torch.zeros(per, dtype=torch.bool)
    if len(parts) > 1:
        is_demo[batch_size:] = True
    for i in range(n_up):
        s = slice(i * per, (i + 1) * per)
        losses = agent.update(
            Batch(
                full.x[s],
                full.action[s],
                full.reward[s],
                full.next_x[s],
                full.discount[s],
                is_demo,
                None if full.priv is None else full.priv[s],
                None if full.next_priv is None else full.next_priv[s],
                None if full.relabeled is None else full.relabeled[s],
                None if full.label is None else full.label[s],
            )
        )
    return losses


BEST = "best"  # RUN/best: the actor of the best evaluation so far, a checkpoint of its own


def eval_rank(ev: dict[str, Any]) -> tuple[float, float]:
    """How evaluations are ranked for ``RUN/best``: success as the env judges it (the robot's
    own estimate, as on the Pi), ties broken by the twin's ground truth where there is one."""
    truth = float(ev.get("true_success_rate", float("nan")))
    return float(ev.get("success_rate", 0.0)), (-1.0 if math.isnan(truth) else truth)


def best_so_far(out: Path) -> tuple[float, float] | None:
    """The rank of the run's saved best evaluation (``--resume`` keeps beating that one)."""
    from agent.checkpoint import read_meta

    if not (out / BEST / "checkpoint.json").exists():
        return None
    return eval_rank(read_meta(out / BEST).eval)


def save_run(
    out: Path,
    agent: SacHer,
    env_steps: int,
    eval_results: dict[str, float],
    resumable: bool = True,
) -> Path:
    """Save the actor through :mod:`agent.checkpoint`, with the critics, temperature, optimizer
    and statistics for ``--resume`` if ``resumable`` (``RUN/best`` holds the actor alone)."""
    from agent.checkpoint import save_checkpoint

    return save_checkpoint(
        out,
        agent.actor,
        algo="sac_her",
        step=env_steps,
        train_config=agent.cfg.to_dict(),
        dataset=agent.cfg.demos,
        seed=agent.cfg.seed,
        eval_results=eval_results,
        trainer_state=None
        if not resumable
        else {
            "critic": agent.critic.state_dict(),
            "critic_target": agent.critic_target.state_dict(),
            "log_alpha": agent.log_alpha.detach().clone(),
            "optimizer": agent.opt.state_dict(),
            "stats": {"n": agent.stats.n, "mean": agent.stats.mean, "m2": agent.stats.m2},
            "updates": agent.updates,
        },
    )
