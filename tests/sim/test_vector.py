"""The batched vector env steps exactly like independent envs, with SAME_STEP autoreset."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import sim  # noqa: F401
from sim.vector import BatchedVectorEnv


def test_matches_independent_envs_and_autoresets() -> None:
    n = 4
    kwargs = {"max_steps": 12}
    venv = BatchedVectorEnv.from_id("sim2pi/RoverReach-v0", num_envs=n, num_workers=2, **kwargs)
    envs = [gym.make("sim2pi/RoverReach-v0", **kwargs) for _ in range(n)]
    try:
        obs, _ = venv.reset(seed=7)
        ref = [e.reset(seed=7 + i)[0] for i, e in enumerate(envs)]
        for k in obs:
            np.testing.assert_array_equal(obs[k], np.stack([r[k] for r in ref]))
        rng = np.random.default_rng(0)
        ended_seen = 0
        for _ in range(30):
            act = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
            obs, rew, term, trunc, info = venv.step(act)
            for i, e in enumerate(envs):
                o, r, te, tr, inf = e.step(act[i])
                assert r == rew[i] and te == term[i] and tr == trunc[i]
                assert bool(inf["is_success"]) == bool(info["is_success"][i])
                if te or tr:
                    ended_seen += 1
                    assert info["_final_obs"][i]
                    for k in o:  # the last observation of the ended episode
                        np.testing.assert_array_equal(info["final_obs"][i][k], o[k])
                    o, _ = e.reset()
                for k in o:  # SAME_STEP: the returned observation starts the next episode
                    np.testing.assert_array_equal(obs[k][i], o[k])
        assert ended_seen >= n  # every env hit the 12-step limit at least once
        assert venv.single_action_space == envs[0].action_space
    finally:
        venv.close()
        for e in envs:
            e.close()
