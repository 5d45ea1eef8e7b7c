"""Policies: shapes for every arch/head/spec, multimodal heads, learnability in the reach env."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.configs import GCBCConfig, PolicyConfig
from agent.data import EpisodeStore, compute_stats
from agent.evaluate import evaluate
from agent.gcbc import Trainer, train
from agent.policies import Policy
from agent.relabel import RelabelConfig
from hardware.errors import Sim2PiError, SpecMismatch
from hardware.tasks import task_spec


def random_obs(spec, batch: int, history: int, seed: int = 0) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    return {
        k: (
            torch.randint(0, 256, (batch, history, *f.shape), generator=g, dtype=torch.uint8)
            if f.is_image
            else torch.randn((batch, history, *f.shape), generator=g)
        )
        for k, f in spec.observation.items()
    }


@pytest.mark.parametrize("task", ["reach", "push", "seek"])
@pytest.mark.parametrize("arch", ["mlp", "gru"])
@pytest.mark.parametrize("head", ["mse", "gmm", "discrete", "tanh_gaussian"])
def test_every_policy_maps_windows_to_clipped_actions(desc, task, arch, head) -> None:  # type: ignore[no-untyped-def]
    spec = task_spec(task, desc)
    p = Policy(
        spec,
        PolicyConfig(
            arch=arch, head=head, history=3, hidden=(32, 32), image_embed=16, egocentric=True
        ),
    )
    obs = random_obs(spec, 5, 3)
    a = p(obs)
    assert a.shape == (5, 2) and torch.all(a.abs() <= 1.0)
    loss = p.loss(obs, torch.rand(5, 2) * 2 - 1)
    assert loss.shape == (5,) and torch.isfinite(loss).all()
    loss.mean().backward()


def test_history_changes_the_output_and_wrong_shapes_are_refused(reach_spec) -> None:  # type: ignore[no-untyped-def]
    for arch in ("mlp", "gru"):
        torch.manual_seed(0)
        p = Policy(reach_spec, PolicyConfig(arch=arch, history=2))
        obs = random_obs(reach_spec, 4, 2)
        a1 = p(obs)
        obs["observation"][:, 0] += 1.0  # change only the older frame
        assert not torch.allclose(a1, p(obs)), f"{arch} ignores the history"
        with pytest.raises(SpecMismatch, match="observation"):
            p.check_inputs(random_obs(reach_spec, 4, 3))
    with pytest.raises(Sim2PiError, match="choose one of"):
        PolicyConfig(head="flow")


def test_normalization_lives_in_buffers(reach_spec, reach_demos) -> None:  # type: ignore[no-untyped-def]
    cfg = PolicyConfig(egocentric=True)
    p = Policy(reach_spec, cfg)
    stats = compute_stats(reach_spec, reach_demos, cfg)
    p.set_stats(stats)
    assert set(stats) == {
        "observation",
        "achieved_goal",
        "desired_goal",
        "goal_delta",
        "ego_desired_goal",
        "ego_achieved_goal",
    }
    for k, (m, s) in p.get_stats().items():
        np.testing.assert_allclose(m, stats[k][0])
        np.testing.assert_allclose(s, stats[k][1])
        assert np.all(s > 0)
    names = {n for n, _ in p.named_buffers()}
    assert "norm_observation_mean" in names and "norm_goal_delta_std" in names
    q = Policy(reach_spec, cfg)
    q.load_state_dict(p.state_dict())
    np.testing.assert_allclose(q.get_stats()["observation"][1], stats["observation"][1])


# ----------------------------------------------------------------------------------------------
# multimodality: two equally good ways around an obstacle

LEFT = np.array([0.15, 0.85], np.float32)  # veer left (right wheel faster)
RIGHT = np.array([0.85, 0.15], np.float32)


def bimodal_episodes(reach_spec, n: int = 60, length: int = 20, seed: int = 0):  # type: ignore[no-untyped-def]
    """The robot faces an obstacle between it and the goal: half the demos go around it on the
    left, half on the right; the observation does not tell which (both are equally good)."""
    rng = np.random.default_rng(seed)
    eps = []
    for i in range(n):
        x = rng.uniform(-0.6, -0.4, (length, 1))
        y = rng.uniform(-0.05, 0.05, (length, 1))
        th = rng.uniform(-0.1, 0.1, (length, 1))
        obs = np.hstack([x, y, np.cos(th), np.sin(th), np.full((length, 2), 5.0)])
        obs = obs.astype(np.float32)
        act = np.repeat((LEFT if i % 2 else RIGHT)[None], length, 0)
        act = act + rng.normal(0, 0.02, act.shape).astype(np.float32)
        eps.append(
            {
                "observation": obs,
                "achieved_goal": obs[:, :2].copy(),
                "desired_goal": np.tile(np.float32([0.5, 0.0]), (length, 1)),
                "action": act,
            }
        )
    return eps


@pytest.mark.parametrize("head", ["mse", "gmm", "discrete"])
def test_mse_averages_the_modes_while_gmm_and_discrete_pick_one(reach_spec, head) -> None:  # type: ignore[no-untyped-def]
    eps = bimodal_episodes(reach_spec)
    store = EpisodeStore(reach_spec, eps)
    torch.manual_seed(0)
    cfg = PolicyConfig(head=head, hidden=(64, 64), modes=4, bins=21)
    policy = Policy(reach_spec, cfg)
    policy.set_stats(compute_stats(reach_spec, store, cfg))
    tr = Trainer(
        policy,
        store,
        RelabelConfig("none"),
        lr=3e-3,
        weight_decay=0.0,
        grad_clip=10.0,
        batch_size=128,
        total_steps=400,
        seed=0,
    )
    for _ in range(400):
        tr.train_step()
    test = bimodal_episodes(reach_spec, n=10, seed=1)
    store_t = EpisodeStore(reach_spec, test)
    a = policy.act(store_t.windows(np.arange(len(store_t)), 1))
    d_left = np.linalg.norm(a - LEFT, axis=1)
    d_right = np.linalg.norm(a - RIGHT, axis=1)
    nearest = np.minimum(d_left, d_right)
    if head == "mse":
        # The conditional mean: between the modes, i.e. straight into the obstacle.
        np.testing.assert_allclose(a.mean(0), (LEFT + RIGHT) / 2, atol=0.1)
        assert np.all(nearest > 0.3)  # the modes are 0.99 apart
    else:
        assert np.mean(nearest < 0.15) >= 0.95, f"{head} does not commit to a mode: {a[:5]}"


# ----------------------------------------------------------------------------------------------
# learnability: 30 reach demos → most held-out goals reached


@pytest.mark.parametrize("head", ["mse", "gmm", "discrete"])
def test_each_head_learns_to_reach_from_30_demos(reach_spec, reach_demos, tmp_path, head) -> None:  # type: ignore[no-untyped-def]
    cfg = GCBCConfig(
        out=str(tmp_path / head),
        head=head,
        steps=1000,
        relabel="future",
        relabel_ratio=0.5,
        eval_episodes=0,
        progress=False,
        save_every=0,
    )
    res = train(cfg, episodes=reach_demos, spec=reach_spec)
    ev = evaluate(res.policy, episodes=30, goals="heldout")
    assert ev["success_rate"] >= 0.7, ev
