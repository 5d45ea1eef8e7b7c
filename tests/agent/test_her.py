"""SAC+HER: learns a toy goal env, saves through agent.checkpoint, uses worker processes."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from agent.her import (
    EnsembleCritic,
    HerConfig,
    RunningStats,
    SacHer,
    _update_block,
    evaluate,
    train,
)
from agent.her_buffer import EpisodeReplay
from agent.her_envs import GoalObs, LocalEnvs, ProcessEnvs
from hardware.spec import Spec, action_feature, vector

SUCCESS = 0.05
MAX_STEPS = 50


class PointReach(gym.Env):
    """A point on a plane moved by velocity commands to a goal (a tiny stand-in for RoverReach).

    Observation: position and last action (4), achieved goal = position, desired goal in
    [-0.8, 0.8]^2. Action: velocity in [-1, 1]^2 times 0.08 per step. Sparse reward (0 within
    5 cm, else -1), ends on success or after 50 steps.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self) -> None:
        box = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
        self.observation_space = gym.spaces.Dict(
            {
                "observation": gym.spaces.Box(-2.0, 2.0, (4,), np.float32),
                "achieved_goal": box,
                "desired_goal": box,
            }
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.pos = np.zeros(2)
        self.last = np.zeros(2)
        self.goal = np.zeros(2)
        self.t = 0

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "observation": np.concatenate([self.pos, self.last]).astype(np.float32),
            "achieved_goal": self.pos.astype(np.float32),
            "desired_goal": self.goal.astype(np.float32),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.8, 0.8, 2)
        self.goal = self.np_random.uniform(-0.8, 0.8, 2)
        self.last = np.zeros(2)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        a = np.clip(np.asarray(action, np.float64), -1, 1)
        self.pos = np.clip(self.pos + 0.08 * a, -1.0, 1.0)
        self.last = a
        self.t += 1
        obs = self._obs()
        reward = float(self.compute_reward(obs["achieved_goal"], obs["desired_goal"], None))
        success = reward == 0.0
        return obs, reward, success, self.t >= MAX_STEPS, {"is_success": success}

    def compute_reward(self, achieved, desired, info):
        d = np.linalg.norm(np.asarray(achieved) - np.asarray(desired), axis=-1)
        return -(d >= SUCCESS).astype(np.float32)


def point_spec() -> Spec:
    lim = (-2.0, -2.0)
    return Spec(
        observation={
            "observation": vector(
                "observation", ("x", "y", "ax", "ay"), ("m", "m", "-", "-"), (-2.0,) * 4, (2.0,) * 4
            ),
            "achieved_goal": vector("achieved_goal", ("x", "y"), ("m", "m"), lim, (2.0, 2.0)),
            "desired_goal": vector("desired_goal", ("x", "y"), ("m", "m"), lim, (2.0, 2.0)),
        },
        action=action_feature(),
        task="point_reach",
        robot="point",
        robot_hash="toy",
        control_rate=10.0,
    )


def toy_cfg(**kw: Any) -> HerConfig:
    base = dict(
        task="reach",
        envs=4,
        workers=0,
        minutes=5.0,
        total_steps=4000,
        utd=0.5,
        learning_starts=500,
        batch_size=128,
        hidden=(64, 64),
        eval_every=4000,
        eval_episodes=40,
        eval_envs=8,
        gamma=0.95,
        log_every=1e9,
    )
    base.update(kw)
    return HerConfig(**base)


def run_toy(**kw: Any):
    return train(toy_cfg(**kw), env_fn=PointReach, spec=point_spec(), max_steps=MAX_STEPS)


def test_learns_the_toy_goal_env_with_hindsight() -> None:
    res = run_toy(seed=0)
    final = res.history[-1]["success_rate"]
    # random actions reach ~3 % of these goals; without relabeling 4000 steps are not enough
    assert final >= 0.8, res.history
    assert res.env_steps == 4000 and res.updates == pytest.approx(0.5 * (4000 - 500), abs=8)


def test_without_hindsight_the_same_budget_fails() -> None:
    """The learnability threshold above is one a learner without HER misses."""
    res = run_toy(seed=0, strategy="none")
    assert res.history[-1]["success_rate"] < 0.5, res.history


