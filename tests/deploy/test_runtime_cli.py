"""``sim2pi deploy check|run`` in subprocesses: mock pins, the twin, SIGTERM / SIGINT shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from hardware.description import load_description

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::hardware.errors.SafetyWarning")


def sim2pi(*args: str) -> list[str]:
    return [sys.executable, "-m", "deploy.cli", *args]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def wait_for(cond, timeout: float = 60.0) -> bool:
    ev = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if cond():
            return True
        ev.wait(0.05)
    return bool(cond())


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_on_mock_pins_stops_cleanly_on_a_signal(tmp_path, reach_bundle, sig) -> None:
    out, rec = tmp_path / "run.json", tmp_path / "demos"
    proc = subprocess.Popen(
        sim2pi(
            "deploy",
            "run",
            str(reach_bundle),
            "--robot",
            "rover",
            "--backend",
            "mock",
            "--goal",
            "0.5",
            "0.0",
            "--episodes",
            "1000",
            "--max-steps",
            "4",
            "--record",
            str(rec),
            "--json",
            str(out),
        ),
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_for(lambda: len(read_json(out).get("episodes", [])) >= 2), "no episode ran"
        proc.send_signal(sig)
        log, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + sig, log
    report = read_json(out)
    assert report["finished"] and report["stopped_by"] == f"signal:{sig.name}", log
    assert report["motor_duty_after_stop"] == [0.0, 0.0, 0.0, 0.0]
    assert report["robot_connected"] is False
    saved = [e for e in report["episodes"] if e["info"]["recorded"]]
    assert saved and all(not e["interrupted"] for e in saved)
    from deploy.dataset import Dataset

    ds = Dataset.open(rec)  # valid: only complete episodes, no leftovers of the interrupted one
    assert ds.num_episodes == len(saved)
    ep = ds.episode(len(saved) - 1)
    assert len(ep["action"]) == saved[-1]["steps"] and bool(ep["done"][-1])
    assert not list(rec.rglob("*.tmp"))


def test_check_on_mock_pins(tmp_path, reach_bundle) -> None:
    out = tmp_path / "check.json"
    r = subprocess.run(
        sim2pi(
            "deploy",
            "check",
            str(reach_bundle),
            "--backend",
            "mock",
            "--ticks",
            "20",
            "--samples",
            "3",
            "--json",
            str(out),
        ),
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rep = read_json(out)
    assert rep["ok"] and rep["pin_factory"] == "MockFactory"
    sections = rep["timing"]["sections"]
    assert {"sensors", "preprocess", "inference", "safety", "actuation"} <= set(sections)
    assert sections["inference"]["n"] == 21
    assert "deploy check: OK" in r.stdout


def test_bundle_for_another_robot_is_refused(tmp_path, reach_bundle) -> None:
    data = load_description("rover").to_dict()
    data["name"] = "heavy"
    data["geometry"]["mass"] = 1.5
    robot = tmp_path / "heavy.yaml"
    robot.write_text(yaml.safe_dump(data))
    for cmd in ("check", "run"):
        r = subprocess.run(
            sim2pi(
                "deploy",
                cmd,
                str(reach_bundle),
                "--robot",
                str(robot),
                "--backend",
                "mock",
                "--goal",
                "0.3",
                "0",
            ),
            cwd=ROOT,
            env=env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 2, r.stdout + r.stderr
        err = " ".join(r.stderr.split())  # rich wraps long lines
        assert "made for robot 'rover'" in err and "not for robot 'heavy'" in err


def test_run_on_the_twin_reports_success(tmp_path, reach_bundle) -> None:
    pytest.importorskip("pybullet")
    out = tmp_path / "twin.json"
    r = subprocess.run(
        sim2pi(
            "deploy",
            "run",
            str(reach_bundle),
            "--backend",
            "twin",
            "--episodes",
            "3",
            "--seed",
            "0",
            "--json",
            str(out),
        ),
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rep = read_json(out)
    assert len(rep["episodes"]) == 3 and "success_rate" in rep
    assert any(e["success"] for e in rep["episodes"])  # the P-controller reaches some goals
    assert "success:" in r.stdout and "episode 2: success" in r.stdout
