"""Hindsight relabeling: goals come from the same episode at the right times, rewards recomputed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.data import EpisodeStore
from agent.relabel import STRATEGIES, RelabelConfig, Relabeler, goal_indices
from hardware.errors import Sim2PiError
from hardware.tasks import compute_reward, is_success


def synthetic_episodes(lengths: list[int], seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Reach-shaped episodes whose achieved goals are all distinct (a random walk per episode)."""
    rng = np.random.default_rng(seed)
    eps = []
    for n in lengths:
        ag = np.cumsum(rng.normal(0, 0.03, (n, 2)), axis=0).astype(np.float32) + rng.uniform(
            -0.5, 0.5, 2
        ).astype(np.float32)
        obs = np.zeros((n, 6), np.float32)
        obs[:, :2] = ag
        obs[:, 2] = 1.0
        dg = np.repeat(rng.uniform(-0.8, 0.8, (1, 2)).astype(np.float32), n, axis=0)
        eps.append(
            {
                "observation": obs,
                "achieved_goal": ag,
                "desired_goal": dg,
                "action": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
                "reward": np.full(n, -1.0, np.float32),
                "success": np.zeros(n, bool),
            }
        )
    return eps


def relabel_all(spec, eps, strategy: str, ratio: float = 1.0, seed: int = 0, batch: int = 4000):  # type: ignore[no-untyped-def]
    store = EpisodeStore(spec, eps)
    rel = Relabeler(spec, RelabelConfig(strategy=strategy, ratio=ratio, gamma=0.9))
    rng = np.random.default_rng(seed)
    idx = store.sample_indices(batch, rng)
    d = store.data
    out = rel(
        idx,
        d["achieved_goal"],
        d["desired_goal"],
        d["reward"],
        d["success"],
        store.first,
        store.last,
        rng,
    )
    return store, idx, out


@pytest.mark.parametrize("strategy", ["final", "future", "geometric", "episode"])
def test_relabeled_goals_are_achieved_goals_of_the_same_episode_at_valid_times(
    reach_spec, strategy
):
    eps = synthetic_episodes([1, 2, 7, 40, 13])
    store, idx, out = relabel_all(reach_spec, eps, strategy)
    assert out.relabeled.all()
    g = out.goal_index
    # Same episode, and the goal really is that step's achieved goal.
    assert np.all(store.episode[g] == store.episode[idx])
    np.testing.assert_array_equal(out.desired_goal, store.data["achieved_goal"][g])
    last = store.last[idx]
    if strategy == "final":
        assert np.all(g == last)
    elif strategy == "future":
        assert np.all((g >= idx) & (g <= last))
    elif strategy == "geometric":
        # >= t + 1 unless t is the episode's last step (clipped to the episode end).
        assert np.all(np.where(idx < last, g >= idx + 1, g == last))
        assert np.all(g <= last)
    else:
        assert np.all((g >= store.first[idx]) & (g <= last))
        assert np.any(g < idx), "episode strategy must also draw past goals"


def test_reward_and_success_are_recomputed_through_compute_reward(reach_spec):
    eps = synthetic_episodes([30, 30, 30])
    store, idx, out = relabel_all(reach_spec, eps, "future")
    nxt = np.minimum(idx + 1, store.last[idx])
    ag = store.data["achieved_goal"][nxt]
    np.testing.assert_array_equal(out.reward, compute_reward("reach", ag, out.desired_goal))
    np.testing.assert_array_equal(out.success, is_success("reach", ag, out.desired_goal))
    # With goals from t..T some relabeled steps succeed (goal = the next achieved goal).
    assert out.success.any() and not out.success.all()
    assert np.all(out.reward[out.success] == 0) and np.all(out.reward[~out.success] == -1)


