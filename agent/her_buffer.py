"""Episode replay with Hindsight Experience Replay (HER), relabeled at sample time, in numpy.

Storage is episode-major (``[episode, t, dim]``), like the original HER implementation: a transition
``t`` of episode ``e`` is ``(obs[e, t], ag[e, t], dg[e, t], action[e, t]) -> (obs[e, t + 1],
ag[e, t + 1])`` and ``obs[e, length[e]]`` is the observation the episode ended on (the terminal
one, or the last one before a time-limit truncation). Relabeling happens in :meth:`EpisodeReplay.
sample`, once per batch, with no Python loop over transitions:

- a transition is drawn uniformly over all stored transitions (episodes weighted by length);
- with probability ``k / (k + 1)`` its desired goal is replaced by an achieved goal of the *same
  episode*, chosen by :func:`agent.relabel.goal_indices` (the one goal sampler GC-BC uses too):
  ``future`` (a uniformly drawn ``ag[e, t']`` with ``t < t' <= length``), ``final``
  (``ag[e, length]``), ``episode`` (any ``ag[e, t']``, ``1 <= t' <= length``, i.e. a goal some
  transition of the episode produced) or ``geometric`` (``t' = t + Geometric(1 - gamma)``);
- the reward is recomputed for every sampled transition with the env's vectorized
  ``compute_reward(next_achieved_goal, goal, info)`` (one call per batch);
- ``terminated`` is recomputed too: when the env ends episodes on success, a transition whose next
  achieved goal satisfies the (possibly relabeled) goal is terminal, and any other transition is
  not. Stable-Baselines3's ``HerReplayBuffer`` keeps the stored ``done`` instead (its issue #627),
  so a relabeled success bootstraps past the end of its episode and a relabeled failure on an
  episode's last step is wrongly cut off. Time-limit truncation is never terminal: an episode's last
  stored observation is always bootstrapped from unless the goal is reached there.

Ground truth: an episode may come with ``true_achieved_goal`` (the simulator's true value of what
the achieved goal estimates, e.g. the true box where the achieved goal is the camera's estimate).
Relabeled goals, rewards and ``terminated`` are then computed on it, while ``achieved_goal`` stays
the policy's input. Without it, the achieved goal serves both roles. With ``judge="both"``, a
transition is rewarded (and terminal) only where both the ground truth and the estimate reach the
goal (the worse of the two rewards): the goal must be reached *and* seen to be reached, as on the
robot. With ``judge="staged"``, the reward is the mean of the truth's reward and that one: -1 until
the true goal is reached, -0.5 while it is reached but not seen there, 0 (and terminal) once both
are, so reaching is rewarded on its own and seeing it on top.

Demonstrations go in their own :class:`EpisodeReplay` (so they are never evicted by fresh data and
can be sampled at a fixed share of each batch, after Nair et al. 2018).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from agent.relabel import STRATEGIES, goal_indices
from hardware.errors import Sim2PiError

RewardFn = Callable[[np.ndarray, np.ndarray, Any], np.ndarray]
"""``compute_reward(achieved_goal, desired_goal, info) -> reward`` over a batch (gymnasium-robotics
GoalEnv convention; ``info`` is passed as ``None``)."""
SuccessFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``success(achieved_goal, desired_goal) -> bool`` over a batch."""
JUDGES = ("truth", "both", "staged")
"""What reaching a goal is judged on (see the module docstring)."""


class HerBatch(NamedTuple):
    """One sampled (and possibly relabeled) batch; arrays are float32 unless noted."""

    observation: np.ndarray  # [B, obs_dim]
    achieved_goal: np.ndarray  # [B, goal_dim]
    desired_goal: np.ndarray  # [B, goal_dim]: the goal the transition is judged against
    action: np.ndarray  # [B, act_dim]: the executed action (what produced the next state)
    reward: np.ndarray  # [B]: compute_reward(next_achieved_goal, desired_goal) (n-step: the sum)
    next_observation: np.ndarray  # [B, obs_dim]: the state bootstrapped from (n-step: t + m)
    next_achieved_goal: np.ndarray  # [B, goal_dim]
    terminated: np.ndarray  # [B] float32 0/1: true environment end (never a time limit)
    discount: np.ndarray  # [B]: factor on the next state's value, gamma^m * (1 - terminated)
    relabeled: np.ndarray  # [B] bool: the desired goal was replaced by an achieved one
    episode: np.ndarray  # [B] int64: episode slot (for tests and diagnostics)
    t: np.ndarray  # [B] int64: time step within the episode
    goal_t: np.ndarray  # [B] int64: index of the achieved goal used (-1 when not relabeled)
    true_achieved_goal: np.ndarray  # [B, goal_dim]: ground truth of achieved_goal
    next_true_achieved_goal: np.ndarray  # [B, goal_dim]: what the reward was computed on
    label: np.ndarray  # [B, act_dim]: the BC target (a demo's clean action; else action)


