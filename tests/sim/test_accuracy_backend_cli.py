"""Physics accuracy (loose), the twin backend for the runtime loop, and the CLI."""

from __future__ import annotations

import math

import numpy as np
import typer
from typer.testing import CliRunner

from hardware.description import RobotDescription
from hardware.tasks import Observer, task_spec
from sim.accuracy import check_accuracy
from sim.backend import TwinBackend


def test_default_physics_close_to_reference(desc: RobotDescription) -> None:
    report = check_accuracy(desc, pos_tol=0.04, ang_tol_deg=4.0, sink_tol=0.003)
    assert report.passed, report.table()


def test_coarse_physics_is_caught(desc: RobotDescription) -> None:
    # Holding the motor target for a whole control period (no refresh) must show up as error.
    report = check_accuracy(desc, physics_dt=1 / 60, substeps=3)
    assert not report.passed


def test_backend_episodes(desc: RobotDescription) -> None:
    for task in ("reach", "push", "seek"):
        backend = TwinBackend(task, desc)
        ep = backend.new_episode(seed=11)
        assert set(ep) == {"goal", "task_id", "max_steps", "box_guess"}
        obs_ob = Observer(task, desc)
        obs_ob.reset(goal=ep["goal"], task_id=ep["task_id"], box_guess=ep["box_guess"])
        task_spec(task, desc).check_observation(obs_ob(backend.robot.get_observation()))
        gt = backend.ground_truth()
        assert {"is_success", "true_distance", "true_pose"} <= set(gt)
        # the loop sees every sensor the description has (the safety layer reads the range)
        assert "range" in backend.robot.get_observation()
        again = TwinBackend(task, desc)
        again.new_episode(seed=11)
        assert np.allclose(again.robot.true_pose(), backend.robot.true_pose())
        assert again.episode == backend.episode
        backend.close()
        again.close()


def test_backend_reach_success_from_ground_truth(desc: RobotDescription) -> None:
    b = TwinBackend("reach", desc)
    b.new_episode(seed=2)
    x, y, _ = b.robot.true_pose()
    b.episode["goal"] = (x + 0.01, y)
    gt = b.ground_truth()
    assert gt["is_success"] and math.isclose(gt["true_distance"], 0.01, abs_tol=1e-3)
    assert not b.ground_truth(achieved=(x + 0.5, y))["is_success"]
    b.close()


def test_cli_expert_runs() -> None:
    from sim.cli import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None: ...

    register(app)
    result = CliRunner().invoke(app, ["sim", "expert", "--task", "reach", "--episodes", "2"])
    assert result.exit_code == 0, result.output
    assert "success" in result.output and "steps/s" in result.output
