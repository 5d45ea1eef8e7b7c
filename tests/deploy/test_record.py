"""`sim2pi record` (expert on the twin, through the one control loop) and `sim2pi dataset ...`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

pytest.importorskip("pybullet")

from deploy.dataset import Dataset, validate
from deploy.dataset_cli import register
from hardware.description import load_description
from hardware.tasks import compute_reward
from sim.experts import make_expert


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    a = typer.Typer()

    @a.callback()
    def _root() -> None:
        """test root"""

    register(a)
    return a


def test_record_expert_reach_then_resume_and_inspect(app: typer.Typer, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "demos"
    r = runner.invoke(
        app,
        [
            "record",
            "--out",
            str(out),
            "--task",
            "reach",
            "--teleop",
            "expert",
            "--episodes",
            "3",
            "--seed",
            "3",
            "--noise",
            "0.05",
        ],
    )
    assert r.exit_code == 0, r.output
    assert [p for p in validate(out) if p.level == "error"] == []
    ds = Dataset.open(out)
    assert ds.num_episodes == 3 and ds.fps == 20 and ds.spec.task == "reach"
    info = json.loads((out / "meta/info.json").read_text())
    assert info["sim2pi"]["robot_hash"] == ds.spec.robot_hash and info["robot_type"] == "rover"
    expert = make_expert("reach", load_description("rover"))
    for ep in ds.episodes():
        # next.reward of frame t judges the state the action led to, i.e. frame t+1's recorded
        # goals (compute_reward, what HER relabels); the last one the final, unrecorded state
        np.testing.assert_array_equal(
            ep.reward[:-1], compute_reward("reach", ep.achieved_goal[1:], ep.desired_goal[1:])
        )
        assert ep.reward[-1] == (0.0 if ep.success[-1] else -1.0)
        assert ep.done[-1] and not ep.done[:-1].any()
        assert not ep.intervention.any()
        assert np.all(np.abs(ep.action_applied) <= 1.0)
        # 'action' is the expert's clean action on the recorded observation (the BC label);
        # 'action_applied' the DART-noised one the motors got
        clean = np.stack(
            [
                expert.act({k: ep[k][t] for k in ("observation", "achieved_goal", "desired_goal")})
                for t in range(len(ep))
            ]
        )
        np.testing.assert_allclose(ep.action, clean, atol=1e-6)
        assert np.mean(np.abs(ep.action_applied - ep.action) > 1e-3) > 0.5
    assert sum(bool(ep.success[-1]) for ep in ds.episodes()) >= 2  # the expert mostly succeeds
    first = ds.episode(0)["observation"]
    r = runner.invoke(
        app,
        [
            "record",
            "--out",
            str(out),
            "--task",
            "reach",
            "--teleop",
            "expert",
            "--episodes",
            "2",
            "--seed",
            "3",
            "--resume",
        ],
    )
    assert r.exit_code == 0, r.output
    ds = Dataset.open(out)
    assert ds.num_episodes == 5
    np.testing.assert_array_equal(ds.episode(0)["observation"], first)
    r = runner.invoke(
        app,
        [
            "record",
            "--out",
            str(out),
            "--task",
            "push",
            "--teleop",
            "expert",
            "--episodes",
            "1",
            "--resume",
        ],
    )
    assert r.exit_code != 0  # another task's spec is refused
    r = runner.invoke(app, ["dataset", "validate", str(out)])
    assert r.exit_code == 0 and "ok" in r.output
    r = runner.invoke(app, ["dataset", "info", str(out), "--json"])
    assert json.loads(r.output)["episodes"] == 5
    r = runner.invoke(app, ["dataset", "compact", str(out)])
    assert r.exit_code == 0 and "-> 1" in r.output
    r = runner.invoke(app, ["dataset", "plot", str(out), "--out", str(tmp_path / "plots")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "plots/trajectories.png").stat().st_size > 1000
    assert (tmp_path / "plots/actions.png").exists()


def test_validate_cli_fails_on_a_broken_dataset(app: typer.Typer, tmp_path: Path) -> None:
    from test_dataset_helpers import make_spec, record

    out = tmp_path / "d"
    record(out, make_spec(with_image=False), [4, 5])
    (out / "data/chunk-000/file-001.parquet").write_bytes(b"PAR1 broken")
    r = CliRunner().invoke(app, ["dataset", "validate", str(out)])
    assert r.exit_code == 1
    assert "episode 1" in r.output and "file-001.parquet" in r.output
    r = CliRunner().invoke(app, ["dataset", "repair", str(out)])
    assert r.exit_code == 0, r.output
    assert Dataset.open(out).num_episodes == 1


def test_every_option_has_help(app: typer.Typer) -> None:
    cmd = typer.main.get_command(app)
    groups = [cmd, cmd.commands["dataset"]]  # type: ignore[attr-defined]
    assert {"record", "dataset"} <= set(cmd.commands)  # type: ignore[attr-defined]
    for g in groups:
        for name, sub in g.commands.items():
            if hasattr(sub, "commands"):
                continue
            for p in sub.params:
                assert getattr(p, "help", None), f"{name} {p.name} has no help"
