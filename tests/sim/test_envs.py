"""The gymnasium tasks: API, spaces, determinism, rewards, HER compatibility."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim  # noqa: F401  (registers the envs)
from hardware.errors import Sim2PiError
from hardware.tasks import TASKS, Observer, task_spec

ENV_IDS = [t.env_id for t in TASKS.values()]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env(env_id: str) -> None:
    env = gym.make(env_id)
    with pytest.warns(UserWarning):  # the spec's wheel speeds are unbounded (inf) on purpose
        check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_spaces_match_task_spec(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    spec = task_spec(env.task.name, env.desc)
    assert list(env.observation_space.spaces) == list(spec.observation)
    for key, feat in spec.observation.items():
        space = env.observation_space[key]
        assert space.shape == feat.shape and space.dtype == np.dtype(feat.dtype)
    obs, info = env.reset(seed=0)
    spec.check_observation(obs)
    assert "is_success" in info and "true_pose" in info and "true_distance" in info
    rng = np.random.default_rng(0)
    for _ in range(40):
        obs, reward, term, trunc, info = env.step(rng.uniform(-1, 1, 2))
        assert env.observation_space.contains(obs), {k: v for k, v in obs.items()}
        assert isinstance(reward, float)
        if term or trunc:
            obs, info = env.reset()
    env.close()


def _rollout(env: gym.Env, seed: int, n: int = 30) -> list[np.ndarray]:
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(123)
    out = [np.concatenate([np.ravel(v).astype(np.float64) for v in obs.values()])]
    for _ in range(n):
        obs, r, term, trunc, info = env.step(rng.uniform(-1, 1, 2))
        out.append(
            np.concatenate(
                [np.ravel(v).astype(np.float64) for v in obs.values()] + [[r], info["true_pose"]]
            )
        )
        if term or trunc:
            break
    return out


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_rollout(env_id: str) -> None:
    a = gym.make(env_id)
    b = gym.make(env_id)
    _rollout(b, seed=99, n=10)  # b has a different history
    ra, rb = _rollout(a, seed=5), _rollout(b, seed=5)
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb, strict=True):
        assert np.array_equal(x, y)
    rc = _rollout(a, seed=6)
    assert not np.array_equal(ra[0], rc[0])


@pytest.mark.parametrize("task", ["reach", "push"])
@pytest.mark.parametrize("reward_type", ["sparse", "dense"])
def test_batched_compute_reward(task: str, reward_type: str) -> None:
    env = gym.make(TASKS[task].env_id, reward_type=reward_type).unwrapped
    rng = np.random.default_rng(0)
    ach = rng.uniform(-1, 1, (64, 2)).astype(np.float32)
    des = ach + rng.normal(0, 0.05, (64, 2)).astype(np.float32)
    batch = env.compute_reward(ach, des, [{}] * 64)
    single = np.array([env.compute_reward(a, d, {}) for a, d in zip(ach, des, strict=True)])
    assert batch.shape == (64,)
    assert np.allclose(batch, single.ravel())
    if reward_type == "sparse":
        assert set(np.unique(batch)) <= {0.0, -1.0} and (batch == 0).any() and (batch == -1).any()
    else:
        assert np.allclose(batch, -np.linalg.norm(ach - des, axis=1), atol=1e-6)


def test_step_reward_matches_compute_reward() -> None:
    env = gym.make("sim2pi/RoverReach-v0", reward_type="dense").unwrapped
    env.reset(seed=3)
    obs, reward, *_, info = env.step([0.5, 0.5])
    assert reward == pytest.approx(
        float(env.compute_reward(obs["achieved_goal"], obs["desired_goal"], info))
    )


def test_observer_is_the_hardware_observer() -> None:
    env = gym.make("sim2pi/RoverPush-v0").unwrapped
    obs, _ = env.reset(seed=1)
    raw = env.robot.get_observation()
    ob = Observer("push", env.desc)
    ep = env.backend.episode
    ob.reset(goal=ep["goal"], box_guess=ep["box_guess"])
    again = ob(raw)
    for k in obs:
        assert np.array_equal(obs[k], again[k])


def test_truncation_at_max_steps() -> None:
    env = gym.make("sim2pi/RoverReach-v0", max_steps=5).unwrapped
    env.reset(seed=0)
    flags = [env.step([0.0, 0.0])[3] for _ in range(5)]
    assert flags == [False] * 4 + [True]


def test_terminates_on_success_only_when_asked() -> None:
    for flag in (True, False):
        env = gym.make("sim2pi/RoverReach-v0", terminate_on_success=flag).unwrapped
        env.reset(seed=0)
        here = env.robot.get_observation()["pose"][:2]
        env.observer.goal = here.copy()  # the goal is where the robot already is
        env.backend.episode["goal"] = (float(here[0]), float(here[1]))
        _, reward, term, _, info = env.step([0.0, 0.0])
        assert info["is_success"] and reward == 0.0 and term is flag


def test_seek_success_needs_facing() -> None:
    env = gym.make("sim2pi/RoverSeek-v0").unwrapped
    env.reset(seed=0)
    gt = env.backend.ground_truth()
    assert not gt["is_success"]
    assert abs(gt["heading_error"]) <= np.pi
    with pytest.raises(Sim2PiError):
        env.compute_reward(np.zeros(2), np.zeros(2), {})


def test_render_rgb_array() -> None:
    env = gym.make("sim2pi/RoverReach-v0", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8 and frame.std() > 5


def test_reset_from_a_given_start_state_and_true_achieved_goal() -> None:
    env = gym.make("sim2pi/RoverPush-v0").unwrapped
    start = {"pose": (0.1, -0.2, 0.7), "box": (0.45, 0.05), "goal": (0.6, 0.4)}
    obs, info = env.reset(seed=3, options={"start": start})
    np.testing.assert_allclose(info["true_pose"], start["pose"], atol=1e-6)
    np.testing.assert_allclose(info["true_box"], start["box"], atol=1e-6)
    np.testing.assert_allclose(obs["desired_goal"], start["goal"], atol=1e-6)
    # the estimate: the start guess, or already a first (noisy) detection of the box
    np.testing.assert_allclose(obs["achieved_goal"], start["box"], atol=0.05)
    # the truth of the achieved goal is the true box
    for _ in range(3):
        obs, *_, info = env.step([0.0, 0.0])
    np.testing.assert_allclose(info["true_achieved_goal"], info["true_box"], atol=1e-6)
    # without options the scene is random again, and partial starts keep the rest random
    _, info = env.reset(seed=3)
    assert np.linalg.norm(info["true_box"] - np.asarray(start["box"])) > 1e-3
    reach = gym.make("sim2pi/RoverReach-v0").unwrapped
    obs, info = reach.reset(seed=0, options={"start": {"goal": (0.3, 0.3)}})
    np.testing.assert_allclose(obs["desired_goal"], (0.3, 0.3))
    np.testing.assert_allclose(info["true_achieved_goal"], info["true_pose"][:2])
    with pytest.raises(Sim2PiError, match="box"):
        reach.reset(options={"start": {"box": (0.0, 0.0)}})
    with pytest.raises(Sim2PiError, match="pose"):
        env.reset(options={"start": {"pose": (5.0, 0.0, 0.0)}})


def test_bad_kwargs_are_refused() -> None:
    with pytest.raises(Sim2PiError, match="reward_type"):
        gym.make("sim2pi/RoverReach-v0", reward_type="shaped")


def test_sac_her_runs() -> None:
    from stable_baselines3 import SAC, HerReplayBuffer

    env = gym.make("sim2pi/RoverReach-v0")
    model = SAC(
        "MultiInputPolicy",
        env,
        replay_buffer_class=HerReplayBuffer,
        replay_buffer_kwargs={"n_sampled_goal": 4, "goal_selection_strategy": "future"},
        learning_starts=160,
        batch_size=32,
        policy_kwargs={"net_arch": [32, 32]},
        seed=0,
        device="cpu",
    )
    model.learn(total_timesteps=300)
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert action.shape == (2,) and np.all(np.abs(action) <= 1)