def reward_success(reward: np.ndarray) -> np.ndarray:
    """Default success test from a sparse reward: the gymnasium-robotics convention is 0 on success
    and -1 otherwise (``hardware.tasks.compute_reward``)."""
    return np.asarray(reward) > -0.5


class EpisodeReplay:
    """A ring buffer of whole episodes with HER relabeling at sample time (see module docstring).

    Args:
        obs_dim, goal_dim, act_dim: flat feature sizes.
        max_steps: the longest episode (the env's time limit).
        capacity: how many transitions to keep (rounded to whole episodes of ``max_steps``).
        reward_fn: the env's vectorized ``compute_reward``.
        success_fn: vectorized success test; ``None`` derives it from the sparse reward
            (``reward > -0.5``).
        terminate_on_success: the env ends an episode when its goal is reached, so relabeled
            successes are terminal. ``False`` for envs that only truncate.
        strategy: ``none`` | ``future`` | ``final`` | ``episode`` | ``geometric``.
        k: relabeled goals per real one (the relabeling probability is ``k / (k + 1)``).
        geometric_gamma: mean offset ``1 / (1 - gamma)`` of the ``geometric`` strategy.
        seed: for the sampler's generator.
        judge: what reaching the goal is judged on (see the module docstring): ``truth`` (the
            true achieved goal, or the achieved goal where an episode has no truth); ``both``
            (the truth *and* the achieved goal at the goal); ``staged`` (half the reward for the
            truth at the goal, the other half once the achieved goal is there too).
        keep_labels: store a behaviour-cloning label per step (demos, whose label may differ from
            the executed action). ``False`` (online data, where they are the same): no label
            array, and batches carry the action as the label.
        shaping: potential-based reward shaping per metre of progress (``agent.her_config``).
        gamma: the learner's discount (for ``discount``, shaping and n-step returns).
        n_step: steps summed before bootstrapping (see the module docstring).
    """

    def __init__(
        self,
        obs_dim: int,
        goal_dim: int,
        act_dim: int,
        max_steps: int,
        capacity: int,
        *,
        reward_fn: RewardFn,
        success_fn: SuccessFn | None = None,
        terminate_on_success: bool = True,
        strategy: str = "future",
        k: int = 4,
        geometric_gamma: float = 0.98,
        seed: int | None = None,
        judge: str = "truth",
        keep_labels: bool = True,
        shaping: float = 0.0,
        gamma: float = 0.98,
        n_step: int = 1,
    ):
        if strategy not in STRATEGIES:
            raise Sim2PiError(f"unknown HER strategy '{strategy}'; choose one of {STRATEGIES}")
        if k < 0:
            raise Sim2PiError(f"HER k must be >= 0 (relabeled goals per real goal), got {k}")
        if max_steps < 1:
            raise Sim2PiError(f"max_steps must be >= 1, got {max_steps}")
        self.obs_dim, self.goal_dim, self.act_dim = obs_dim, goal_dim, act_dim
        self.max_steps = int(max_steps)
        self.n_slots = max(1, int(capacity) // self.max_steps)
        self.reward_fn = reward_fn
        self.success_fn = success_fn
        self.terminate_on_success = terminate_on_success
        if judge not in JUDGES:
            raise Sim2PiError(f"unknown judge '{judge}'; choose one of {JUDGES}")
        self.judge_on = judge
        if shaping < 0:
            raise Sim2PiError(f"shaping must be >= 0 (reward per metre of progress), got {shaping}")
        if n_step < 1:
            raise Sim2PiError(f"n_step must be >= 1, got {n_step}")
        self.shaping, self.gamma, self.n_step = float(shaping), float(gamma), int(n_step)
        self.strategy = strategy
        self.k = int(k)
        self.geometric_gamma = float(geometric_gamma)
        self.relabel_prob = 0.0 if strategy == "none" else self.k / (self.k + 1.0)
        self.rng = np.random.default_rng(seed)
        n, t1 = self.n_slots, self.max_steps + 1
        self.obs = np.zeros((n, t1, obs_dim), np.float32)
        self.ag = np.zeros((n, t1, goal_dim), np.float32)
        self.tag = np.zeros((n, t1, goal_dim), np.float32)  # ground truth of ag (or ag itself)
        self.dg = np.zeros((n, self.max_steps, goal_dim), np.float32)
        self.action = np.zeros((n, self.max_steps, act_dim), np.float32)
        self.label = np.zeros((n, self.max_steps, act_dim), np.float32) if keep_labels else None
        self.length = np.zeros(n, np.int64)  # 0 = empty slot
        self._next = 0
        self._cum = np.zeros(n, np.int64)  # cumulative lengths for length-weighted sampling
        self.n_episodes_added = 0

    # ------------------------------------------------------------------ writing
    def add_episode(
        self,
        obs: np.ndarray,
        achieved_goal: np.ndarray,
        desired_goal: np.ndarray,
        action: np.ndarray,
        true_achieved_goal: np.ndarray | None = None,
        label: np.ndarray | None = None,
    ) -> int:
        """Store one finished episode of ``L`` transitions; returns its slot.

        ``obs``, ``achieved_goal`` and ``true_achieved_goal`` (default: ``achieved_goal``) have
        ``L + 1`` rows (the last is the final observation), ``action`` (executed) and ``label``
        (the behaviour-cloning target, e.g. a DART demo's clean action; default: ``action``) have
        ``L`` rows and ``desired_goal`` ``L`` rows or a single goal.
        """
        obs = np.asarray(obs, np.float32).reshape(-1, self.obs_dim)
        ag = np.asarray(achieved_goal, np.float32).reshape(-1, self.goal_dim)
        tag = ag if true_achieved_goal is None else np.asarray(true_achieved_goal, np.float32)
        tag = tag.reshape(-1, self.goal_dim)
        act = np.asarray(action, np.float32).reshape(-1, self.act_dim)
        if label is not None and self.label is None:
            raise Sim2PiError("this replay keeps no labels (keep_labels=False): pass label=None")
        lab = act if label is None else np.asarray(label, np.float32).reshape(-1, self.act_dim)
        length = act.shape[0]
        if length < 1:
            raise Sim2PiError("an episode needs at least one transition")
        if length > self.max_steps:
            raise Sim2PiError(
                f"episode of {length} steps is longer than max_steps={self.max_steps}"
            )
        if lab.shape[0] != length:
            raise Sim2PiError(f"{length} actions but {lab.shape[0]} labels")
        if not obs.shape[0] == ag.shape[0] == tag.shape[0] == length + 1:
            raise Sim2PiError(
                f"an episode of {length} actions needs {length + 1} observations and "
                f"(true) achieved goals (the final one included); got {obs.shape[0]}, "
                f"{ag.shape[0]} and {tag.shape[0]}"
            )
        dg = np.broadcast_to(
            np.asarray(desired_goal, np.float32).reshape(-1, self.goal_dim), (length, self.goal_dim)
        )
        slot = self._next
        self.obs[slot, : length + 1] = obs
        self.ag[slot, : length + 1] = ag
        self.tag[slot, : length + 1] = tag
        self.dg[slot, :length] = dg
        self.action[slot, :length] = act
        if self.label is not None:
            self.label[slot, :length] = lab
        self.length[slot] = length
        self._next = (slot + 1) % self.n_slots
        np.cumsum(self.length, out=self._cum)
        self.n_episodes_added += 1
        return slot

    # ------------------------------------------------------------------ reading
    @property
    def n_transitions(self) -> int:
        """Transitions currently stored."""
        return int(self._cum[-1])

    @property
    def n_episodes(self) -> int:
        """Episodes currently stored."""
        return int(np.count_nonzero(self.length))

    def __len__(self) -> int:
        return self.n_transitions

    def judge(
        self, true_ag: np.ndarray, ag: np.ndarray, goal: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The sparse reward ([n] float32) and whether the goal counts as reached ([n] bool) for
        rows of achieved goals (the true one and the estimate) against ``goal``: on the true
        achieved goal, and with ``judge`` ``both`` on the estimate as well (``staged``: the mean
        of the truth's reward and the worse of the two)."""
        n = len(goal)
        reward = np.asarray(self.reward_fn(true_ag, goal, None), np.float32).reshape(n)
        on_both = self.judge_on != "truth"
        if on_both:  # the estimate must be there too: the worse of the two rewards
            r_est = np.asarray(self.reward_fn(ag, goal, None), np.float32)
            both = np.minimum(reward, r_est.reshape(n))
            reward = (
                (0.5 * (reward + both)).astype(np.float32) if self.judge_on == "staged" else both
            )
        if self.success_fn is None:
            success = reward_success(reward)
        else:
            success = np.asarray(self.success_fn(true_ag, goal), bool).reshape(n)
            if on_both:
                success &= np.asarray(self.success_fn(ag, goal), bool).reshape(n)
        return reward, np.asarray(success, bool)

    def sample(self, batch_size: int, relabel: bool = True) -> HerBatch:
        """Draw ``batch_size`` transitions uniformly and relabel them (see the module docstring);
        ``relabel=False`` keeps every recorded goal (what behaviour cloning wants)."""
        total = self.n_transitions
        if total == 0:
            raise Sim2PiError("the replay buffer is empty: collect at least one episode first")
        rng = self.rng
        flat = (rng.random(batch_size) * total).astype(np.int64)
        ep = np.searchsorted(self._cum, flat, side="right")
        start = self._cum[ep] - self.length[ep]
        t = flat - start
        length = self.length[ep]
        swap = rng.random(batch_size) < (self.relabel_prob if relabel else 0.0)
        goal_t = np.full(batch_size, -1, np.int64)
        if swap.any():
            # ag[e, 0..length]: goals a transition produced are ag[e, 1..length] (start=1), and a
            # 'future' goal of step t is one of ag[e, t+1..length] (min_offset=1).
            goal_t[swap] = goal_indices(
                self.strategy,
                t[swap],
                length[swap],
                rng,
                start=1,
                gamma=self.geometric_gamma,
                min_offset=1,
            )
        goal = self.dg[ep, t]
        if swap.any():
            goal[swap] = self.tag[ep[swap], goal_t[swap]]
        reward = np.zeros(batch_size, np.float32)
        terminated = np.zeros(batch_size, bool)
        m = np.zeros(batch_size, np.int64)  # steps summed before bootstrapping
        alive = np.ones(batch_size, bool)
        for k in range(self.n_step):
            alive &= t + k < length  # the episode has a transition t + k
            if not alive.any():
                break
            i = np.minimum(t + k + 1, length)
            r, reached = self.judge(self.tag[ep, i], self.ag[ep, i], goal)
            reward += np.where(alive, self.gamma**k * r, 0.0).astype(np.float32)
            m += alive
            if self.terminate_on_success:
                terminated |= alive & reached
                alive &= ~reached
        nxt = t + m
        next_tag, next_ag = self.tag[ep, nxt], self.ag[ep, nxt]
        discount = (self.gamma**m * ~terminated).astype(np.float32)
        if self.shaping:
            # potential-based shaping (Ng et al. 1999), phi = -shaping * |true ag - goal| and 0 at
            # a terminal state: it leaves the optimal policies of the sparse task unchanged. Over
            # m steps its terms telescope to gamma^m phi(t + m) - phi(t).
            phi = -self.shaping * np.linalg.norm(self.tag[ep, t] - goal, axis=-1)
            phi_next = -self.shaping * np.linalg.norm(next_tag - goal, axis=-1)
            reward = (reward + discount * phi_next - phi).astype(np.float32)
        action = self.action[ep, t]
        return HerBatch(
            observation=self.obs[ep, t],
            achieved_goal=self.ag[ep, t],
            desired_goal=goal,
            action=action,
            reward=reward,
            next_observation=self.obs[ep, nxt],
            next_achieved_goal=next_ag,
            terminated=terminated.astype(np.float32),
            discount=discount,
            relabeled=swap,
            episode=ep,
            t=t,
            goal_t=goal_t,
            true_achieved_goal=self.tag[ep, t],
            next_true_achieved_goal=next_tag,
            label=action if self.label is None else self.label[ep, t],
        )


class EpisodeStager:
    """Collects the transitions of ``n_envs`` parallel episodes until each ends, vectorized.

    Call :meth:`start` with the first observations, then :meth:`step` after every vector-env step;
    it returns the episodes that ended as ``(obs, achieved_goal, desired_goal, action,
    true_achieved_goal)`` tuples ready for :meth:`EpisodeReplay.add_episode`. ``final_*`` are the last observations of the envs that
    ended (before the autoreset replaced them with the next episode's first observation).
    """

    def __init__(self, n_envs: int, obs_dim: int, goal_dim: int, act_dim: int, max_steps: int):
        self.n = n_envs
        self.max_steps = max_steps
        self.obs = np.zeros((n_envs, max_steps + 1, obs_dim), np.float32)
        self.ag = np.zeros((n_envs, max_steps + 1, goal_dim), np.float32)
        self.tag = np.zeros((n_envs, max_steps + 1, goal_dim), np.float32)
        self.dg = np.zeros((n_envs, max_steps, goal_dim), np.float32)
        self.action = np.zeros((n_envs, max_steps, act_dim), np.float32)
        self.t = np.zeros(n_envs, np.int64)
        self._rows = np.arange(n_envs)

    def start(
        self,
        obs: np.ndarray,
        achieved_goal: np.ndarray,
        true_achieved_goal: np.ndarray | None = None,
    ) -> None:
        """Record the first observation of every env's episode."""
        self.t[:] = 0
        self.obs[:, 0] = obs
        self.ag[:, 0] = achieved_goal
        self.tag[:, 0] = achieved_goal if true_achieved_goal is None else true_achieved_goal

    def step(
        self,
        desired_goal: np.ndarray,
        action: np.ndarray,
        next_obs: np.ndarray,
        next_achieved_goal: np.ndarray,
        done: np.ndarray,
        final_obs: np.ndarray,
        final_achieved_goal: np.ndarray,
        next_true_achieved_goal: np.ndarray | None = None,
        final_true_achieved_goal: np.ndarray | None = None,
    ) -> list[tuple[np.ndarray, ...]]:
        """Append one step for every env; returns the finished episodes.

        ``next_obs`` / ``next_achieved_goal`` are what the vector env returned (already the next
        episode's first observation where ``done``); ``final_*`` hold the true last observation in
        the rows where ``done`` (other rows are ignored). The ``*true_achieved_goal`` arrays
        default to the achieved goals.
        """
        if next_true_achieved_goal is None:
            next_true_achieved_goal = next_achieved_goal
        if final_true_achieved_goal is None:
            final_true_achieved_goal = final_achieved_goal
        rows, t = self._rows, self.t
        if np.any(t >= self.max_steps):
            raise Sim2PiError(
                f"an episode ran past max_steps={self.max_steps}; is the env's time "
                "limit larger than the task's?"
            )
        self.dg[rows, t] = desired_goal
        self.action[rows, t] = action
        last_obs = np.where(done[:, None], final_obs, next_obs)
        last_ag = np.where(done[:, None], final_achieved_goal, next_achieved_goal)
        self.obs[rows, t + 1] = last_obs
        self.ag[rows, t + 1] = last_ag
        self.tag[rows, t + 1] = np.where(
            done[:, None], final_true_achieved_goal, next_true_achieved_goal
        )
        self.t += 1
        out: list[tuple[np.ndarray, ...]] = []
        for i in np.flatnonzero(done):
            n = int(self.t[i])
            out.append(
                (
                    self.obs[i, : n + 1].copy(),
                    self.ag[i, : n + 1].copy(),
                    self.dg[i, :n].copy(),
                    self.action[i, :n].copy(),
                    self.tag[i, : n + 1].copy(),
                )
            )
            self.t[i] = 0
            self.obs[i, 0] = next_obs[i]
            self.ag[i, 0] = next_achieved_goal[i]
            self.tag[i, 0] = next_true_achieved_goal[i]
        return out
