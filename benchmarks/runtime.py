"""Runtime benchmark: ONNX inference beside torch eager, loop overhead, a paced run on mock pins,
and cold start to the first motor command.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/runtime.py [--seconds 60] [--no-append]``.

Measures (one thread everywhere; targets from the runtime issue):

- MLP bundle (reach, history 2): ``OnnxPolicy.act`` p50/p99 including the spec check, the history
  ring buffer and the output copy (target p50 <= 30 us), beside the same net in torch eager
  (including numpy -> tensor -> numpy); the ratio is what to compare across machines.
- 64x64 CNN bundle (seek): same (target p50 <= 200 us).
- The control loop on the mock backend (a real PiRobot on gpiozero mock pins), paced at 50 Hz for
  ``--seconds``: loop overhead (tick work minus inference) p50/p99 (target p99 <= 0.5 ms) and missed
  deadlines (target 0).
- Cold start: a fresh ``python -m deploy.cli deploy run --backend mock`` process, from spawn to the
  first ``send_action`` (target <= 1.5 s).

The machine is shared and noisy; the table is appended to ``benchmarks/RESULTS.md`` with the commit
and the load average.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from _common import append, load, table  # noqa: E402

TARGETS = {
    "mlp_p50_us": 30.0,
    "cnn_p50_us": 200.0,
    "overhead_p99_ms": 0.5,
    "missed": 0,
    "cold_start_s": 1.5,
}


# ---------------------------------------------------------------------------------- nets


def build_bundles(folder: Path) -> dict[str, Path]:
    """An MLP reach bundle and a 64x64 CNN seek bundle, exported from torch (random weights)."""
    import torch
    from torch import nn

    from deploy.bundle import write_bundle_json
    from hardware.description import load_description
    from hardware.tasks import task_spec

    desc = load_description("rover")
    torch.manual_seed(0)

    class MLP(nn.Module):
        """Normalize, flatten the window, 2x256 ReLU, tanh head."""

        def __init__(self, sizes: list[int], history: int) -> None:
            super().__init__()
            n = sum(sizes) * history
            self.register_buffer("mean", torch.zeros(n))
            self.register_buffer("std", torch.ones(n))
            self.net = nn.Sequential(
                nn.Linear(n, 256),
                nn.ReLU(),
                nn.Linear(256, 256),
                nn.ReLU(),
                nn.Linear(256, 2),
                nn.Tanh(),
            )

        def forward(self, *xs: torch.Tensor) -> torch.Tensor:
            x = torch.cat([t.flatten(1) for t in xs], dim=1)
            return self.net((x - self.mean) / self.std)

    class CNN(nn.Module):
        """uint8 HWC image -> 3 conv layers -> with the vectors -> 256 -> tanh head."""

        def __init__(self, vec: int) -> None:
            super().__init__()
            self.conv = nn.Sequential(
                nn.Conv2d(3, 32, 8, 4),
                nn.ReLU(),
                nn.Conv2d(32, 64, 4, 2),
                nn.ReLU(),
                nn.Conv2d(64, 64, 3, 1),
                nn.ReLU(),
                nn.Flatten(),
            )
            self.head = nn.Sequential(
                nn.Linear(64 * 4 * 4 + vec, 256), nn.ReLU(), nn.Linear(256, 2), nn.Tanh()
            )

        def forward(self, obs: torch.Tensor, img: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
            x = img[:, -1].permute(0, 3, 1, 2).float() / 255.0
            z = self.conv(x)
            return self.head(torch.cat([z, obs[:, -1], task[:, -1]], dim=1))

    out = {}
    for name, task, history in (("mlp", "reach", 2), ("cnn", "seek", 1)):
        spec = task_spec(task, desc)
        feats = spec.observation
        if name == "mlp":
            model: nn.Module = MLP([f.dim for f in feats.values()], history)
        else:
            model = CNN(feats["observation"].dim + feats["task"].dim)
        model.eval()
        ex = tuple(
            torch.zeros(
                (1, history, *f.shape), dtype=torch.uint8 if f.dtype == "uint8" else torch.float32
            )
            for f in feats.values()
        )
        path = folder / name
        path.mkdir(parents=True, exist_ok=True)
        names = list(feats)
        torch.onnx.export(
            model,
            ex,
            str(path / "policy.onnx"),
            input_names=names,
            output_names=["action"],
            dynamic_axes={k: {0: "batch"} for k in names},
            dynamo=False,
            do_constant_folding=True,
        )
        write_bundle_json(path, spec, history, policy={"arch": name, "head": "deterministic"})
        out[name] = path
        out[name + "_model"] = model  # type: ignore[assignment]
    return out


def sample_obs(spec: Any, rng: np.random.Generator) -> dict[str, np.ndarray]:
    obs = {}
    for k, f in spec.observation.items():
        if f.dtype == "uint8":
            obs[k] = rng.integers(0, 255, f.shape, dtype=np.uint8)
        else:
            obs[k] = rng.uniform(-1, 1, f.shape).astype(np.float32)
    return obs


def bench_inference(bundle: Path, model: Any, iters: int) -> dict[str, float]:
    """OnnxPolicy.act vs torch eager, interleaved in blocks; per-call latencies in us."""
    import torch

    from deploy.policy import OnnxPolicy

    torch.set_num_threads(1)
    policy = OnnxPolicy(bundle, warmup=20)
    rng = np.random.default_rng(0)
    obs = [sample_obs(policy.spec, rng) for _ in range(16)]
    keys = list(policy.spec.observation)
    h = policy.history
    window = {
        k: np.zeros(
            (1, h, *policy.spec.observation[k].shape),
            np.uint8 if policy.spec.observation[k].dtype == "uint8" else np.float32,
        )
        for k in keys
    }

    def torch_act(o: dict[str, np.ndarray]) -> np.ndarray:
        for k in keys:  # the same ring buffer the runtime keeps
            w = window[k]
            w[0, :-1] = w[0, 1:]
            w[0, -1] = o[k]
        with torch.inference_mode():
            return model(*(torch.from_numpy(window[k]) for k in keys))[0].numpy().astype(np.float64)

    for o in obs:  # warm-up both
        policy.act(o)
        torch_act(o)
    t_ort, t_torch = [], []
    pc = time.perf_counter
    block = 100
    for b in range(iters // block):
        for i in range(block):
            o = obs[(b * block + i) % len(obs)]
            t0 = pc()
            policy.act(o)
            t_ort.append(pc() - t0)
        for i in range(block):
            o = obs[(b * block + i) % len(obs)]
            t0 = pc()
            torch_act(o)
            t_torch.append(pc() - t0)
    a, t = np.array(t_ort) * 1e6, np.array(t_torch) * 1e6
    return {
        "ort_p50": float(np.median(a)),
        "ort_p99": float(np.percentile(a, 99)),
        "torch_p50": float(np.median(t)),
        "torch_p99": float(np.percentile(t, 99)),
    }


def bench_loop(bundle: Path, seconds: float, rate: float) -> dict[str, Any]:
    """The paced loop on the mock backend (real PiRobot code on gpiozero mock pins)."""
    import logging

    from deploy.loop import ControlLoop
    from deploy.policy import OnnxPolicy, PolicySource
    from hardware.description import load_description
    from hardware.mock import make_mock_robot
    from hardware.tasks import Observer

    logging.disable(logging.WARNING)  # safety transitions would be logged
    desc = load_description("rover")
    robot = make_mock_robot(desc)
    # Time the simulated world (wheel model + encoder edges, run inside get_observation /
    # send_action on the mock only; a real Pi has physics instead) to show its share of "sensors"
    # and "actuation".
    world: list[float] = []
    advance = robot.advance_world
    pc = time.perf_counter

    def timed_advance() -> None:
        t0 = pc()
        advance()
        world.append(pc() - t0)

    robot.advance_world = timed_advance  # type: ignore[method-assign]
    loop = ControlLoop(
        robot,
        Observer("reach", desc),
        PolicySource(OnnxPolicy(bundle)),
        rate=rate,
        stop_on_success=False,
    )
    steps = int(seconds * rate)
    with loop, loop.signals():
        world.clear()
        wall0, cpu0 = time.monotonic(), time.process_time()
        res = loop.run_episode(goal=(0.5, 0.0), max_steps=steps)
        cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    logging.disable(logging.NOTSET)
    tm = loop.times
    over = tm.column("overhead") * 1e3
    own = sum(tm.column(k) for k in ("preprocess", "safety", "record")) * 1e3
    return {
        "ticks": len(tm),
        "steps": res.steps,
        "missed": tm.missed_deadlines,
        "overruns": tm.overruns,
        "overhead_p50_ms": float(np.median(over)),
        "overhead_p99_ms": float(np.percentile(over, 99)),
        "own_p50_ms": float(np.median(own)),
        "own_p99_ms": float(np.percentile(own, 99)),
        "world_p50_ms": float(np.median(world)) * 1e3,
        "world_p99_ms": float(np.percentile(world, 99)) * 1e3,
        "cpu_percent": 100.0 * cpu,
        "spin_ms": loop.spin * 1e3,
        "sections": {s.name: s for s in tm.stats()},
        "safety": res.info["safety"],
    }


COLD = r"""
import sys, time
import hardware.mock as m
orig = m.MockRobot.send_action
def first(self, a):
    if not getattr(first, "done", False):
        first.done = True
        print("FIRST_MOTOR_COMMAND", time.time(), flush=True)
    return orig(self, a)
