"""The spec: JSON round trip, mismatch errors that name the feature and both values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hardware.description import load_description
from hardware.errors import SpecMismatch
from hardware.spec import Feature, Spec, action_feature, image, vector
from hardware.tasks import TASKS, Observer, compute_reward, is_success, task_spec


@pytest.fixture(scope="module")
def rover():
    return load_description("rover")


@pytest.mark.parametrize("task", sorted(TASKS))
def test_spec_json_round_trip(rover, task: str) -> None:
    s = task_spec(task, rover)
    text = s.to_json()
    json.loads(text)  # plain JSON, no NaN/inf tokens
    assert "Infinity" not in text and "NaN" not in text
    s2 = Spec.from_json(text)
    assert s2 == s
    s.check(s2)
    assert s.robot_hash == rover.hash


def test_mismatch_names_feature_and_values(rover) -> None:
    s = task_spec("reach", rover)
    other = Spec.from_dict(s.to_dict())
    f = other.observation["desired_goal"]
    other.observation["desired_goal"] = Feature(
        f.key, f.dtype, (3,), ("x", "y", "z"), ("m",) * 3, (0,) * 3, (1,) * 3
    )
    with pytest.raises(SpecMismatch) as ei:
        s.check(other)
    assert ei.value.feature == "desired_goal"
    assert "(2,)" in str(ei.value) and "(3,)" in str(ei.value)
    assert isinstance(ei.value, ValueError)


def test_mismatch_on_units_dtype_presence_and_robot(rover) -> None:
    s = task_spec("reach", rover)
    d = s.to_dict()
    d["observation"][0]["units"][0] = "cm"
    with pytest.raises(SpecMismatch, match="feature 'observation': units"):
        s.check(Spec.from_dict(d))
    d = s.to_dict()
    d["action"]["dtype"] = "float64"
    with pytest.raises(SpecMismatch, match="feature 'action': dtype"):
        s.check(Spec.from_dict(d))
    with pytest.raises(SpecMismatch, match="feature 'achieved_goal': presence"):
        s.check(task_spec("seek", rover))
    d = s.to_dict()
    d["robot_hash"] = "0" * 16
    with pytest.raises(SpecMismatch, match="description hash"):
        s.check(Spec.from_dict(d))
    s.check(Spec.from_dict(d), robot=False)


def test_check_observation_refuses_instead_of_reshaping(rover) -> None:
    s = task_spec("reach", rover)
    obs = {k: np.zeros(f.shape, np.float32) for k, f in s.observation.items()}
    s.check_observation(obs)
    obs["observation"] = np.zeros((1, 6), np.float32)
    with pytest.raises(SpecMismatch, match="'observation': shape"):
        s.check_observation(obs)
    del obs["observation"]
    with pytest.raises(SpecMismatch, match="presence"):
        s.check_observation(obs)
    img = image("image", 64, 64)
    with pytest.raises(SpecMismatch, match="dtype"):
        img.check_array(np.zeros((64, 64, 3), np.float32))


def test_feature_validation() -> None:
    with pytest.raises(ValueError, match="2 names for 3"):
        vector("v", ("a", "b"), ("m", "m"), (0, 0, 0), (1, 1, 1))
    with pytest.raises(TypeError):
        Feature("x", "notadtype", (1,))
    a = action_feature()
    assert a.low == (-1.0, -1.0) and a.high == (1.0, 1.0) and a.names == ("left", "right")


def test_batched_reward_equals_per_sample() -> None:
    rng = np.random.default_rng(0)
    ach, des = rng.uniform(-1, 1, (256, 2)), rng.uniform(-1, 1, (256, 2))
    des[:32] = ach[:32] + rng.normal(0, 0.01, (32, 2))
    for task in ("reach", "push"):
        for dense in (False, True):
            batch = compute_reward(task, ach, des, None, dense=dense)
            single = np.array(
                [compute_reward(task, a, d, None, dense=dense) for a, d in zip(ach, des)]
            )
            np.testing.assert_array_equal(batch, single)
        assert is_success(task, ach, des)[:32].mean() > 0.5
        np.testing.assert_array_equal(
            compute_reward(task, ach, des) == 0, is_success(task, ach, des)
        )


def test_observer_push_box_estimate_rotates_into_odometry_frame(rover) -> None:
    ob = Observer("push", rover)
    ob.reset(goal=(0.5, 0.5))
    raw = {
        "pose": np.array([1.0, 0.0, np.pi / 2]),
        "wheel_speed": np.zeros(2),
        "marker": np.array([1.0, 0.3, 0.0]),
    }
    o = ob(raw)
    # facing +y, box 0.3 m ahead -> (1.0, 0.3)
    np.testing.assert_allclose(o["achieved_goal"], [1.0, 0.3], atol=1e-6)
    assert o["observation"][-1] == 1.0
    raw["marker"] = np.array([0.0, 0.0, 0.0])
    o2 = ob(raw)  # not seen: the last estimate is kept, seen flag drops
    np.testing.assert_allclose(o2["achieved_goal"], [1.0, 0.3], atol=1e-6)
    assert o2["observation"][-1] == 0.0
    s = task_spec("push", rover)
    s.check_observation(o2)
