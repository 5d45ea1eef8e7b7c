"""Export a trained policy to a bundle: ``policy.onnx`` + ``bundle.json`` (docs/architecture.md).

The ONNX graph takes one input per observation feature of the spec, named by the feature key, with
shape ``[batch, H, *feature.shape]`` (float32 vectors, uint8 HWC images) and returns ``action``
``[batch, action_dim]``. Observation normalization, history handling (flattened window or GRU), the
head's decoding (GMM: mean of the most likely mode; discretized: bin centre of the argmax) and
action scaling and clipping are all inside the graph: it is :meth:`agent.policies.Policy.forward`.

We use the TorchScript-based exporter (``dynamo=False``), which torch 2.13 still ships and which
exports ``nn.GRU`` and dynamic batch axes directly; should it disappear, the dynamo exporter is used
with a wrapper whose ``forward`` takes the inputs by keyword.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from agent.checkpoint import CheckpointMeta, load_policy
from agent.policies import Policy
from hardware.errors import BundleError

log = logging.getLogger(__name__)

OPSET = 17
POLICY_FILE = "policy.onnx"


class OnnxWrapper(nn.Module):
    """Positional inputs in spec order → the policy's observation dict."""

    def __init__(self, policy: Policy):
        super().__init__()
        self.policy = policy
        self.keys = list(policy.spec.observation)

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.policy(dict(zip(self.keys, inputs, strict=True)))


def example_inputs(policy: Policy, batch: int = 2, seed: int = 0) -> dict[str, Tensor]:
    """Random inputs of the right shapes and dtypes (for tracing and parity checks)."""
    g = torch.Generator().manual_seed(seed)
    h = policy.config.history
    out = {}
    for k, f in policy.spec.observation.items():
        if f.is_image:
            out[k] = torch.randint(0, 256, (batch, h, *f.shape), generator=g, dtype=torch.uint8)
        else:
            out[k] = torch.randn((batch, h, *f.shape), generator=g)
    return out


def export_onnx(policy: Policy, path: str | Path) -> Path:
    """Write ``policy`` as an ONNX model with a dynamic batch axis and check it."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    policy = policy.eval()
    wrapper = OnnxWrapper(policy).eval()
    ex = example_inputs(policy)
    names = list(ex)
    axes = {**{k: {0: "batch"} for k in names}, "action": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            wrapper,
            tuple(ex.values()),
            str(path),
            input_names=names,
            output_names=["action"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    return path


def parity(
    policy: Policy, onnx_path: str | Path, inputs: dict[str, np.ndarray], batch: int = 256
) -> float:
    """Max |torch - onnxruntime| over ``inputs`` ({key: [N, H, ...]}), evaluated in batches."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    n = len(next(iter(inputs.values())))
    worst = 0.0
    policy.eval()
    with torch.no_grad():
        for i in range(0, n, batch):
            chunk = {k: np.ascontiguousarray(v[i : i + batch]) for k, v in inputs.items()}
            ref = policy({k: torch.from_numpy(v) for k, v in chunk.items()}).numpy()
            out = sess.run(["action"], chunk)[0]
            worst = max(worst, float(np.abs(ref - out).max()))
    return worst


def export_bundle(
    policy: Policy,
    out: str | Path,
    *,
    meta: CheckpointMeta | None = None,
    parity_inputs: dict[str, np.ndarray] | None = None,
    tolerance: float = 1e-5,
) -> dict[str, Any]:
    """Write ``out/policy.onnx`` and ``out/bundle.json``; returns a summary.

    With ``parity_inputs`` the exported graph is compared with torch on them and a difference
    above ``tolerance`` raises :class:`BundleError`.
    """
    from deploy.bundle import write_bundle_json

    out = Path(out)
    onnx_path = export_onnx(policy, out / POLICY_FILE)
    summary: dict[str, Any] = {"onnx": str(onnx_path)}
    if parity_inputs is not None:
        diff = parity(policy, onnx_path, parity_inputs)
        n = len(next(iter(parity_inputs.values())))
        summary.update(parity_max_abs_diff=diff, parity_samples=n)
        if diff > tolerance:
            raise BundleError(
                f"exported graph differs from torch by {diff:.2e} > {tolerance:.0e} "
                f"on {n} observations; do not deploy it (report this as a bug)"
            )
    cfg = policy.config
    training: dict[str, Any] = {}
    if meta is not None:
        training = {
            "algo": meta.algo,
            "dataset": meta.dataset,
            "commit": meta.commit,
            "steps": meta.step,
            "seed": meta.seed,
            "eval": meta.eval,
            "created": meta.created,
        }
    if "parity_max_abs_diff" in summary:
        training["export_parity"] = {
            "max_abs_diff": summary["parity_max_abs_diff"],
            "samples": summary["parity_samples"],
        }
    write_bundle_json(
        out,
        policy.spec,
        cfg.history,
        control_rate=policy.spec.control_rate,
        policy={"arch": cfg.arch, "head": cfg.head, **cfg.to_dict()},
        training=training,
    )
    summary["bundle"] = str(out)
    return summary


def dataset_windows(
    policy: Policy, episodes: list[dict[str, np.ndarray]], n: int = 1000, seed: int = 0
) -> dict[str, np.ndarray]:
    """``n`` observation windows drawn from episodes (for the parity check)."""
    from agent.data import EpisodeStore

    store = EpisodeStore(policy.spec, episodes)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(store), size=n, replace=len(store) < n)
    return store.windows(idx, policy.config.history)


def export_run(
    run: str | Path,
    out: str | Path,
    *,
    data: str | Path | None = None,
    samples: int = 1000,
    tolerance: float = 1e-5,
) -> dict[str, Any]:
    """``sim2pi export``: load ``run``'s checkpoint, export it, check parity on ``samples``
    observations from ``data`` (the run's dataset if it was on disk), else on random inputs."""
    policy, meta = load_policy(run)
    src = data or (meta.dataset if meta.dataset and Path(meta.dataset).exists() else None)
    if src is not None:
        from agent.data import load_dataset

        spec, episodes, _ = load_dataset(src)
        policy.spec.check(spec)
        inputs = dataset_windows(policy, episodes, samples)
    else:
        log.info("no dataset to check parity on; using %d random observations", samples)
        inputs = {k: v.numpy() for k, v in example_inputs(policy, samples).items()}
    summary = export_bundle(policy, out, meta=meta, parity_inputs=inputs, tolerance=tolerance)
    summary["parity_source"] = str(src) if src is not None else "random"
    return summary