def test_none_leaves_the_data_untouched(reach_spec):
    eps = synthetic_episodes([10, 20])
    store, idx, out = relabel_all(reach_spec, eps, "none")
    before = {k: v.copy() for k, v in store.data.items()}
    assert not out.relabeled.any() and np.all(out.goal_index == -1)
    np.testing.assert_array_equal(out.desired_goal, store.data["desired_goal"][idx])
    np.testing.assert_array_equal(out.reward, store.data["reward"][idx])
    np.testing.assert_array_equal(out.success, store.data["success"][idx])
    for k, v in before.items():
        np.testing.assert_array_equal(store.data[k], v)
    # Relabeling with another strategy never writes into the stored arrays either.
    rng = np.random.default_rng(1)
    Relabeler(reach_spec, RelabelConfig("future", 1.0))(
        idx,
        store.data["achieved_goal"],
        store.data["desired_goal"],
        store.data["reward"],
        store.data["success"],
        store.first,
        store.last,
        rng,
    )
    for k, v in before.items():
        np.testing.assert_array_equal(store.data[k], v)


def test_relabel_ratio_is_respected(reach_spec):
    eps = synthetic_episodes([50] * 4)
    _, _, out = relabel_all(reach_spec, eps, "future", ratio=0.3, batch=20000)
    assert abs(out.relabeled.mean() - 0.3) < 0.02
    kept = ~out.relabeled
    assert np.all(out.goal_index[kept] == -1)


def test_future_is_uniform_and_geometric_has_the_right_mean() -> None:
    rng = np.random.default_rng(0)
    t = np.zeros(200_000, np.int64)
    end = np.full_like(t, 9)
    g = goal_indices("future", t, end, rng)
    counts = np.bincount(g, minlength=10) / len(g)
    np.testing.assert_allclose(counts, 0.1, atol=0.005)
    end = np.full_like(t, 10_000)
    k = goal_indices("geometric", t, end, rng, gamma=0.9)
    assert k.min() >= 1
    assert abs(k.mean() - 10.0) < 0.2  # mean of Geometric(1 - 0.9) is 1 / 0.1


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 25), min_size=1, max_size=6),
    seed=st.integers(0, 10_000),
    strategy=st.sampled_from([s for s in STRATEGIES if s != "none"]),
)
def test_goal_indices_stay_inside_the_episode(lengths, seed, strategy) -> None:  # type: ignore[no-untyped-def]
    first = np.concatenate(
        [np.full(n, s) for n, s in zip(lengths, np.cumsum([0, *lengths[:-1]]), strict=True)]
    )
    last = first + np.concatenate([np.full(n, n - 1) for n in lengths])
    t = np.arange(len(first))
    g = goal_indices(strategy, t, last, np.random.default_rng(seed), start=first, gamma=0.8)
    assert np.all((g >= first) & (g <= last))
    if strategy != "episode":
        assert np.all(g >= t)


def test_bad_options_raise_helpful_errors(reach_spec, seek_spec) -> None:
    with pytest.raises(Sim2PiError, match="choose one of"):
        RelabelConfig(strategy="hindsight")
    with pytest.raises(Sim2PiError, match="ratio"):
        RelabelConfig(ratio=1.5)
    with pytest.raises(Sim2PiError, match="--relabel none"):
        Relabeler(seek_spec, RelabelConfig("future"))


def test_steps_not_allowed_are_never_relabeled(reach_spec) -> None:  # type: ignore[no-untyped-def]
    """DAgger's learner rollouts (labels that did not produce the achieved goals) keep their goal."""
    store = EpisodeStore(reach_spec, synthetic_episodes([20, 20]))
    store.extend(synthetic_episodes([20, 20], seed=1), relabel=False)
    assert store.relabel_ok.tolist() == [True] * 40 + [False] * 40
    rel = Relabeler(reach_spec, RelabelConfig("future", 1.0))
    rng = np.random.default_rng(0)
    idx = np.arange(len(store))
    d = store.data
    out = rel(
        idx,
        d["achieved_goal"],
        d["desired_goal"],
        d["reward"],
        d["success"],
        store.first,
        store.last,
        rng,
        store.relabel_ok,
    )
    assert out.relabeled[:40].all() and not out.relabeled[40:].any()
    np.testing.assert_array_equal(out.desired_goal[40:], d["desired_goal"][40:])