m.MockRobot.send_action = first
sys.argv = ["sim2pi", "deploy", "run", sys.argv[1], "--backend", "mock", "--goal", "0.3", "0",
            "--episodes", "1", "--max-steps", "2"]
from deploy.cli import main
main()
"""


def bench_cold_start(bundle: Path, runs: int = 3) -> list[float]:
    """Spawn -> first motor command, in seconds, for fresh processes."""
    out = []
    for _ in range(runs):
        t0 = time.time()
        r = subprocess.run(
            [sys.executable, "-c", COLD, str(bundle)],
            cwd=ROOT,
            text=True,
            capture_output=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            timeout=120,
        )
        line = [x for x in r.stdout.splitlines() if x.startswith("FIRST_MOTOR_COMMAND")]
        if not line:
            raise RuntimeError(f"cold-start run failed:\n{r.stdout}\n{r.stderr}")
        out.append(float(line[0].split()[1]) - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="paced mock run length (s)")
    ap.add_argument("--rate", type=float, default=50.0, help="paced mock run rate (Hz)")
    ap.add_argument("--iters", type=int, default=3000, help="inference calls per backend")
    ap.add_argument("--no-append", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    print(f"runtime benchmark ({load()})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        b = build_bundles(Path(tmp))
        mlp = bench_inference(b["mlp"], b["mlp_model"], args.iters)
        cnn = bench_inference(b["cnn"], b["cnn_model"], max(args.iters // 2, 200))
        cold = bench_cold_start(b["mlp"])
        loop = bench_loop(b["mlp"], args.seconds, args.rate)
    rows = [
        [
            "MLP act p50 / p99 (us)",
            f"{mlp['ort_p50']:.1f} / {mlp['ort_p99']:.1f}",
            f"{mlp['torch_p50']:.1f} / {mlp['torch_p99']:.1f}",
            f"{mlp['torch_p50'] / mlp['ort_p50']:.1f}x",
            f"p50 <= {TARGETS['mlp_p50_us']:.0f}",
        ],
        [
            "64x64 CNN act p50 / p99 (us)",
            f"{cnn['ort_p50']:.1f} / {cnn['ort_p99']:.1f}",
            f"{cnn['torch_p50']:.1f} / {cnn['torch_p99']:.1f}",
            f"{cnn['torch_p50'] / cnn['ort_p50']:.1f}x",
            f"p50 <= {TARGETS['cnn_p50_us']:.0f}",
        ],
        [
            f"tick work excl. inference p50 / p99 (ms), {args.rate:g} Hz mock",
            f"{loop['overhead_p50_ms']:.3f} / {loop['overhead_p99_ms']:.3f}",
            "",
            "",
            f"p99 <= {TARGETS['overhead_p99_ms']}",
        ],
        [
            "  of which the loop itself (preprocess+safety+record)",
            f"{loop['own_p50_ms']:.3f} / {loop['own_p99_ms']:.3f}",
            "",
            "",
            "",
        ],
        [
            "  mock world model per call (2 calls a tick, not on a real Pi)",
            f"{loop['world_p50_ms']:.3f} / {loop['world_p99_ms']:.3f}",
            "",
            "",
            "",
        ],
        [
            f"missed deadlines / overruns in {args.seconds:g} s ({loop['ticks']} ticks)",
            f"{loop['missed']} / {loop['overruns']}",
            "",
            "",
            "0",
        ],
        [
            "cold start to first motor command (s), 3 runs",
            " / ".join(f"{c:.2f}" for c in cold),
            "",
            "",
            f"<= {TARGETS['cold_start_s']}",
        ],
    ]
    body = table(["measure", "onnxruntime / sim2pi", "torch eager", "torch/ort", "target"], rows)
    sec = loop["sections"]
    body += "\n\nloop sections p50 / p99 (ms): " + ", ".join(
        f"{k} {sec[k].p50_ms:.3f} / {sec[k].p99_ms:.3f}"
        for k in ("sensors", "preprocess", "inference", "safety", "actuation", "record")
    )
    body += f"\nsafety reasons during the run: {loop['safety'] or 'none'}"
    body += (
        f"\nprocess CPU during the paced run (all threads, spin {loop['spin_ms']:g} ms before each "
        f"deadline): {loop['cpu_percent']:.1f} % of one core"
    )
    notes = (
        "One onnxruntime intra-op thread, no spinning; torch.set_num_threads(1). Inference "
        "includes the spec check, the history ring buffer and the output copy (both sides "
        "keep the same window). Random-weight nets."
    )
    if args.no_append:
        print(body)
    else:
        append("runtime (deploy/)", body, notes)


if __name__ == "__main__":
    main()
