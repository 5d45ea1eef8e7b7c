"""HER replay: relabeled goals, recomputed rewards and terminations, truncation, staging."""

from __future__ import annotations

import numpy as np
import pytest

from agent.her_buffer import EpisodeReplay, EpisodeStager
from hardware.errors import Sim2PiError

SUCCESS = 0.05


def reward_fn(ag: np.ndarray, dg: np.ndarray, info: object) -> np.ndarray:
    return -(np.linalg.norm(ag - dg, axis=-1) >= SUCCESS).astype(np.float32)


class CountingReward:
    """Wraps the reward to record that it is called once per batch with whole arrays."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def __call__(self, ag: np.ndarray, dg: np.ndarray, info: object) -> np.ndarray:
        self.calls.append((ag.shape, dg.shape))
        return reward_fn(ag, dg, info)


def line_episode(length: int, ep_id: int, goal: tuple[float, float] = (9.0, 9.0)):
    """An episode whose achieved goal at time t is (t, ep_id): every goal is identifiable."""
    t = np.arange(length + 1, dtype=np.float32)
    ag = np.stack([t, np.full_like(t, ep_id)], 1)
    obs = np.concatenate([ag, np.full((length + 1, 1), ep_id, np.float32)], 1)  # obs[2] = episode
    act = np.stack([t[:-1], -t[:-1]], 1)
    return obs, ag, np.asarray(goal, np.float32), act


def make(
    strategy: str = "future",
    k: int = 4,
    terminate: bool = True,
    reward=reward_fn,
    capacity: int = 10_000,
    max_steps: int = 20,
) -> EpisodeReplay:
    return EpisodeReplay(
        3,
        2,
        2,
        max_steps,
        capacity,
        reward_fn=reward,
        strategy=strategy,
        k=k,
        terminate_on_success=terminate,
        seed=0,
    )


@pytest.mark.parametrize("strategy", ["future", "final", "episode", "geometric"])
def test_relabeled_goals_come_from_the_same_episode_at_the_right_times(strategy: str) -> None:
    buf = make(strategy)
    lengths = [5, 12, 20, 1, 7]
    for i, n in enumerate(lengths):
        buf.add_episode(*line_episode(n, i))
    b = buf.sample(20_000)
    ep_of_row = b.observation[:, 2].astype(int)
    length = np.asarray(lengths)[ep_of_row]
    rel = b.relabeled
    # about k/(k+1) of the goals are relabeled
    assert abs(rel.mean() - 0.8) < 0.02
    # a relabeled goal is an achieved goal (t', episode) of the transition's own episode
    np.testing.assert_array_equal(b.desired_goal[rel, 1], ep_of_row[rel])
    tg = b.desired_goal[rel, 0].astype(int)
    np.testing.assert_array_equal(tg, b.goal_t[rel])
    t = b.t[rel]
    if strategy in ("future", "geometric"):
        assert np.all(tg > t) and np.all(tg <= length[rel])
    if strategy == "future":
        # uniform over the future: the last step of the episode is not over-represented
        long = rel & (length == 20) & (b.t == 0)
        counts = np.bincount(b.desired_goal[long, 0].astype(int), minlength=21)[1:]
        assert counts.min() > 0.4 * counts.mean()
    elif strategy == "final":
        np.testing.assert_array_equal(tg, length[rel])
    elif strategy == "episode":
        assert np.all(tg >= 1) and np.all(tg <= length[rel])
        assert np.any(tg <= t)  # 'episode' also draws goals from the past
    # real goals are kept for the others
    np.testing.assert_array_equal(b.desired_goal[~rel], np.full(((~rel).sum(), 2), 9.0))
    # transitions are consistent: next achieved goal is t + 1 of the same episode
    np.testing.assert_array_equal(b.next_achieved_goal[:, 0], b.achieved_goal[:, 0] + 1)
    np.testing.assert_array_equal(b.next_observation[:, 2], b.observation[:, 2])
    np.testing.assert_array_equal(b.action[:, 0], b.t)


def test_sampling_is_uniform_over_transitions_not_episodes() -> None:
    buf = make("none")
    buf.add_episode(*line_episode(1, 0))
    buf.add_episode(*line_episode(19, 1))
    b = buf.sample(20_000)
    assert abs((b.observation[:, 2] == 0).mean() - 1 / 20) < 0.01


def test_sampling_without_relabeling_keeps_every_recorded_goal() -> None:
    buf = make("future", k=4)
    for i in range(3):
        buf.add_episode(*line_episode(10, i, goal=(7.0, float(i))))
    b = buf.sample(2000, relabel=False)
    assert not b.relabeled.any() and (b.goal_t == -1).all()
    np.testing.assert_array_equal(b.desired_goal, np.stack([np.full(2000, 7.0), b.episode], 1))
    assert buf.sample(2000).relabeled.mean() > 0.7  # the default still relabels k/(k+1)


def test_rewards_are_recomputed_with_compute_reward_once_per_batch() -> None:
    counting = CountingReward()
    buf = make("future", reward=counting)
    for i in range(3):
        buf.add_episode(*line_episode(10, i))
    b = buf.sample(512)
    assert counting.calls == [((512, 2), (512, 2))]
    np.testing.assert_array_equal(b.reward, reward_fn(b.next_achieved_goal, b.desired_goal, None))
    # a relabeled goal equal to the next achieved goal is a success (reward 0)
    hit = b.relabeled & (b.goal_t == b.t + 1)
    assert hit.any() and np.all(b.reward[hit] == 0.0)
    assert np.all(b.reward[~b.relabeled] == -1.0)  # the real goal (9, 9) is never reached


def test_done_is_recomputed_for_relabeled_success_and_truncation_is_not_terminal() -> None:
    buf = make("future")
    for i in range(4):
        buf.add_episode(*line_episode(10, i))  # all truncated: the goal (9, 9) is never reached
    b = buf.sample(5000)
    # relabeled successes are terminal (SB3 #627 keeps the stored done = False here) ...
    hit = b.relabeled & (b.goal_t == b.t + 1)
    assert np.all(b.terminated[hit] == 1.0)
    # ... and nothing else is, including the last transition of a time-limited episode
    assert np.all(b.terminated[~hit] == 0.0)
    last = b.t == 9
    assert last.any() and np.all(b.terminated[last & ~hit] == 0.0)


def test_an_episode_ended_on_success_is_terminal_only_for_its_own_goal() -> None:
    buf = make("future")
    obs, ag, _, act = line_episode(6, 0)
    buf.add_episode(obs, ag, ag[-1], act)  # ends on success: the real goal is ag[6]
    b = buf.sample(5000)
    real_last = (~b.relabeled) & (b.t == 5)
    assert real_last.any() and np.all(b.terminated[real_last] == 1.0)
    assert np.all(b.reward[real_last] == 0.0)
    # the same final transition relabeled with a goal it does not reach is not terminal
    # ('future' at t=5 can only pick ag[6], so look at an earlier step with a later goal)
    other = b.relabeled & (b.goal_t > b.t + 1)
    assert other.any() and np.all(b.terminated[other] == 0.0) and np.all(b.reward[other] == -1)


def test_no_termination_when_the_env_only_truncates() -> None:
    buf = make("final", terminate=False)
    buf.add_episode(*line_episode(5, 0))
    b = buf.sample(1000)
    assert np.all(b.terminated == 0.0)
    assert np.any(b.reward == 0.0)  # the rewards still see the relabeled success


def test_ring_buffer_evicts_whole_oldest_episodes() -> None:
    buf = make("none", capacity=60, max_steps=20)  # 3 episode slots
    for i in range(5):
        buf.add_episode(*line_episode(10, i))
    assert buf.n_episodes == 3 and buf.n_transitions == 30
    b = buf.sample(3000)
    assert set(np.unique(b.observation[:, 2]).astype(int)) == {2, 3, 4}


def test_bad_input_is_refused_with_a_message() -> None:
    buf = make()
    with pytest.raises(Sim2PiError, match="empty"):
        buf.sample(4)
    obs, ag, dg, act = line_episode(5, 0)
    with pytest.raises(Sim2PiError, match="final one included"):
        buf.add_episode(obs[:-1], ag[:-1], dg, act)
    with pytest.raises(Sim2PiError, match="longer than max_steps"):
        buf.add_episode(*line_episode(25, 0))
    with pytest.raises(Sim2PiError, match="unknown HER strategy"):
        make("geometric-ish")


def test_stager_splits_autoreset_steps_into_whole_episodes() -> None:
    st = EpisodeStager(2, 1, 2, 2, max_steps=10)
    o0 = np.array([[0.0], [100.0]], np.float32)
    st.start(o0, np.hstack([o0, o0]), 10 * np.hstack([o0, o0]))  # ground truth: 10 x the estimate
    dg = np.zeros((2, 2), np.float32)
    finished = []
    for step in range(1, 5):
        nxt = o0 + step
        done = np.array([step == 2, step == 4])
        final = nxt.copy()  # the true last observation
        reset_obs = np.where(done[:, None], -1.0, nxt)  # the autoreset start of the next episode
        act = np.full((2, 2), step, np.float32)
        finished += st.step(
            dg,
            act,
            reset_obs,
            np.hstack([reset_obs, reset_obs]),
            done,
            final,
            np.hstack([final, final]),
            10 * np.hstack([reset_obs, reset_obs]),
            10 * np.hstack([final, final]),
        )
    assert len(finished) == 2
    obs, ag, g, a, tag = finished[0]  # env 0, ended after 2 steps with its true final obs
    np.testing.assert_array_equal(obs[:, 0], [0, 1, 2])
    np.testing.assert_array_equal(ag[:, 0], [0, 1, 2])
    np.testing.assert_array_equal(tag[:, 0], [0, 10, 20])
    assert g.shape == (2, 2)
    np.testing.assert_array_equal(a[:, 0], [1, 2])
    obs, _ag, _g, a, tag = finished[1]  # env 1, 4 steps
    np.testing.assert_array_equal(obs[:, 0], [100, 101, 102, 103, 104])
    np.testing.assert_array_equal(tag[:, 1], [1000, 1010, 1020, 1030, 1040])
    # env 0's next episode started from the reset observation (and its ground truth)
    assert st.t[0] == 2 and st.obs[0, 0, 0] == -1.0 and st.tag[0, 0, 0] == -10.0


def test_ground_truth_drives_goals_rewards_and_terminations_not_the_estimate() -> None:
    """With a true achieved goal, relabeled goals, rewards and terminal flags follow the truth;
    the (noisy) estimate is only carried along as the policy's input."""
    buf = make("future")
    for i in range(4):
        obs, ag, _, act = line_episode(10, i)
        truth = ag.copy()
        truth[:, 1] += 0.5  # the estimate is 0.5 off (10 x the success distance)
        buf.add_episode(obs, ag, truth[-1], act, true_achieved_goal=truth)
    b = buf.sample(5000)
    rel = b.relabeled
    np.testing.assert_array_equal(b.desired_goal[rel, 1], b.observation[rel, 2] + 0.5)
    np.testing.assert_array_equal(b.next_true_achieved_goal[:, 1], b.next_achieved_goal[:, 1] + 0.5)
    np.testing.assert_array_equal(b.true_achieved_goal[:, 0], b.achieved_goal[:, 0])
    # reward on the truth: a goal equal to the next true achieved goal is a success (terminal)
    hit = np.linalg.norm(b.next_true_achieved_goal - b.desired_goal, axis=1) < SUCCESS
    assert hit.any() and (~hit).any()
    np.testing.assert_array_equal(b.reward, np.where(hit, 0.0, -1.0))
    np.testing.assert_array_equal(b.terminated, hit.astype(np.float32))
    # ... and no success is ever judged on the estimate, which is always 0.5 off
    assert not np.any(np.linalg.norm(b.next_achieved_goal - b.desired_goal, axis=1) < SUCCESS)
    with pytest.raises(Sim2PiError, match="true"):
        buf.add_episode(obs, ag, truth[-1], act, true_achieved_goal=truth[:-1])


