"""Recording benchmark: a synthetic 160×120 camera recorded at 30 Hz, and a SIGKILL soak.

Measures, for a paced recording (the control thread calls ``DatasetWriter.add_frame`` every 1/30 s
while the encoder thread encodes):

- achieved rate and dropped frames (ticks that started more than one period late);
- CPU seconds per recorded second (the whole process: control thread + encoder thread);
- finalize time per 30 s episode (``save_episode``: flush the encoder, write parquet, commit);

and a kill soak: a recorder subprocess is SIGKILLed at random moments ``--kills`` times on the same
dataset; after each kill the dataset must open and validate and hold every episode whose save
returned (loss ≤ the episode in progress).

Targets: 0 dropped frames, ≤ 30 % of one core, finalize ≤ 1 s, 0 unreadable datasets.
Usage: ``python benchmarks/recording.py [--seconds 30] [--episodes 2] [--kills 200]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

H, W, FPS = 120, 160, 30


def make_spec():
    from hardware.spec import Spec, action_feature, image, vector

    obs = {
        "observation": vector(
            "observation", ("x", "y", "c", "s", "wl", "wr"), ("m",) * 6, (-2,) * 6, (2,) * 6
        ),
        "image": image("image", H, W),
        "achieved_goal": vector("achieved_goal", ("x", "y"), ("m", "m"), (-2, -2), (2, 2)),
        "desired_goal": vector("desired_goal", ("x", "y"), ("m", "m"), (-1, -1), (1, 1)),
    }
    return Spec(observation=obs, action=action_feature(), task="reach", robot="bench")


class Camera:
    """A moving scene: gradient background, a drifting square and sensor noise."""

    def __init__(self, seed: int = 0) -> None:
        yy, xx = np.mgrid[0:H, 0:W]
        self.base = np.stack(
            [40 + xx * 180 // W, 50 + yy * 170 // H, np.full_like(xx, 90)], -1
        ).astype(np.int16)
        self.rng = np.random.default_rng(seed)

    def frame(self, k: int) -> np.ndarray:
        img = self.base + self.rng.integers(-3, 4, self.base.shape, dtype=np.int16)
        x0, y0 = (3 * k) % (W - 20), (k // 2) % (H - 20)
        img[y0 : y0 + 20, x0 : x0 + 20] = (220, 200, 40)
        return img.clip(0, 255).astype(np.uint8)


def frame_dict(cam: Camera, k: int, rng: np.random.Generator) -> dict:
    obs = rng.normal(size=6).astype(np.float32)
    return {
        "observation": obs,
        "image": cam.frame(k),
        "achieved_goal": obs[:2].copy(),
        "desired_goal": np.zeros(2, np.float32),
        "action": rng.uniform(-1, 1, 2).astype(np.float32),
        "reward": -1.0,
        "success": False,
        "done": False,
    }


def paced_recording(path: Path, seconds: float, episodes: int) -> dict[str, float]:
    from deploy.dataset import DatasetWriter

    cam, rng = Camera(), np.random.default_rng(0)
    period = 1.0 / FPS
    n = round(seconds * FPS)
    dropped, finalize = 0, []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with DatasetWriter.create(path, make_spec(), FPS) as w:
        for _ in range(episodes):
            w.start_episode("drive around")
            frames = [frame_dict(cam, k, rng) for k in range(min(n, 64))]  # camera work is not ours
            deadline = time.monotonic()
            for k in range(n):
                now = time.monotonic()
                if now - deadline > period:
                    dropped += 1
                    deadline = now
                w.add_frame(frames[k % len(frames)])
                deadline += period
                time.sleep(max(0.0, deadline - time.monotonic()))
            t = time.perf_counter()
            w.save_episode()
            finalize.append(time.perf_counter() - t)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    recorded = episodes * n / FPS
    return {
        "fps": episodes * n / (wall - sum(finalize)),
        "dropped": dropped,
        "cpu_per_s": cpu / recorded,
        "finalize_max": max(finalize),
        "finalize_mean": float(np.mean(finalize)),
        "frames": episodes * n,
        "mb": sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20,
    }


def worker(path: Path) -> None:
    """Kill-soak worker: record short episodes forever, announcing saves on stdout."""
    from deploy.dataset import DatasetWriter

    cam, rng = Camera(1), np.random.default_rng(1)
    w = (
        DatasetWriter.open(path)
        if (path / "meta/info.json").exists()
        else DatasetWriter.create(path, make_spec(), FPS)
    )
    print("READY", w.num_episodes, flush=True)
    k = 0
    while True:
        e = w.num_episodes
        w.start_episode("drive around")
        for _ in range(5 + e % 11):
            w.add_frame(frame_dict(cam, k, rng))
            k += 1
            time.sleep(0.001)
        print("SAVING", e, flush=True)
        w.save_episode()
        print("SAVED", e, flush=True)


def kill_soak(path: Path, kills: int, seed: int = 0) -> dict[str, float]:
    from deploy.dataset import Dataset, validate

    rng = np.random.default_rng(seed)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    unreadable = lost = partial = 0
    committed = 0
    for _ in range(kills):
        p = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert p.stdout is not None
        p.stdout.readline()
        time.sleep(float(rng.uniform(0, 0.3)))
        p.send_signal(signal.SIGKILL)
        out, _ = p.communicate()
        saved = [int(x.split()[1]) for x in out.splitlines() if x.startswith("SAVED")]
        saving = [int(x.split()[1]) for x in out.splitlines() if x.startswith("SAVING")]
        done = max(saved) + 1 if saved else committed
        try:
            ds = Dataset.open(path, load_images=False)
            errs = [x for x in validate(path) if x.level == "error"]
        except Exception:
            unreadable += 1
            continue
        if errs:
            unreadable += 1
        n = ds.num_episodes
        in_flight = bool(saving) and (not saved or max(saving) > max(saved))
        if n < done:
            lost += done - n
        if n > done + int(in_flight):
            partial += 1
        committed = n
    return {
        "kills": kills,
        "unreadable": unreadable,
        "lost_saved": lost,
        "partial": partial,
        "episodes": committed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each paced episode (s)")
    ap.add_argument("--episodes", type=int, default=2, help="paced episodes to record")
    ap.add_argument("--kills", type=int, default=200, help="SIGKILLs in the kill soak (0 = skip)")
    ap.add_argument("--no-append", action="store_true", help="do not append to RESULTS.md")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker is not None:
        worker(a.worker)
        return
    from _common import append, table

    with tempfile.TemporaryDirectory() as tmp:
        r = paced_recording(Path(tmp) / "paced", a.seconds, a.episodes)
        k = kill_soak(Path(tmp) / "soak", a.kills) if a.kills else None
    rows = [
        ["achieved rate (Hz)", r["fps"], f"{FPS}"],
        ["dropped frames", r["dropped"], "0"],
        ["CPU s per recorded s (all threads)", r["cpu_per_s"], "<= 0.30"],
        [
            f"finalize per {a.seconds:g} s episode, max / mean (s)",
            f"{r['finalize_max']:.3f} / {r['finalize_mean']:.3f}",
            "<= 1",
        ],
        ["dataset size (MB) for frames", f"{r['mb']:.2f} for {r['frames']}", ""],
    ]
    if k is not None:
        rows += [
            ["kill soak: SIGKILLs / episodes at the end", f"{k['kills']} / {k['episodes']}", ""],
            ["kill soak: unreadable or invalid after a kill", k["unreadable"], "0"],
            [
                "kill soak: saved episodes lost / partial visible",
                f"{k['lost_saved']} / {k['partial']}",
                "0 / 0",
            ],
        ]
    body = table(["measure", "value", "target"], rows)
    note = (
        f"Synthetic {W}×{H} RGB camera at {FPS} Hz through `DatasetWriter` (h264 crf 20, gop 2, "
        "veryfast, 1 encoder thread), paced with time.monotonic deadlines."
    )
    if a.no_append:
        print(body + "\n\n" + note)
    else:
        append("recording (deploy/dataset.py, benchmarks/recording.py)", body, note)


if __name__ == "__main__":
    main()
