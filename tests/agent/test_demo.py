"""`sim2pi demo --quick` end to end: every stage runs and the report carries real figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_quick_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "demo", "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = out / "report.html"
    assert str(report.resolve()) in r.stdout.replace("\n", "")
    page = report.read_text()
    # figures exist: learning curve + trajectories embedded, video linked, latency table filled
    assert page.count("data:image/png;base64,") >= 2
    assert (out / "run" / "eval" / "rollout.mp4").stat().st_size > 1000
    assert "inference" in page and "p99" in page
    ev = json.loads((out / "eval.json").read_text())
    dep = json.loads((out / "deploy.json").read_text())
    assert ev["episodes"] >= 20 and len(dep["episodes"]) >= 10
    # a broken pipeline (untrained policy, wrong normalization, swapped wheels, goal in the wrong
    # frame) succeeds on well under 20 % of reach episodes; a working quick run gets 60-90 %.
    assert ev["success_rate"] >= 0.5, ev
    assert dep["success_rate"] >= 0.4, dep
    # the runtime stops the motors at the end
    assert dep["finished"] is True
    for figure in (f"{100 * ev['success_rate']:.0f} %", f"{100 * dep['success_rate']:.0f} %"):
        assert figure in page
    # both rows also carry the twin's ground truth (success is judged on odometry)
    assert ev["true_success_rate"] is not None and dep["true_success_rate"] is not None
    assert page.count("judged on the twin's ground-truth pose") == 2