@pytest.mark.parametrize("judge", ["both", "staged"])
@pytest.mark.parametrize("with_success_fn", [True, False])
def test_judge_both_needs_the_truth_and_the_estimate_at_the_goal(
    with_success_fn: bool, judge: str
) -> None:
    """judge both: a goal counts as reached only where the true achieved goal and the estimate are
    both within reach of it (reached and seen); the truth alone or the estimate alone is not
    enough, for rewards and for terminal flags. Staged: the truth alone earns half (-0.5), the
    estimate alone nothing, both 0 (and only both are terminal)."""

    def success(ag: np.ndarray, dg: np.ndarray) -> np.ndarray:
        return np.linalg.norm(ag - dg, axis=-1) < SUCCESS

    buf = EpisodeReplay(
        3,
        2,
        2,
        20,
        10_000,
        reward_fn=reward_fn,
        success_fn=success if with_success_fn else None,
        strategy="future",
        seed=0,
        judge=judge,
    )
    for i in range(4):
        obs, truth, _, act = line_episode(10, i)
        est = truth.copy()
        est[1::2, 1] += 0.5  # the estimate is off on odd steps (stale), right on even ones
        # the recorded goal is where the estimate is at t = 3 but the truth never is
        buf.add_episode(obs, est, est[3], act, true_achieved_goal=truth)
    b = buf.sample(5000)
    at_truth = np.linalg.norm(b.next_true_achieved_goal - b.desired_goal, axis=1) < SUCCESS
    at_est = np.linalg.norm(b.next_achieved_goal - b.desired_goal, axis=1) < SUCCESS
    both = at_truth & at_est
    assert both.any() and (at_truth & ~at_est).any() and (at_est & ~at_truth).any()
    half = -0.5 if judge == "staged" else -1.0  # the truth at the goal but not the estimate
    np.testing.assert_array_equal(b.reward, np.where(both, 0.0, np.where(at_truth, half, -1.0)))
    np.testing.assert_array_equal(b.terminated, both.astype(np.float32))
    # the same judgement for any rows (the learner's train success uses it)
    r, ok = buf.judge(b.next_true_achieved_goal, b.next_achieved_goal, b.desired_goal)
    np.testing.assert_array_equal(ok, both)
    np.testing.assert_array_equal(r, b.reward)


