"""The ONNX policy runner: :class:`OnnxPolicy` runs a bundle's ``policy.onnx`` on the robot's CPU.

Session options are chosen for a small CPU shared with the sensors and the loop: one intra-op thread
by default, sequential execution, no spinning worker threads (``session.intra_op.allow_spinning =
0``; a spinning pool would burn a core between ticks). The graph inputs are checked against the
bundle's spec at load time (naming the feature on a mismatch), every observation against the spec
at run time, and a ring buffer keeps the last ``history`` observations per feature; at episode start
(:meth:`OnnxPolicy.reset`) the window is filled with copies of the first observation.

:class:`PolicySource` makes a policy a command source of the control loop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from deploy.bundle import Bundle
from deploy.teleop import Command
from hardware.errors import BundleError, SpecMismatch
from hardware.spec import Feature

log = logging.getLogger(__name__)

_ORT_TYPES = {"float32": "tensor(float)", "uint8": "tensor(uint8)"}


def session_options(threads: int = 1) -> Any:
    """onnxruntime ``SessionOptions`` for a small shared CPU (see the module docstring)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only
    return so


class OnnxPolicy:
    """Runs a policy bundle with onnxruntime.

    Args:
        bundle: a loaded :class:`Bundle` or the bundle folder.
        threads: onnxruntime intra-op threads (1 on a shared Pi CPU).
        warmup: inference runs at load time so the first tick is not slow.
        check_inputs: check every observation against the spec (on by default; the benchmark
            measures its cost).

    Example::

        policy = OnnxPolicy(Bundle.load("bundle"))
        policy.reset()
        action = policy.act(observer(robot.get_observation()))  # ndarray (2,), in [-1, 1]
    """

    def __init__(
        self,
        bundle: Bundle | str | Path,
        *,
        threads: int = 1,
        warmup: int = 3,
        check_inputs: bool = True,
    ) -> None:
        import onnxruntime as ort

        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        self.spec = self.bundle.spec
        self.history = self.bundle.history
        self.check_inputs = check_inputs
        try:
            self.session = ort.InferenceSession(
                str(self.bundle.onnx_path),
                sess_options=session_options(threads),
                providers=["CPUExecutionProvider"],
            )
        except Exception as e:  # onnxruntime raises its own exception types
            raise BundleError(
                f"bundle '{self.bundle.path}': onnxruntime cannot load "
                f"policy.onnx ({e}); re-export the bundle"
            ) from None
        self._check_graph()
        feats = self.spec.observation
        self._keys = list(feats)
        self._buffers: dict[str, np.ndarray] = {
            k: np.zeros((1, self.history, *f.shape), dtype=np.dtype(f.dtype))
            for k, f in feats.items()
        }
        self._output = ["action"]
        self._fresh = True
        for _ in range(max(0, warmup)):
            self._run()
        log.info(
            "policy %s: %s, history %d, %d thread(s), inputs %s",
            self.bundle.path,
            self.bundle.policy.get("arch", "?"),
            self.history,
            threads,
            self._keys,
        )

    # ------------------------------------------------------------------ checks
    def _check_graph(self) -> None:
        """Refuse a graph whose inputs/outputs disagree with the bundle's spec (naming it)."""
        inputs = {i.name: i for i in self.session.get_inputs()}
        feats = self.spec.observation
        for key in inputs:
            if key not in feats:
                raise SpecMismatch(
                    key,
                    "presence",
                    "missing",
                    "present",
                    f"policy.onnx has an input the spec does not list "
                    f"({list(feats)}); re-export the bundle",
                )
        for key, feat in feats.items():
            if key not in inputs:
                raise SpecMismatch(
                    key,
                    "presence",
                    "present",
                    "missing",
                    f"policy.onnx has no input '{key}'; re-export the bundle",
                )
            self._check_input(feat, inputs[key])
        outputs = {o.name: o for o in self.session.get_outputs()}
        if "action" not in outputs:
            raise SpecMismatch(
                "action",
                "presence",
                "present",
                "missing",
                f"policy.onnx outputs {list(outputs)}; it must output 'action'",
            )
        shape = outputs["action"].shape
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != 2):
            raise SpecMismatch("action", "shape", "[batch, 2]", shape)

    def _check_input(self, feat: Feature, node: Any) -> None:
        want = ["batch", self.history, *feat.shape]
        got = list(node.shape)
        if len(got) != len(want):
            raise SpecMismatch(
                feat.key, "shape", want, got, "inputs are [batch, history, *feature.shape]"
            )
        for w, g in zip(want[1:], got[1:], strict=True):
            if isinstance(g, int) and g != w:
                raise SpecMismatch(
                    feat.key, "shape", want, got, "inputs are [batch, history, *feature.shape]"
                )
        expected = _ORT_TYPES.get(feat.dtype, f"tensor({feat.dtype})")
        if node.type != expected:
            raise SpecMismatch(feat.key, "dtype", expected, node.type)

    # ------------------------------------------------------------------ running
    def reset(self) -> None:
        """Start a new episode: the next observation fills the whole history window."""
        self._fresh = True

    def act(self, obs: Mapping[str, Any]) -> np.ndarray:
        """The action for one policy observation: float64 ``(left, right)``, shape (2,).

        Raises :class:`SpecMismatch` naming the feature when ``obs`` does not match the spec.
        """
        if self.check_inputs:
            self.spec.check_observation(obs)
        fresh = self._fresh
        for k in self._keys:
            buf = self._buffers[k]
            if fresh:
                buf[0, :] = obs[k]
            else:
                if self.history > 1:
                    buf[0, :-1] = buf[0, 1:]
                buf[0, -1] = obs[k]
        self._fresh = False
        return self._run()

    def _run(self) -> np.ndarray:
        out = self.session.run(self._output, self._buffers)[0]
        if out.shape != (1, 2):
            raise SpecMismatch(
                "action", "shape", (1, 2), out.shape, "policy.onnx must output [batch, 2]"
            )
        return out[0].astype(np.float64)


class PolicySource:
    """A policy as a command source of the control loop (stamped with the tick's time)."""

    name = "policy"

    def __init__(self, policy: OnnxPolicy) -> None:
        self.policy = policy

    def reset(self) -> None:
        """New episode: clear the policy's history."""
        self.policy.reset()

    def command(self, ctx: Any) -> Any:
        """Run the policy on ``ctx.obs``; returns a ``Command`` stamped ``ctx.now``."""
        return Command(self.policy.act(ctx.obs), ctx.now, self.name)

    def events(self) -> list[str]:
        """A policy raises no events."""
        return []

    def close(self) -> None:
        """Nothing to release (the session is freed with the object)."""