def test_checkpoint_loads_through_agent_checkpoint(tmp_path) -> None:
    from agent.checkpoint import load_policy, load_trainer_state

    res = run_toy(
        seed=1,
        total_steps=1200,
        learning_starts=400,
        eval_every=1200,
        eval_episodes=8,
        out=str(tmp_path / "run"),
    )
    policy, meta = load_policy(tmp_path / "run")
    assert meta.algo == "sac_her" and meta.policy.head == "tanh_gaussian"
    assert meta.step == 1200 and meta.train["strategy"] == "future"
    assert meta.spec == point_spec()
    state = load_trainer_state(tmp_path / "run")
    assert state is not None and "critic" in state
    # the loaded policy acts exactly like the trained actor's deterministic output
    rng = np.random.default_rng(0)
    o = GoalObs(
        rng.uniform(-1, 1, (16, 4)).astype(np.float32),
        rng.uniform(-1, 1, (16, 2)).astype(np.float32),
        rng.uniform(-1, 1, (16, 2)).astype(np.float32),
    )
    ours = res.agent.act(o, deterministic=True)
    theirs = policy.act(
        {
            "observation": o.observation[:, None],
            "achieved_goal": o.achieved_goal[:, None],
            "desired_goal": o.desired_goal[:, None],
        }
    )
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert np.abs(theirs).max() <= 1.0

    # the run is not overwritten by accident, and --resume continues it
    from hardware.errors import Sim2PiError

    more = {"learning_starts": 400, "eval_every": 400, "eval_episodes": 8}
    with pytest.raises(Sim2PiError, match="already holds a run"):
        run_toy(seed=1, total_steps=2000, out=str(tmp_path / "run"), **more)
    with pytest.raises(Sim2PiError, match="no checkpoint"):
        run_toy(seed=1, total_steps=2000, out=str(tmp_path / "new"), resume=True, **more)
    again = run_toy(seed=1, total_steps=2000, out=str(tmp_path / "run"), resume=True, **more)
    assert again.env_steps == 2000 and again.history[0]["env_steps"] == 1600
    # it started from the saved networks and optimizer: learning continues, not restarts
    assert again.updates - res.updates == pytest.approx(0.5 * (800 - 400), abs=8)
    assert load_policy(tmp_path / "run")[1].step == 2000
    with pytest.raises(Sim2PiError, match="different network"):
        run_toy(
            seed=1,
            total_steps=2400,
            out=str(tmp_path / "run"),
            resume=True,
            hidden=(32, 32),
            **more,
        )


def test_best_evaluation_is_kept_in_run_best_across_resume(tmp_path) -> None:
    """RUN/best holds the actor of the best evaluation (first of equals), loadable on its own;
    a resumed run only replaces it with a better one."""
    from agent.checkpoint import load_policy, read_meta, update_eval

    more = {"learning_starts": 400, "eval_every": 400, "eval_episodes": 8}
    res = run_toy(seed=2, total_steps=2400, out=str(tmp_path / "run"), **more)
    rates = [h["success_rate"] for h in res.history]
    assert len(rates) == 6 and len(set(rates)) > 1, rates  # something to choose between
    first_best = res.history[rates.index(max(rates))]
    meta = read_meta(tmp_path / "run" / "best")
    assert meta.step == first_best["env_steps"] and meta.eval["success_rate"] == max(rates)
    policy, _ = load_policy(tmp_path / "run" / "best")
    assert policy.config == res.agent.actor.config
    assert not (tmp_path / "run" / "best" / "resume.pt").exists()
    # an unbeatable best survives --resume; the latest checkpoint moves on
    update_eval(tmp_path / "run" / "best", {"success_rate": 1.0, "true_success_rate": 1.0})
    run_toy(seed=2, total_steps=3200, out=str(tmp_path / "run"), resume=True, **more)
    assert read_meta(tmp_path / "run" / "best").step == first_best["env_steps"]
    assert read_meta(tmp_path / "run").step == 3200


