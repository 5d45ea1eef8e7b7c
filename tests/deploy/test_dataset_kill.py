"""Crash safety: a recording (or compacting) subprocess is SIGKILLed at random moments, again and
again on the same dataset. After every kill the dataset must open and validate, hold exactly the
episodes whose save completed (plus, at most, the one whose save had started: it is committed or
not, never partial), and those episodes must equal what was recorded.

Run as a script, this file is the worker: ``python test_dataset_kill.py record|compact DIR``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
KILLS = 24  # >= 20 kills in the normal suite; each costs well under a second
NUMERIC = (
    "observation",
    "achieved_goal",
    "desired_goal",
    "action",
    "action_applied",
    "reward",
    "success",
    "done",
    "intervention",
)


def episode_length(e: int) -> int:
    return 4 + (e * 7) % 9


def worker(mode: str, path: Path) -> None:
    """Record episodes forever (or compact forever), announcing each step on stdout."""
    sys.path.insert(0, str(HERE))
    from test_dataset_helpers import TASKS, make_spec, synthetic_episode

    from deploy.dataset import DatasetWriter, compact

    spec = make_spec(h=24, w=32)
    if mode == "compact":
        print("READY", flush=True)
        while True:
            print("COMPACTING", flush=True)
            compact(path)
            print("COMPACTED", flush=True)
    w = (
        DatasetWriter.open(path)
        if (path / "meta/info.json").exists()
        else DatasetWriter.create(path, spec, 20)
    )
    print("READY", w.num_episodes, flush=True)
    while True:
        e = w.num_episodes
        w.start_episode(TASKS[e % 2])
        for f in synthetic_episode(e, episode_length(e), spec):
            w.add_frame(f)
            time.sleep(0.002)
        print("SAVING", e, flush=True)
        w.save_episode()
        print("SAVED", e, flush=True)


def _run_and_kill(mode: str, path: Path, delay: float) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), mode, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # blocks until the worker has imported and opened the dataset
    assert first.startswith("READY"), first + proc.stderr.read() if proc.stderr else first
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err
    lines = out.splitlines()
    if out and not out.endswith("\n"):
        # killed in the middle of printing a line: a "SAVED" without its number says no more than
        # the "SAVING" before it (the episode may or may not have been committed)
        lines = lines[:-1]
    return [first.strip(), *lines]


def test_sigkill_at_random_moments_never_loses_a_saved_episode(tmp_path: Path) -> None:
    from test_dataset_helpers import TASKS, make_spec, synthetic_episode

    from deploy.dataset import Dataset, validate

    spec = make_spec(h=24, w=32)
    path = tmp_path / "ds"
    rng = np.random.default_rng(20240611)
    committed = 0
    kinds = []
    for kill in range(KILLS):
        mode = "compact" if kill % 6 == 5 and committed > 0 else "record"
        lines = _run_and_kill(mode, path, float(rng.uniform(0.0, 0.35)))
        saved = [int(x.split()[1]) for x in lines if x.startswith("SAVED")]
        saving = [int(x.split()[1]) for x in lines if x.startswith("SAVING")]
        ds = Dataset.open(path, load_images=False)  # cleans leftovers of the interrupted run
        problems = [str(p) for p in validate(path)]
        assert problems == [], (kill, mode, problems)
        n = ds.num_episodes
        if mode == "record":
            done = (max(saved) + 1) if saved else committed
            in_flight = saving and (not saved or max(saving) > max(saved))
            assert n == done or (in_flight and n == done + 1), (kill, n, done, lines[-3:])
            kinds.append("mid-save" if in_flight else "mid-episode")
        else:
            assert n == committed
            kinds.append("compact")
        # episodes committed before this run cannot change while recording; compaction rewrites all
        for e in range(0 if mode == "compact" else max(0, committed - 1), n):
            ep = ds.episode(e)
            src = synthetic_episode(e, episode_length(e), spec)
            assert len(ep) == len(src) and ep.task_text == TASKS[e % 2]
            for key in NUMERIC:
                np.testing.assert_array_equal(
                    ep[key],
                    np.asarray([f[key] for f in src]),
                    err_msg=f"kill {kill}, episode {e}, {key}",
                )
        if n:
            last = ds.episode(n - 1, load_images=True)["image"]
            assert last.shape == (episode_length(n - 1), 24, 32, 3)
        committed = n
    assert committed > 0
    assert "compact" in kinds and "mid-episode" in kinds


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]))
