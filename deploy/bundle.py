"""The policy bundle: a folder with ``policy.onnx`` and ``bundle.json`` (see docs/architecture.md).

``bundle.json`` records the spec the policy was trained on, its history length, control rate, the
hash of the robot description it was made for, and training metadata. The runtime loads a bundle with
:meth:`Bundle.load` and refuses it for another robot with :meth:`Bundle.check_robot` *before* the
first motor command. :func:`write_bundle_json` is what the exporter calls to write the metadata.

Example::

    bundle = Bundle.load("runs/reach/bundle")
    bundle.check_robot(load_description("rover"))
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.fileio import atomic_write_json
from hardware.description import RobotDescription
from hardware.errors import BundleError, SpecMismatch
from hardware.spec import Spec

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "sim2pi-bundle"
BUNDLE_VERSION = 1
POLICY_FILE = "policy.onnx"
META_FILE = "bundle.json"


@dataclass
class Bundle:
    """A loaded, validated policy bundle (the ONNX file itself is opened by ``OnnxPolicy``)."""

    path: Path
    spec: Spec
    history: int
    control_rate: float
    robot_hash: str
    task: str
    policy: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def onnx_path(self) -> Path:
        """Path of ``policy.onnx``."""
        return self.path / POLICY_FILE

    @property
    def robot(self) -> str:
        """Name of the robot description the bundle was made for."""
        return self.spec.robot

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        """Load and validate a bundle folder; raise :class:`BundleError` saying what is wrong."""
        p = Path(path)
        if p.is_file() and p.name in (POLICY_FILE, META_FILE):
            p = p.parent
        if not p.is_dir():
            raise BundleError(
                f"bundle folder '{p}' does not exist; give the folder that holds "
                f"{POLICY_FILE} and {META_FILE} (made by `sim2pi export`)"
            )
        for name in (POLICY_FILE, META_FILE):
            if not (p / name).is_file():
                raise BundleError(f"bundle '{p}' has no {name}; re-export it with `sim2pi export`")
        try:
            meta = json.loads((p / META_FILE).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise BundleError(
                f"bundle '{p}': {META_FILE} is not valid JSON ({e}); re-export it"
            ) from None
        return cls.from_meta(p, meta)

    @classmethod
    def from_meta(cls, path: Path, meta: Mapping[str, Any]) -> Bundle:
        """Validate the parsed ``bundle.json`` of the bundle at ``path``."""
        where = f"bundle '{path}': {META_FILE}"
        if not isinstance(meta, Mapping):
            raise BundleError(f"{where} must hold a JSON object")
        if meta.get("format") != BUNDLE_FORMAT:
            raise BundleError(
                f"{where}: 'format' is {meta.get('format')!r}, expected "
                f"{BUNDLE_FORMAT!r}; this is not a sim2pi policy bundle"
            )
        version = meta.get("version")
        if version != BUNDLE_VERSION:
            raise BundleError(
                f"{where}: version {version!r} is not supported (this sim2pi reads "
                f"version {BUNDLE_VERSION}); re-export with this sim2pi"
            )
        for key in ("spec", "history", "control_rate", "robot_hash", "task"):
            if key not in meta:
                raise BundleError(f"{where}: missing '{key}'; re-export the bundle")
        try:
            spec = Spec.from_dict(meta["spec"])
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{where}: 'spec' is malformed ({e}); re-export the bundle") from None
        history = meta["history"]
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise BundleError(f"{where}: 'history' must be an integer >= 1, got {history!r}")
        rate = meta["control_rate"]
        if (
            isinstance(rate, bool)
            or not isinstance(rate, (int, float))
            or not (math.isfinite(rate) and rate > 0)
        ):
            raise BundleError(
                f"{where}: 'control_rate' must be a positive number of Hz, got {rate!r}"
            )
        robot_hash = str(meta["robot_hash"])
        if spec.robot_hash and spec.robot_hash != robot_hash:
            raise BundleError(
                f"{where}: 'robot_hash' {robot_hash} disagrees with the spec's "
                f"{spec.robot_hash}; the file was edited by hand, re-export it"
            )
        if spec.task and meta["task"] != spec.task:
            raise BundleError(
                f"{where}: 'task' {meta['task']!r} disagrees with the spec's "
                f"{spec.task!r}; re-export the bundle"
            )
        if "action" in spec.observation or spec.action.shape != (2,):
            raise BundleError(
                f"{where}: the action must be the (left, right) duty of shape (2,), "
                f"got {spec.action.shape}"
            )
        return cls(
            path=Path(path),
            spec=spec,
            history=history,
            control_rate=float(rate),
            robot_hash=robot_hash,
            task=str(meta["task"]),
            policy=dict(meta.get("policy") or {}),
            training=dict(meta.get("training") or {}),
        )

    def check_robot(self, desc: RobotDescription) -> None:
        """Refuse this bundle unless it was made for ``desc`` and its spec matches the task's.

        Raises :class:`BundleError` naming both robots and hashes when the description differs, and
        :class:`SpecMismatch` naming the feature when the observation or action spec differs.
        """
        from hardware.tasks import task_spec

        if self.robot_hash != desc.hash:
            raise BundleError(
                f"bundle '{self.path}' was made for robot '{self.robot or '?'}' (description hash "
                f"{self.robot_hash}), not for robot '{desc.name}' (hash {desc.hash}"
                f"{', from ' + desc.source if desc.source else ''}); export the policy for this "
                "robot description, or pass the description it was trained with"
            )
        expected = task_spec(self.task, desc)
        expected.check(self.spec)
        if not math.isclose(self.control_rate, desc.control.rate, rel_tol=1e-6):
            raise SpecMismatch(
                "control_rate",
                "rate",
                desc.control.rate,
                self.control_rate,
                "the bundle was trained at another control rate; re-export it",
            )
        log.info(
            "bundle %s matches robot '%s' (hash %s), task '%s', history %d, %.1f Hz",
            self.path,
            desc.name,
            desc.hash,
            self.task,
            self.history,
            self.control_rate,
        )

    def to_meta(self) -> dict[str, Any]:
        """The ``bundle.json`` content of this bundle."""
        return bundle_meta(
            self.spec,
            self.history,
            control_rate=self.control_rate,
            policy=self.policy,
            training=self.training,
        )


def bundle_meta(
    spec: Spec,
    history: int,
    *,
    control_rate: float | None = None,
    policy: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the ``bundle.json`` dictionary (see docs/architecture.md, "The policy bundle")."""
    rate = float(control_rate if control_rate is not None else spec.control_rate)
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "spec": spec.to_dict(),
        "history": int(history),
        "control_rate": rate,
        "robot_hash": spec.robot_hash,
        "task": spec.task,
        "policy": dict(policy or {}),
        "training": dict(training or {}),
    }


def write_bundle_json(
    folder: str | Path,
    spec: Spec,
    history: int,
    *,
    control_rate: float | None = None,
    policy: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``bundle.json`` into ``folder`` atomically (temp file, fsync, rename); returns its path.

    The result is validated by :meth:`Bundle.from_meta` before it is written, so an exporter cannot
    produce a bundle the runtime would refuse to read.
    """
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    meta = bundle_meta(spec, history, control_rate=control_rate, policy=policy, training=training)
    Bundle.from_meta(d, meta)
    atomic_write_json(d / META_FILE, meta)
    return d / META_FILE