def test_demos_with_q_filter_update_runs_and_reports_bc() -> None:
    """The fused update with demo rows: BC loss is computed on the demo rows only."""
    cfg = toy_cfg(demos="unused", demo_fraction=0.25, q_filter=True, critic_warmup=0)
    agent = SacHer(point_spec(), cfg)
    from agent.her import Batch

    n, d = 32, 8
    x = torch.randn(n + d, agent.in_dim)
    is_demo = torch.zeros(n + d, dtype=torch.bool)
    is_demo[n:] = True
    batch = Batch(
        x,
        torch.rand(n + d, 2) * 2 - 1,
        -torch.ones(n + d),
        torch.randn(n + d, agent.in_dim),
        torch.ones(n + d),
        is_demo,
        torch.randn(n + d, agent.priv_dim),  # the critics' ground-truth input
        torch.randn(n + d, agent.priv_dim),
    )
    before = [p.clone() for p in agent.actor.trunk.parameters()]
    out = agent.update(batch)
    assert "losses/bc" in out and 0.0 <= out["charts/q_filter_kept"] <= 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.actor.trunk.parameters()))


def test_critic_target_bootstraps_with_each_rows_discount() -> None:
    """The critics regress on r + discount * (min target Q(s', a') - alpha log pi(a'|s')), with
    the batch's own per-row discount (gamma^m (1 - terminated) from n-step sampling), not a
    global gamma: the reported critic loss equals one computed by hand from the same draws."""
    agent = SacHer(point_spec(), toy_cfg(hidden=(32, 32)))
    from agent.her import Batch, _cat

    torch.manual_seed(1)
    n = 64
    # per-row discounts as n-step sampling makes them: 0 (terminal), gamma, gamma^2, gamma^3
    discount = 0.95 ** torch.randint(1, 4, (n,)).float() * (torch.rand(n) > 0.25)
    batch = Batch(
        torch.randn(n, agent.in_dim),
        torch.rand(n, 2) * 2 - 1,
        -torch.rand(n) * 3,
        torch.randn(n, agent.in_dim),
        discount,
        torch.zeros(n, dtype=torch.bool),
        torch.randn(n, agent.priv_dim),
        torch.randn(n, agent.priv_dim),
    )
    alpha = agent.log_alpha.exp().detach()
    torch.manual_seed(7)
    with torch.no_grad():
        na, nlogp = agent.head.sample(agent.actor.trunk(batch.next_x))
        nq = agent.critic_target(_cat(batch.next_x, batch.next_priv, na)).min(0).values
        target = batch.reward + discount * (nq - alpha * nlogp)
        q = agent.critic(_cat(batch.x, batch.priv, batch.action))
        expected = float(((q - target) ** 2).mean(1).sum())
        with_gamma = float(((q - batch.reward - 0.95 * (nq - alpha * nlogp)) ** 2).mean(1).sum())
    torch.manual_seed(7)
    out = agent.update(batch)
    assert out["losses/critic"] == pytest.approx(expected, rel=1e-5)
    assert abs(expected - with_gamma) > 1e-3 * expected  # the check can tell the two apart


def test_ensemble_critic_matches_two_separate_mlps() -> None:
    torch.manual_seed(0)
    c = EnsembleCritic(5, (7, 3), n=2)
    x = torch.randn(11, 5)
    q = c(x)
    for i in range(2):
        h = torch.relu(x @ c.weights[0][i] + c.biases[0][i])
        h = torch.relu(h @ c.weights[1][i] + c.biases[1][i])
        np.testing.assert_allclose(
            q[i].detach(), (h @ c.weights[2][i] + c.biases[2][i])[:, 0].detach(), atol=1e-6
        )
    # detach=True keeps the gradient to the input but not to the weights
    xa = x.clone().requires_grad_(True)
    c(xa, detach=True).sum().backward()
    assert xa.grad is not None and all(p.grad is None for p in c.parameters())


def test_running_stats_match_numpy() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, (1000, 3))
    s = RunningStats(3)
    for chunk in np.array_split(data, 7):
        s.update(chunk)
    np.testing.assert_allclose(s.mean, data.mean(0), rtol=1e-9)
    np.testing.assert_allclose(s.std(), data.std(0), rtol=1e-9)


def test_worker_processes_step_the_same_as_in_process() -> None:
    fns = [PointReach] * 4
    local = LocalEnvs(fns)
    proc = ProcessEnvs(fns, num_workers=2, context="fork")
    try:
        a, b = local.reset(seed=3), proc.reset(seed=3)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
        rng = np.random.default_rng(0)
        for _ in range(60):  # crosses the 50-step time limit: autoreset and final obs
            act = rng.uniform(-1, 1, (4, 2)).astype(np.float32)
            local.step_async(act)
            proc.step_async(act)
            ra, rb = local.step_wait(), proc.step_wait()
            for x, y in zip(ra.obs, rb.obs):
                np.testing.assert_array_equal(x, y)
            for x, y in zip(ra[1:], rb[1:]):
                np.testing.assert_array_equal(x, y)
    finally:
        local.close()
        proc.close()


