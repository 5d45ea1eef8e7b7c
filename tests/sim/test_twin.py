"""The twin obeys the Robot contract and its sensors behave like the real ones."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hardware.description import RobotDescription
from hardware.errors import DeviceError
from hardware.robot import robot_observation_features
from sim.twin import SceneObject, SimRobot


def box(x: float, y: float, tagged: bool = True) -> SceneObject:
    return SceneObject("box", "box", (0.03, 0.03, 0.03), (x, y), mass=0.08, tagged=tagged)


def post(x: float, y: float) -> SceneObject:
    """A static 10 cm tall post (taller than the ultrasonic sensor's 6 cm mount)."""
    return SceneObject("post", "box", (0.03, 0.03, 0.05), (x, y))


def test_observation_keys_match_features(robot: SimRobot, desc: RobotDescription) -> None:
    obs = robot.get_observation()
    assert set(obs) == set(robot_observation_features(desc)) == set(robot.observation_features)
    for key, feat in robot.observation_features.items():
        feat.check_array(obs[key])
    robot.reset_scene((0.0, 0.0, 0.0), [box(0.5, 0.0)])
    assert "marker" in robot.get_observation()
    assert "marker" in robot.observation_features


def test_features_follow_disabled_sensors(desc: RobotDescription) -> None:
    r = SimRobot(desc, camera=False, ultrasonic=False)
    with r:
        obs = r.get_observation()
    assert set(obs) == {"pose", "wheel_speed"} == set(r.observation_features)


def test_non_finite_action_stops(robot: SimRobot) -> None:
    for _ in range(10):
        robot.send_action([1.0, 1.0])
    applied = robot.send_action([math.nan, 1.0])
    assert np.array_equal(applied, [0.0, 0.0])
    for _ in range(20):
        robot.send_action([np.inf, -np.inf])
    assert np.allclose(robot.get_observation()["wheel_speed"], 0.0, atol=0.5)


def test_action_is_clamped_and_returned(robot: SimRobot) -> None:
    assert np.allclose(robot.send_action([2.0, -3.0]), [1.0, -1.0])


def test_disconnect_is_idempotent_and_context_manager(desc: RobotDescription) -> None:
    r = SimRobot(desc, camera=False)
    with r as same:
        assert same is r and r.is_connected
        r.send_action([0.3, 0.3])
    assert not r.is_connected
    r.disconnect()
    with pytest.raises(DeviceError):
        r.send_action([0.0, 0.0])


def test_drives_forward_and_odometry_starts_at_true_pose(desc: RobotDescription) -> None:
    with SimRobot(desc, camera=False) as r:
        start = (0.3, -0.2, 0.7)
        r.reset_scene(start, [])
        assert np.allclose(r.get_observation()["pose"], start, atol=1e-5)
        assert np.allclose(r.true_pose(), start, atol=2e-3)
        for _ in range(20):
            r.send_action([0.8, 0.8])
        true, odo = r.true_pose(), r.get_observation()["pose"]
        moved = math.dist(true[:2], start[:2])
        assert 0.3 < moved < 0.6  # ~0.48 m/s for 1 s minus the motor lag
        assert math.dist(true[:2], odo[:2]) < 0.02
        heading = math.atan2(true[1] - start[1], true[0] - start[0])
        assert abs(heading - start[2]) < 0.05


def test_deadband_does_not_move(robot: SimRobot, desc: RobotDescription) -> None:
    duty = desc.motors.deadband * 0.8
    before = robot.true_pose()
    for _ in range(20):
        robot.send_action([duty, duty])
    assert math.dist(before[:2], robot.true_pose()[:2]) < 1e-3


def test_ultrasonic_no_echo_vs_hit(short_sonar: RobotDescription) -> None:
    with SimRobot(short_sonar, camera=False, seed=0) as r:
        r.reset_scene((0.0, 0.0, 0.0), [])
        obs = r.get_observation()
        assert obs["range_valid"][0] == 0.0
        assert obs["range"][0] == pytest.approx(0.5)
        r.reset_scene((0.0, 0.0, 0.0), [post(0.4, 0.0)])
        obs = r.get_observation()
        assert obs["range_valid"][0] == 1.0
        # sensor at x=0.10 on the robot, box face at 0.37
        assert obs["range"][0] == pytest.approx(0.27, abs=0.01)
        assert obs["range_age"][0] >= 0.0


def test_ultrasonic_sees_wall_within_range(desc: RobotDescription) -> None:
    with SimRobot(desc, camera=False, seed=0) as r:
        r.reset_scene((0.0, 0.0, 0.0), [])
        obs = r.get_observation()
        assert obs["range_valid"][0] == 1.0
        assert obs["range"][0] == pytest.approx(1.0 - desc.ultrasonic.mount.x, abs=0.03)


def test_camera_image_and_turning_changes_it(desc: RobotDescription) -> None:
    objs = [SceneObject("red", "cylinder", (0.04, 0.12), (0.5, 0.0), color=(0.9, 0.1, 0.1, 1))]
    with SimRobot(desc, seed=0) as r:
        r.reset_scene((0.0, 0.0, 0.0), objs)
        img = r.get_observation()["image"]
        assert img.shape == (desc.camera.height, desc.camera.width, 3) and img.dtype == np.uint8
        red = (img[:, :, 0] > 150) & (img[:, :, 1] < 80)
        assert red.sum() > 10  # the cylinder straight ahead is in view
        cols = np.nonzero(red)[1]
        assert abs(cols.mean() - desc.camera.width / 2) < 4  # ... and centred
        for _ in range(5):
            r.send_action([-0.6, 0.6])
        img2 = r.get_observation()["image"]
        assert np.abs(img2.astype(int) - img.astype(int)).mean() > 2


def test_marker_in_view_and_out_of_view(desc: RobotDescription) -> None:
    with SimRobot(desc, camera=False, seed=0) as r:
        r.reset_scene((0.0, 0.0, 0.0), [box(0.5, 0.1)])
        seen, x, y = r.get_observation()["marker"]
        assert (
            seen == 1.0 and x == pytest.approx(0.5, abs=0.06) and y == pytest.approx(0.1, abs=0.06)
        )
        r.reset_scene((0.0, 0.0, math.pi), [box(0.5, 0.1)])  # behind the robot
        assert r.get_observation()["marker"][0] == 0.0
        r.reset_scene((0.0, 0.0, 0.0), [box(0.9, 0.0)])
        assert r.get_observation()["marker"][0] == 1.0


def test_marker_in_robot_frame_when_rotated(desc: RobotDescription) -> None:
    with SimRobot(desc, camera=False, seed=0) as r:
        r.reset_scene((0.2, 0.2, math.pi / 2), [box(0.2, 0.7)])
        seen, x, y = r.get_observation()["marker"]
        assert seen == 1.0 and x == pytest.approx(0.5, abs=0.06) and abs(y) < 0.06


def test_box_does_not_sink_and_is_pushed(desc: RobotDescription) -> None:
    with SimRobot(desc, camera=False, seed=0) as r:
        r.reset_scene((0.0, 0.0, 0.0), [box(0.25, 0.0)])
        zs = []
        for _ in range(40):
            r.send_action([0.6, 0.6])
            zs.append(r.object_pose("box")[2])
        assert min(zs) > 0.03 - 0.002
        assert r.object_pose("box")[0] > 0.4


def test_same_seed_same_physics(desc: RobotDescription) -> None:
    def run(history: int) -> np.ndarray:
        with SimRobot(desc, camera=False, seed=1) as r:
            for _ in range(history):
                r.reset_scene((0.1, 0.1, 0.3), [box(0.5, 0.2)], seed=7)
                for _ in range(7):
                    r.send_action([0.9, -0.2])
            r.reset_scene((0.0, 0.0, 0.0), [box(0.3, 0.0)], seed=3)
            out = []
            for i in range(30):
                r.send_action([0.7, 0.5 + 0.01 * i])
                obs = r.get_observation()
                out.append(np.r_[obs["pose"], obs["range"], obs["marker"], r.true_pose()])
            return np.array(out)

    assert np.array_equal(run(0), run(2))


def test_building_twins_prints_nothing_on_stdout() -> None:
    """pybullet writes ``argv[0]=`` to the C stdout when connected with an options string; a
    training run builds many envs and the lines drowned its progress output."""
    import subprocess
    import sys

    code = (
        "from hardware.description import load_description\n"
        "from sim.twin import SimRobot\n"
        "for _ in range(3):\n"
        "    with SimRobot(load_description('rover'), camera=False) as r:\n"
        "        r.send_action([0.2, 0.2])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "argv" not in out, out