def test_an_unknown_judge_is_named() -> None:
    with pytest.raises(Sim2PiError, match=r"unknown judge 'estimate'.*staged"):
        EpisodeReplay(3, 2, 2, 20, 10_000, reward_fn=reward_fn, seed=0, judge="estimate")


def test_labels_are_kept_only_where_they_can_differ_from_the_action() -> None:
    """A demo replay keeps each step's BC label; an online one (keep_labels=False) keeps no label
    array, hands out the executed action as the label, and refuses labels it would drop."""
    obs, ag, goal, act = line_episode(10, 0)
    demo = make()
    demo.add_episode(obs, ag, goal, act, label=act + 0.5)
    b = demo.sample(100)
    np.testing.assert_array_equal(b.label, b.action + 0.5)
    online = EpisodeReplay(3, 2, 2, 20, 10_000, reward_fn=reward_fn, seed=0, keep_labels=False)
    assert online.label is None
    online.add_episode(obs, ag, goal, act)
    b = online.sample(100)
    np.testing.assert_array_equal(b.label, b.action)
    with pytest.raises(Sim2PiError, match="keeps no labels"):
        online.add_episode(obs, ag, goal, act, label=act + 0.5)


def test_shaping_is_potential_based_on_the_true_achieved_goal() -> None:
    """shaping=c adds c * (|tag_t - g| - gamma * |tag_t+1 - g|) to the sparse reward, with the
    potential 0 at a terminal transition, for recorded and relabeled goals alike; the estimate
    does not enter it. Summed along an episode it telescopes to c * |tag_0 - g| (up to the
    discount), so the shaped task keeps its optimal policies."""
    c, gamma = 10.0, 0.9

    def near(ag: np.ndarray, dg: np.ndarray, info: object) -> np.ndarray:
        # a wide goal radius, so terminal transitions end short of the goal (phi there is not 0)
        return -(np.linalg.norm(ag - dg, axis=-1) >= 1.5).astype(np.float32)

    sparse = EpisodeReplay(3, 2, 2, 20, 10_000, reward_fn=near, seed=0)
    shaped = EpisodeReplay(3, 2, 2, 20, 10_000, reward_fn=near, seed=0, shaping=c, gamma=gamma)
    for i in range(4):
        obs, truth, goal, act = line_episode(10, i)
        est = truth + 0.3  # a biased estimate: the shaping must ignore it
        for buf in (sparse, shaped):
            buf.add_episode(obs, est, goal, act, true_achieved_goal=truth)
    a, b = sparse.sample(4000), shaped.sample(4000)  # same seed: the same rows and goals
    np.testing.assert_array_equal(a.episode, b.episode)
    np.testing.assert_array_equal(a.desired_goal, b.desired_goal)
    d = np.linalg.norm(b.true_achieved_goal - b.desired_goal, axis=1)
    d_next = np.linalg.norm(b.next_true_achieved_goal - b.desired_goal, axis=1)
    expected = a.reward + c * (d - gamma * (1.0 - b.terminated) * d_next)
    assert b.relabeled.any() and (d_next > d).any() and (d_next < d).any()
    assert (b.terminated.astype(bool) & (d_next > 0.5)).any()
    np.testing.assert_allclose(b.reward, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(b.terminated, a.terminated)
    with pytest.raises(Sim2PiError, match="shaping must be >= 0"):
        EpisodeReplay(3, 2, 2, 20, 10_000, reward_fn=reward_fn, shaping=-1.0)


@pytest.mark.parametrize("terminate", [True, False])
def test_n_step_returns_stop_at_the_goal_or_the_episode_end(terminate: bool) -> None:
    """n_step=3 sums gamma^k r_{t+k} against the (relabeled) goal until the goal is reached
    (terminal: no bootstrap, when the env ends on success) or the episode ends (bootstrapped,
    never terminal), and bootstraps from obs[t + m] with discount gamma^m. Checked row by row
    against a plain loop over the stored episodes; sampling itself does not change with n."""
    n, gamma = 3, 0.9
    kw: dict = dict(reward_fn=reward_fn, seed=0, terminate_on_success=terminate, gamma=gamma)
    one = EpisodeReplay(3, 2, 2, 20, 10_000, **kw)
    multi = EpisodeReplay(3, 2, 2, 20, 10_000, n_step=n, **kw)
    shaped = EpisodeReplay(3, 2, 2, 20, 10_000, n_step=n, shaping=2.0, **kw)
    episodes = {}
    for i, length in enumerate((10, 6, 4)):
        obs, ag, goal, act = line_episode(length, i)
        if i == 1:
            goal = ag[-1]  # ended on success at its last step
        for buf in (one, multi, shaped):
            slot = buf.add_episode(obs, ag, goal, act)
        episodes[slot] = (obs, ag, length)
    a, b, c = one.sample(3000), multi.sample(3000), shaped.sample(3000)
    # shaping over m steps telescopes: gamma^m phi(t + m) (0 at a terminal) - phi(t)
    phi = -2.0 * np.linalg.norm(b.achieved_goal - b.desired_goal, axis=1)
    phi_next = -2.0 * np.linalg.norm(b.next_achieved_goal - b.desired_goal, axis=1)
    np.testing.assert_allclose(c.reward - b.reward, b.discount * phi_next - phi, atol=1e-4)
    np.testing.assert_array_equal(a.episode, b.episode)
    np.testing.assert_array_equal(a.t, b.t)
    np.testing.assert_array_equal(a.desired_goal, b.desired_goal)
    np.testing.assert_allclose(a.discount, gamma * (1.0 - a.terminated))
    seen = set()
    for j in range(len(b.t)):
        obs, ag, length = episodes[int(b.episode[j])]
        t, goal = int(b.t[j]), b.desired_goal[j]
        ret, m, term = 0.0, 0, False
        for k in range(n):
            if t + k >= length:
                break
            r = float(reward_fn(ag[t + k + 1], goal, None))
            ret, m = ret + gamma**k * r, k + 1
            if terminate and r == 0.0:
                term = True
                break
        assert b.reward[j] == pytest.approx(ret, abs=1e-5)
        assert b.terminated[j] == float(term)
        assert b.discount[j] == pytest.approx(0.0 if term else gamma**m, abs=1e-6)
        np.testing.assert_array_equal(b.next_observation[j], obs[t + m])
        np.testing.assert_array_equal(b.next_achieved_goal[j], ag[t + m])
        seen.add((m, term))
    # every case occurred: full n steps, cut by the goal, cut by the episode's end
    assert {(3, False), (1, False), (2, False)} <= seen
    if terminate:
        assert {(1, True), (2, True), (3, True)} <= seen
    with pytest.raises(Sim2PiError, match="n_step must be >= 1"):
        EpisodeReplay(3, 2, 2, 20, 10_000, reward_fn=reward_fn, n_step=0)
