"""The spec: one contract between sim envs, real robots, datasets, policies and bundles.

A :class:`Spec` lists named features (per-dimension names and units, shape, dtype, range) for the
policy's observation (a dict of features), and its action. It is JSON-serializable, and
:meth:`Spec.check` refuses any disagreement with a :class:`~hardware.errors.SpecMismatch` that names
the feature and both values: nothing is ever silently reshaped.

Feature keys are the keys of the env's Dict observation (``observation``, ``achieved_goal``,
``desired_goal``, ``image``, ``task``) plus ``action``; ``dataset_key`` is the LeRobot column name
(``observation.state``, ``observation.images.front``, ...).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hardware.errors import SpecMismatch

# env key -> LeRobot dataset column
DATASET_KEYS = {
    "observation": "observation.state",
    "achieved_goal": "observation.achieved_goal",
    "desired_goal": "observation.desired_goal",
    "image": "observation.images.front",
    "task": "observation.task_id",
    "action": "action",
}


@dataclass(frozen=True)
class Feature:
    """One named array: what it is, its shape and dtype, and per-dimension names, units and range."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    names: tuple[str, ...] | None = None
    units: tuple[str, ...] | None = None
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        np.dtype(self.dtype)  # raises TypeError on a bad dtype name
        if self.names is not None:
            object.__setattr__(self, "names", tuple(self.names))
        if self.units is not None:
            object.__setattr__(self, "units", tuple(self.units))
        if self.is_vector and self.names is not None and len(self.names) != self.dim:
            raise ValueError(
                f"feature '{self.key}': {len(self.names)} names for {self.dim} dimensions"
            )
        for attr in ("low", "high"):
            v = getattr(self, attr)
            if v is not None:
                n = np.size(v)
                if n not in (1, self.dim):
                    raise ValueError(
                        f"feature '{self.key}': {n} {attr} values for {self.dim} dimensions"
                    )
                object.__setattr__(
                    self, attr, tuple(float(x) for x in np.broadcast_to(v, (self.dim,)))
                )

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3 and self.dtype == "uint8"

    @property
    def is_vector(self) -> bool:
        return len(self.shape) == 1

    @property
    def dim(self) -> int:
        return int(self.shape[0]) if self.is_vector else 1

    @property
    def dataset_key(self) -> str:
        return DATASET_KEYS.get(self.key, f"observation.{self.key}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "names": list(self.names) if self.names is not None else None,
            "units": list(self.units) if self.units is not None else None,
            "low": _finite_or_str(self.low),
            "high": _finite_or_str(self.high),
            "doc": self.doc,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Feature:
        return cls(
            key=d["key"],
            dtype=d["dtype"],
            shape=tuple(d["shape"]),
            names=tuple(d["names"]) if d.get("names") is not None else None,
            units=tuple(d["units"]) if d.get("units") is not None else None,
            low=_from_finite_or_str(d.get("low")),
            high=_from_finite_or_str(d.get("high")),
            doc=d.get("doc", ""),
        )

    def check(self, other: Feature) -> None:
        """Raise SpecMismatch naming this feature and both values on any disagreement."""
        for what in ("dtype", "shape", "names", "units"):
            a, b = getattr(self, what), getattr(other, what)
            if a != b:
                raise SpecMismatch(self.key, what, a, b)
        for what in ("low", "high"):
            a, b = getattr(self, what), getattr(other, what)
            if (a is None) != (b is None) or (
                a is not None and not np.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)
            ):
                raise SpecMismatch(self.key, what, a, b)

    def check_array(self, value: Any) -> np.ndarray:
        """Check a runtime value against this feature; returns it as an ndarray.

        Refuses (never reshapes) a wrong shape or a non-castable dtype, naming the feature.
        """
        arr = np.asarray(value)
        if arr.shape != self.shape:
            raise SpecMismatch(self.key, "shape", self.shape, arr.shape)
        if self.dtype == "uint8" and arr.dtype != np.uint8:
            raise SpecMismatch(self.key, "dtype", self.dtype, str(arr.dtype))
        if np.dtype(self.dtype).kind == "f" and arr.dtype.kind not in "fiub":
            raise SpecMismatch(self.key, "dtype", self.dtype, str(arr.dtype))
        return arr


def _finite_or_str(v: tuple[float, ...] | None) -> list[Any] | None:
    if v is None:
        return None
    return [x if math.isfinite(x) else str(x) for x in v]


