"""Dynamics randomization: off by default, sampled inside its ranges, YAML round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from hardware.description import RobotDescription
from sim.randomization import DynamicsRandomization, DynamicsSample, RandomizationError
from sim.twin import SimRobot


def test_off_by_default(desc: RobotDescription) -> None:
    r = DynamicsRandomization()
    assert not r.enabled
    nominal = DynamicsSample.nominal(desc)
    assert r.sample(np.random.default_rng(0), nominal) is nominal
    with SimRobot(desc, camera=False) as robot:
        robot.reset_scene((0, 0, 0), [], seed=3)
        assert robot.dyn == nominal


def test_samples_within_ranges(desc: RobotDescription) -> None:
    r = DynamicsRandomization.from_yaml("default")
    assert r.enabled
    nominal = DynamicsSample.nominal(desc)
    rng = np.random.default_rng(0)
    samples = [r.sample(rng, nominal) for _ in range(200)]
    for s in samples:
        for wheel in (0, 1):
            gain = s.max_wheel_speed[wheel] / desc.motors.max_wheel_speed
            assert r.motor_gain[0] <= gain <= r.motor_gain[1]
            assert r.deadband[0] <= s.deadband[wheel] <= r.deadband[1]
        assert r.time_constant[0] <= s.time_constant <= r.time_constant[1]
        assert r.latency_ticks[0] <= s.latency_ticks <= r.latency_ticks[1]
        assert r.mass_scale[0] <= s.mass_scale <= r.mass_scale[1]
        assert r.range_dropout[0] <= s.range_dropout <= r.range_dropout[1]
        assert all(abs(v) <= r.camera_jitter_deg[1] for v in s.camera_angle_offset)
        assert all(abs(v) <= r.camera_jitter_pos[1] for v in s.camera_offset)
    assert len({s.time_constant for s in samples}) > 150  # actually random
    assert {s.latency_ticks for s in samples} == {0, 1}


def test_randomized_twin_differs_per_reset(desc: RobotDescription) -> None:
    r = DynamicsRandomization.from_yaml("default")
    with SimRobot(desc, camera=False, randomization=r, seed=0) as robot:
        finals = []
        for _ in range(3):
            robot.reset_scene((0, 0, 0), [])
            for _ in range(10):
                robot.send_action([0.8, 0.8])
            finals.append(robot.true_pose()[0])
    assert len(set(np.round(finals, 5))) == 3


def test_yaml_round_trip(tmp_path: Path) -> None:
    r = DynamicsRandomization(enabled=True, motor_gain=(0.9, 1.1), latency_ticks=(0, 2))
    p = tmp_path / "dyn.yaml"
    import yaml

    p.write_text(yaml.safe_dump(r.to_dict()))
    again = DynamicsRandomization.from_yaml(p)
    assert again == r and again.latency_ticks == (0, 2)


@pytest.mark.parametrize(
    "bad",
    [
        {"motor_gian": [1, 2]},
        {"deadband": [0.2, 0.1]},
        {"range_dropout": [0, 2]},
        {"latency_ticks": [0, 1.5]},
        {"enabled": "yes"},
    ],
)
def test_bad_config_is_refused(bad: dict) -> None:
    with pytest.raises(RandomizationError):
        DynamicsRandomization.from_dict(bad)


def test_unknown_field_suggests() -> None:
    with pytest.raises(RandomizationError, match="motor_gain"):
        DynamicsRandomization.from_dict({"motor_gian": [1, 2]})


def test_fields_are_documented() -> None:
    for fl in dataclasses.fields(DynamicsRandomization):
        assert fl.metadata.get("doc")