def test_cli_registers_train_her_with_every_config_field() -> None:
    from dataclasses import fields

    from typer.testing import CliRunner

    from deploy.cli import app

    r = CliRunner().invoke(app, ["train", "her", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for f in fields(HerConfig):
        assert "--" + f.name.replace("_", "-") in r.output, f.name


class CountingPointReach(PointReach):
    """PointReach whose compute_reward records the batch sizes it is called with."""

    batch_calls: list[int] = []

    def compute_reward(self, achieved, desired, info):
        a = np.asarray(achieved)
        if a.ndim == 2:
            CountingPointReach.batch_calls.append(a.shape[0])
        return super().compute_reward(achieved, desired, info)


def test_training_relabels_with_the_envs_compute_reward() -> None:
    CountingPointReach.batch_calls.clear()
    cfg = toy_cfg(total_steps=600, learning_starts=400, eval_episodes=0, batch_size=32, utd=0.5)
    res = train(cfg, env_fn=CountingPointReach, spec=point_spec(), max_steps=MAX_STEPS)
    # one vectorized call per block of gradient steps: 4 envs * utd 0.5 = 2 steps of 32; and one
    # per finished episode (its steps, for the train success the log reports)
    calls = CountingPointReach.batch_calls
    assert res.updates > 0
    assert calls.count(64) == res.updates // 2
    assert all(c == 64 or 1 <= c <= MAX_STEPS for c in calls) and len(set(calls)) > 1


def test_egocentric_features_match_the_exported_policy_inputs(reach_spec) -> None:  # type: ignore[no-untyped-def]
    """SAC+HER builds the robot-frame goal inputs in numpy; the saved actor builds them in torch
    (agent.policies.vector_inputs). With a pose in the observation both must act the same."""
    agent = SacHer(reach_spec, HerConfig(task="reach", hidden=(32, 32)))
    assert agent.ego is not None and agent.in_dim == 6 + 3 * 2 + 2 * 2
    rng = np.random.default_rng(3)
    th = rng.uniform(-np.pi, np.pi, 32)
    obs = np.c_[rng.uniform(-1, 1, (32, 2)), np.cos(th), np.sin(th), rng.normal(0, 5, (32, 2))]
    o = GoalObs(
        obs.astype(np.float32),
        rng.uniform(-1, 1, (32, 2)).astype(np.float32),
        rng.uniform(-1, 1, (32, 2)).astype(np.float32),
    )
    agent.stats.update(agent.features(o.observation, o.achieved_goal, o.desired_goal))
    agent.refresh_stats()
    ours = agent.act(o, deterministic=True)
    theirs = agent.actor.act(
        {
            "observation": o.observation[:, None],
            "achieved_goal": o.achieved_goal[:, None],
            "desired_goal": o.desired_goal[:, None],
        }
    )
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_colored_noise_has_unit_variance_correlation_rho_and_fresh_resets() -> None:
    from agent.her import ColoredNoise

    rng = np.random.default_rng(0)
    n = ColoredNoise(4000, 2, 0.9, rng)
    prev = n.e.copy()
    cur = n.step().copy()
    assert abs(cur.std() - 1.0) < 0.03 and abs(cur.mean()) < 0.03
    corr = np.corrcoef(prev.ravel(), cur.ravel())[0, 1]
    assert abs(corr - 0.9) < 0.02
    rows = np.zeros(4000, bool)
    rows[:2000] = True
    n.reset(rows)
    # reset rows are independent of their past, the others keep it
    assert abs(np.corrcoef(cur[:2000].ravel(), n.e[:2000].ravel())[0, 1]) < 0.05
    np.testing.assert_array_equal(n.e[2000:], cur[2000:])
    white = ColoredNoise(4000, 2, 0.0, rng)
    a = white.e.copy()
    assert abs(np.corrcoef(a.ravel(), white.step().ravel())[0, 1]) < 0.05


def test_sampled_actions_use_the_given_noise() -> None:
    agent = SacHer(point_spec(), toy_cfg())
    o = GoalObs(
        np.zeros((3, 4), np.float32), np.zeros((3, 2), np.float32), np.ones((3, 2), np.float32)
    )
    eps = np.random.default_rng(1).standard_normal((3, 2))
    a1, a2 = agent.act(o, False, noise=eps), agent.act(o, False, noise=eps)
    np.testing.assert_array_equal(a1, a2)  # the noise decides the sample
    assert not np.allclose(a1, agent.act(o, False, noise=-eps))
    assert not np.allclose(a1, agent.deterministic(o))


def point_expert_replay(episodes: int, seed: int = 0, strategy: str = "future") -> EpisodeReplay:
    """Demonstrations on PointReach: full speed straight at the goal, slowing on arrival."""
    env = PointReach()
    replay = EpisodeReplay(
        4, 2, 2, MAX_STEPS, episodes * MAX_STEPS, reward_fn=env.compute_reward, strategy=strategy
    )
    for e in range(episodes):
        o, _ = env.reset(seed=seed + e)
        obs, ag, acts = [o["observation"]], [o["achieved_goal"]], []
        done = False
        while not done:
            a = np.clip((o["desired_goal"] - o["achieved_goal"]) / 0.08, -1, 1).astype(np.float32)
            o, _, term, trunc, _ = env.step(a)
            obs.append(o["observation"])
            ag.append(o["achieved_goal"])
            acts.append(a)
            done = term or trunc
        replay.add_episode(np.array(obs), np.array(ag), o["desired_goal"], np.array(acts))
    return replay


@pytest.mark.parametrize("actor", ["gaussian", "discrete"])
def test_bc_pretraining_clones_the_demonstrator(actor: str) -> None:
    """A few hundred BC steps on expert demos solve PointReach before any RL; an untrained actor
    does not."""
    torch.manual_seed(0)
    spec = point_spec()
    agent = SacHer(spec, toy_cfg(demos="unused", bc_pretrain=1, actor=actor))
    demo = point_expert_replay(40)
    b = demo.sample(5000, relabel=False)
    agent.stats.update(agent.features(b.observation, b.achieved_goal, b.desired_goal))
    agent.refresh_stats()
    envs = LocalEnvs([PointReach] * 8)
    before = evaluate(agent.deterministic, envs, 40, seed=3)["success_rate"]
    gaussian = actor == "gaussian"
    loss = agent.pretrain_bc(demo, 600 if gaussian else 1200, 128)
    after = evaluate(agent.deterministic, envs, 40, seed=3)["success_rate"]
    # squared error for the Gaussian's mean, the bins' NLL for the discrete actor (whose 0.1-wide
    # bins clone the slow-down at the goal less finely: 85-100 % over seeds 0-3)
    assert before < 0.3 and after >= (0.8 if gaussian else 0.75), (before, after)
    assert loss < (0.05 if gaussian else 0.1), loss


@pytest.mark.parametrize("actor", ["gaussian", "discrete"])
def test_cloning_targets_the_label_not_the_executed_action(actor: str) -> None:
    """DART demos execute noisy actions (the critics' transitions) but clone the expert's clean
    label: with a constant label and random executed actions, both BC pretraining and the BC term
    of the update (during the critic warm-up, when it is the actor's only loss) end at the label;
    cloning the executed actions would end near their mean, 0."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    target = np.array([0.6, -0.6], np.float32)

    def replay() -> EpisodeReplay:
        demo = point_expert_replay(10)
        n = demo.n_episodes
        demo.label[:n] = target
        demo.action[:n] = rng.uniform(-1, 1, demo.action[:n].shape)
        return demo

    pre = SacHer(point_spec(), toy_cfg(demos="unused", bc_pretrain=1, actor=actor))
    demo = replay()
    pre.pretrain_bc(demo, 300, 128)
    held = SacHer(point_spec(), toy_cfg(demos="unused", critic_warmup=10_000, actor=actor))
    for _ in range(30):
        _update_block(held, point_expert_replay(2, seed=50), demo, 10, 32, 32)
    b = demo.sample(200, relabel=False)
    for agent in (pre, held):
        x = agent.inputs(b.observation, b.achieved_goal, b.desired_goal)
        with torch.no_grad():
            a = agent.actor.head.decode(agent.actor.trunk(x)).numpy()
        np.testing.assert_allclose(np.median(a, 0), target, atol=0.1)


@pytest.mark.parametrize("bc_goals", ["recorded", "all"])
def test_demo_rows_keep_their_recorded_goals_for_cloning(bc_goals: str) -> None:
    agent = SacHer(point_spec(), toy_cfg(demos="unused", bc_goals=bc_goals))
    replay, demo = point_expert_replay(5, seed=10), point_expert_replay(5)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_update = agent.update

    def spy(batch):  # type: ignore[no-untyped-def]
        seen.append((batch.is_demo.clone(), batch.x.clone()))
        return real_update(batch)

    agent.update = spy  # type: ignore[method-assign]
    _update_block(agent, replay, demo, 3, 64, 32)
    # the recorded goal of a demo row is its episode's goal; relabeled goals are points on the way
    goals = demo.dg[: demo.n_episodes, 0]
    cols = slice(6, 8)  # the features are [obs (4), ag (2), goal (2), ...]
    recorded = []
    for mask, x in seen:
        assert not mask[:64].any() and mask[64:].all()  # RL rows are never cloned
        g = x[64:, cols].numpy() * agent.std_t[cols].numpy() + agent.mean_t[cols].numpy()
        recorded += list(np.abs(g[:, None] - goals[None]).max(-1).min(-1) < 1e-4)
    if bc_goals == "recorded":
        assert all(recorded)
    else:
        assert 0.05 < np.mean(recorded) < 0.5  # relabeled with probability k / (k + 1) = 0.8


@pytest.mark.parametrize("actor", ["gaussian", "discrete"])
def test_critic_warmup_holds_the_actor_until_the_critics_have_learned(actor: str) -> None:
    from agent.her import Batch

    agent = SacHer(point_spec(), toy_cfg(critic_warmup=3, actor=actor))
    n = 32
    batch = Batch(
        torch.randn(n, agent.in_dim),
        torch.rand(n, 2) * 2 - 1,
        -torch.ones(n),
        torch.randn(n, agent.in_dim),
        torch.ones(n),
        torch.zeros(n, dtype=torch.bool),  # no demo rows, so no BC either
        torch.randn(n, agent.priv_dim),
        torch.randn(n, agent.priv_dim),
    )
    actor0 = [p.clone() for p in agent.actor.parameters()]
    critic0 = [p.clone() for p in agent.critic.parameters()]
    for _ in range(3):
        agent.update(batch)
    assert all(torch.equal(a, b) for a, b in zip(actor0, agent.actor.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(critic0, agent.critic.parameters()))
    agent.update(batch)
    assert any(not torch.equal(a, b) for a, b in zip(actor0, agent.actor.parameters()))


def test_demo_options_resolve_and_bad_values_are_refused() -> None:
    from hardware.errors import Sim2PiError

    with_demos, without = HerConfig(demos="d"), HerConfig()
    assert (with_demos.bc_pretrain, with_demos.critic_warmup) == (10_000, 20_000)
    assert (without.bc_pretrain, without.critic_warmup) == (0, 0)
    assert HerConfig(demos="d", bc_pretrain=0).critic_warmup == 0
    for kw, match in (
        ({"bc_pretrain": 100}, "needs --demos"),
        ({"demos": "d", "bc_pretrain": -1}, "bc_pretrain must be >= 0"),
        ({"critic_warmup": -5}, "critic_warmup must be >= 0"),
        ({"bc_goals": "some"}, "'recorded' or 'all'"),
        ({"actor": "beta"}, "'gaussian' or 'discrete'"),
        ({"actor": "discrete", "q_filter": True}, "CRR loss already"),
        ({"actor": "discrete", "bins": 1}, "bins must be >= 2"),
        ({"crr_goals": "some"}, "'real' or 'all'"),
        ({"reward_on": "guess"}, "'truth' or 'estimate' or 'both'"),
        ({"reverse_starts": 0.6, "near_starts": 0.5}, "add up to at most 1"),
        ({"reverse_starts": -0.1}, "must be >= 0"),
        ({"curriculum_success": 0.0}, r"curriculum_success must be in \(0, 1\]"),
        ({"curriculum_step": 1.5}, r"curriculum_step must be in \(0, 1\]"),
        ({"shaping": -1.0}, "shaping must be >= 0"),
    ):
        with pytest.raises(Sim2PiError, match=match):
            HerConfig(**kw)
    # a custom env ends its episodes itself: episode_end='reward' cannot rebuild it
    with pytest.raises(Sim2PiError, match="episode_end='reward' needs the config's sim2pi task"):
        train(toy_cfg(episode_end="reward"), env_fn=PointReach, spec=point_spec(), max_steps=9)


@pytest.mark.parametrize("crr_goals", ["all", "real"])
def test_crr_clones_the_batch_actions_the_critics_prefer(crr_goals: str) -> None:
    """The discrete actor's CRR loss moves it towards the batch actions rated above its own
    actions and away from the others: with a critic that prefers driving +x, +y, the actor's
    action turns positive even though half the batch drives the other way. With
    ``crr_goals="real"`` rows with hindsight goals are not cloned, however good."""
    from agent.her import Batch

    agent = SacHer(point_spec(), toy_cfg(actor="discrete", bins=5, crr_goals=crr_goals))
    agent.critic.requires_grad_(False)  # a fixed critic: Q = the action's sum (+x, +y is best)

    def critic(x: torch.Tensor, detach: bool = False) -> torch.Tensor:
        q = x[:, -2:].sum(-1)
        return torch.stack([q, q])

    agent.critic.forward = critic  # type: ignore[method-assign]
    n = 64
    x = torch.randn(n, agent.in_dim)
    good = torch.full((n // 2, 2), 1.0)
    action = torch.cat([good, -good])  # half the rows drive +x +y, half -x -y
    batch = Batch(
        x,
        action,
        -torch.ones(n),
        torch.randn(n, agent.in_dim),
        torch.ones(n),
        torch.zeros(n, dtype=torch.bool),
        torch.randn(n, agent.priv_dim),
        torch.randn(n, agent.priv_dim),
        torch.arange(n) < n // 2,  # the good rows have hindsight goals
    )
    kept = [agent.update(batch)["charts/crr_kept"] for _ in range(150)]
    a = agent.actor.unnormalize_action(agent.head.decode(agent.actor.trunk(x)))
    if crr_goals == "real":
        assert max(kept) == 0.0 and not (a > 0.9).all()
        return
    # at first the good half beats the actor's own (random) actions, the bad half does not; once
    # the actor drives +x, +y itself, nothing in the batch beats it any more
    assert 0.3 < kept[0] <= 0.55 and kept[-1] < 0.1, kept
    assert (a > 0.9).all(), a


def test_discrete_head_samples_follow_its_probabilities() -> None:
    """Drawn bins come from the head's own autoregressive distribution and report its log-prob."""
    from agent.policies import DiscreteHead

    torch.manual_seed(0)
    head = DiscreteHead(8, 2, bins=5)
    feat = torch.randn(1, 8).repeat(20_000, 1)
    with torch.no_grad():
        u, logp = head.sample(feat)
        np.testing.assert_allclose(logp.numpy(), -head.nll(feat, u).numpy(), atol=1e-5)
    # the frequency of each joint bin pair matches its probability
    bins = head.to_bins(u)
    joint = (bins[:, 0] * 5 + bins[:, 1]).numpy()
    freq = np.bincount(joint, minlength=25) / len(joint)
    prob = np.zeros(25)
    for k in np.unique(joint):
        prob[k] = float(logp[joint == k][0].exp())
    np.testing.assert_allclose(freq, prob, atol=0.015)
    assert prob.sum() == pytest.approx(1.0, abs=0.02)


def test_level_schedule_rises_only_on_enough_successful_episodes() -> None:
    from agent.her_envs import LevelSchedule

    s = LevelSchedule(threshold=0.5, step=0.25, min_episodes=10)
    assert not s.update(8, 8) and s.level == 0.0  # too few episodes yet
    assert s.update(4, 0) and s.level == 0.25  # the counts add up: 8 of 12 >= 0.5
    s = LevelSchedule(threshold=0.5, step=0.25, min_episodes=10)
    assert not s.update(10, 4) and s.rate == pytest.approx(0.4)
    assert s.update(10, 7) and s.level == 0.25 and s.episodes == 0  # 11 / 20 >= 0.5
    for _ in range(3):
        assert s.update(10, 10)
    assert s.level == 1.0 and not s.update(100, 100)  # capped at the task's own starts
