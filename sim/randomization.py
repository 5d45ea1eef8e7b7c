"""Domain randomization of the twin's dynamics and sensors.

:class:`DynamicsRandomization` holds *ranges*; :meth:`DynamicsRandomization.sample` draws one
:class:`DynamicsSample` of concrete values, which :class:`sim.twin.SimRobot` applies at every reset.
Randomization is off by default (``enabled: false``): an un-randomized twin uses the robot
description's nominal values, and :meth:`DynamicsSample.nominal` gives exactly those.

Example::

    rand = DynamicsRandomization.from_yaml("configs/dynamics/default.yaml")
    robot = SimRobot(desc, randomization=rand, seed=0)
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hardware.errors import Sim2PiError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "dynamics"

Range = tuple[float, float]


class RandomizationError(Sim2PiError, ValueError):
    """A randomization config is invalid. The message names the field and the fix."""


@dataclass
class DynamicsRandomization:
    """Ranges ``(low, high)`` sampled uniformly per reset when ``enabled``.

    Multiplicative ranges (``*_scale``, ``motor_gain``) are factors on the description's nominal
    values; the others are absolute.
    """

    enabled: bool = field(default=False, metadata={"doc": "sample at every reset (off by default)"})
    motor_gain: Range = field(
        default=(0.85, 1.15), metadata={"doc": "factor on max_wheel_speed, drawn per wheel"}
    )
    deadband: Range = field(
        default=(0.08, 0.16), metadata={"doc": "duty below which a motor does not turn, per wheel"}
    )
    time_constant: Range = field(default=(0.05, 0.12), metadata={"doc": "first-order motor lag, s"})
    latency_ticks: tuple[int, int] = field(
        default=(0, 1), metadata={"doc": "action latency in control ticks (integers, inclusive)"}
    )
    wheel_friction: Range = field(
        default=(0.7, 1.2), metadata={"doc": "lateral friction coefficient of the driven wheels"}
    )
    floor_friction: Range = field(
        default=(0.8, 1.1),
        metadata={"doc": "friction factor of the floor (multiplies every contact)"},
    )
    mass_scale: Range = field(default=(0.85, 1.2), metadata={"doc": "factor on the chassis mass"})
    object_mass_scale: Range = field(
        default=(0.7, 1.5), metadata={"doc": "factor on movable objects' mass (the push box)"}
    )
    range_noise_std: Range = field(
        default=(0.003, 0.015), metadata={"doc": "ultrasonic noise standard deviation, m"}
    )
    range_dropout: Range = field(
        default=(0.0, 0.05), metadata={"doc": "probability that a range reading reads as 'no echo'"}
    )
    marker_noise_std: Range = field(
        default=(0.005, 0.02), metadata={"doc": "marker detector position noise, m"}
    )
    marker_dropout: Range = field(
        default=(0.0, 0.1), metadata={"doc": "probability that a visible marker is missed"}
    )
    camera_jitter_pos: Range = field(
        default=(0.0, 0.01), metadata={"doc": "camera mount position error (per axis), m"}
    )
    camera_jitter_deg: Range = field(
        default=(0.0, 3.0), metadata={"doc": "camera mount angle error (yaw and pitch), deg"}
    )

    def __post_init__(self) -> None:
        for fl in dataclasses.fields(self):
            if fl.name == "enabled":
                if not isinstance(self.enabled, bool):
                    raise RandomizationError(
                        f"field 'enabled': expected true or false, got {self.enabled!r}"
                    )
                continue
            value = getattr(self, fl.name)
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                raise RandomizationError(
                    f"field '{fl.name}': expected a [low, high] pair, got {value!r}"
                ) from None
            if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
                raise RandomizationError(
                    f"field '{fl.name}': need finite low <= high, got [{lo}, {hi}]"
                )
            if lo < 0:
                raise RandomizationError(f"field '{fl.name}': values must be >= 0, got {lo}")
            if fl.name in ("range_dropout", "marker_dropout") and hi > 1:
                raise RandomizationError(f"field '{fl.name}': a probability must be <= 1, got {hi}")
            if fl.name == "latency_ticks":
                if lo != int(lo) or hi != int(hi):
                    raise RandomizationError(
                        f"field 'latency_ticks': expected whole ticks, got {value!r}"
                    )
                setattr(self, fl.name, (int(lo), int(hi)))
            else:
                setattr(self, fl.name, (lo, hi))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DynamicsRandomization:
        """Build from a mapping; unknown keys are refused with a suggestion."""
        if not isinstance(data, dict):
            raise RandomizationError(f"expected a mapping of fields, got {type(data).__name__}")
        names = [fl.name for fl in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else f" Known: {', '.join(names)}."
                raise RandomizationError(f"unknown field '{key}'.{hint}")
        kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        return cls(**kw)

    @classmethod
    def from_yaml(cls, path: str | Path = "default") -> DynamicsRandomization:
        """Load a YAML file, or a shipped config by name (``"default"``)."""
        p = Path(path)
        if p.suffix not in (".yaml", ".yml") and not p.exists():
            p = CONFIG_DIR / f"{path}.yaml"
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except OSError as e:
            raise RandomizationError(
                f"{p}: cannot read the file ({e.strerror}); give a YAML path "
                f"or a name under {CONFIG_DIR}"
            ) from None
        try:
            return cls.from_dict(data)
        except RandomizationError as e:
            raise RandomizationError(f"{p}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain types (lists for ranges), as written by :meth:`from_yaml`'s inverse."""
        out: dict[str, Any] = {}
        for fl in dataclasses.fields(self):
            v = getattr(self, fl.name)
            out[fl.name] = list(v) if isinstance(v, tuple) else v
        return out

    def sample(self, rng: np.random.Generator, nominal: DynamicsSample) -> DynamicsSample:
        """One draw; returns ``nominal`` unchanged when not enabled."""
        if not self.enabled:
            return nominal

        def u(r: Range, n: int | None = None) -> Any:
            return rng.uniform(r[0], r[1], size=n)

        gain = u(self.motor_gain, 2)
        return DynamicsSample(
            max_wheel_speed=tuple(float(g * nominal.max_wheel_speed[0]) for g in gain),  # type: ignore[arg-type]
            deadband=tuple(float(v) for v in u(self.deadband, 2)),  # type: ignore[arg-type]
            time_constant=float(u(self.time_constant)),
            latency_ticks=int(rng.integers(self.latency_ticks[0], self.latency_ticks[1] + 1)),
            wheel_friction=float(u(self.wheel_friction)),
            floor_friction=float(u(self.floor_friction)),
            mass_scale=float(u(self.mass_scale)),
            object_mass_scale=float(u(self.object_mass_scale)),
            range_noise_std=float(u(self.range_noise_std)),
            range_dropout=float(u(self.range_dropout)),
            marker_noise_std=float(u(self.marker_noise_std)),
            marker_dropout=float(u(self.marker_dropout)),
            camera_offset=tuple(
                float(v)
                for v in u(self.camera_jitter_pos, 3)  # type: ignore[arg-type]
                * rng.choice((-1.0, 1.0), 3)
            ),
            camera_angle_offset=tuple(
                float(v)
                for v in u(self.camera_jitter_deg, 2)  # type: ignore[arg-type]
                * rng.choice((-1.0, 1.0), 2)
            ),
        )


@dataclass(frozen=True)
class DynamicsSample:
    """Concrete dynamics and sensor parameters of one episode."""

    max_wheel_speed: tuple[float, float]  # rad/s at full duty, left/right
    deadband: tuple[float, float]  # duty
    time_constant: float  # s
    latency_ticks: int = 0
    wheel_friction: float = 1.0
    floor_friction: float = 1.0
    mass_scale: float = 1.0
    object_mass_scale: float = 1.0
    range_noise_std: float = 0.005  # m
    range_dropout: float = 0.0
    marker_noise_std: float = 0.01  # m
    marker_dropout: float = 0.0
    camera_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # m, robot frame
    camera_angle_offset: tuple[float, float] = (0.0, 0.0)  # deg (yaw, pitch)

    @classmethod
    def nominal(cls, desc: Any) -> DynamicsSample:
        """The description's own values (what an un-randomized twin uses)."""
        m = desc.motors
        return cls(
            max_wheel_speed=(m.max_wheel_speed, m.max_wheel_speed),
            deadband=(m.deadband, m.deadband),
            time_constant=m.time_constant,
            range_noise_std=desc.ultrasonic.noise_std,
        )


__all__ = ["DynamicsRandomization", "DynamicsSample", "RandomizationError"]