def _from_finite_or_str(v: Sequence[Any] | None) -> tuple[float, ...] | None:
    if v is None:
        return None
    return tuple(float(x) for x in v)


def vector(
    key: str,
    names: Sequence[str],
    units: Sequence[str],
    low: Sequence[float],
    high: Sequence[float],
    doc: str = "",
    dtype: str = "float32",
) -> Feature:
    """A 1-D float feature with per-dimension names, units and range."""
    n = max(len(names), len(low), len(high))
    return Feature(key, dtype, (n,), tuple(names), tuple(units), tuple(low), tuple(high), doc)


def image(key: str, height: int, width: int, doc: str = "") -> Feature:
    """An RGB uint8 image feature, (height, width, 3)."""
    return Feature(
        key,
        "uint8",
        (height, width, 3),
        ("height", "width", "channels"),
        None,
        (0.0,),
        (255.0,),
        doc,
    )


@dataclass
class Spec:
    """The observation features (ordered) and the action feature of one robot + task."""

    observation: dict[str, Feature]
    action: Feature
    task: str = ""
    robot: str = ""
    robot_hash: str = ""
    control_rate: float = 0.0
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def goal_keys(self) -> tuple[str, str] | None:
        """(achieved, desired) keys when the task is goal-conditioned, else None."""
        if "achieved_goal" in self.observation and "desired_goal" in self.observation:
            return ("achieved_goal", "desired_goal")
        return None

    @property
    def image_keys(self) -> list[str]:
        return [k for k, f in self.observation.items() if f.is_image]

    @property
    def vector_keys(self) -> list[str]:
        return [k for k, f in self.observation.items() if not f.is_image]

    def features(self) -> dict[str, Feature]:
        """All features, observation first then action."""
        return {**self.observation, "action": self.action}

    def check(self, other: Spec, *, robot: bool = True) -> None:
        """Raise SpecMismatch on the first disagreement (feature, what, both values)."""
        ours, theirs = list(self.observation), list(other.observation)
        for k in ours:
            if k not in other.observation:
                raise SpecMismatch(
                    k, "presence", "present", "missing", f"the other side has {theirs}"
                )
        for k in theirs:
            if k not in self.observation:
                raise SpecMismatch(k, "presence", "missing", "present", f"expected only {ours}")
        for k in ours:
            self.observation[k].check(other.observation[k])
        self.action.check(other.action)
        if self.task and other.task and self.task != other.task:
            raise SpecMismatch("task", "name", self.task, other.task)
        if robot and self.robot_hash and other.robot_hash and self.robot_hash != other.robot_hash:
            raise SpecMismatch(
                "robot",
                "description hash",
                self.robot_hash,
                other.robot_hash,
                f"made for robot '{other.robot}', not '{self.robot}'; retrain or "
                "export for this robot description",
            )

    def check_observation(self, obs: Mapping[str, Any]) -> None:
        """Check a runtime observation dict against the spec, naming the bad feature."""
        for k, feat in self.observation.items():
            if k not in obs:
                raise SpecMismatch(k, "presence", "present", "missing")
            feat.check_array(obs[k])

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "robot": self.robot,
            "robot_hash": self.robot_hash,
            "control_rate": self.control_rate,
            "observation": [f.to_dict() for f in self.observation.values()],
            "action": self.action.to_dict(),
            "notes": dict(self.notes),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Spec:
        obs = [Feature.from_dict(x) for x in d["observation"]]
        return cls(
            observation={f.key: f for f in obs},
            action=Feature.from_dict(d["action"]),
            task=d.get("task", ""),
            robot=d.get("robot", ""),
            robot_hash=d.get("robot_hash", ""),
            control_rate=float(d.get("control_rate", 0.0)),
            notes=dict(d.get("notes", {})),
        )

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_json(cls, s: str) -> Spec:
        return cls.from_dict(json.loads(s))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Spec) and self.to_dict() == other.to_dict()


def action_feature() -> Feature:
    """The differential-drive action: gpiozero ``Robot.value = (left, right)`` duty in [-1, 1]."""
    return vector(
        "action",
        ("left", "right"),
        ("duty", "duty"),
        (-1.0, -1.0),
        (1.0, 1.0),
        "wheel duty, as gpiozero Robot.value: +1 full forward, -1 full backward",
    )
