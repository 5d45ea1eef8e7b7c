"""The robot description: one YAML file per robot, loaded into typed, validated dataclasses.

The sim twin is *built* from a description, the Pi drivers are *configured* from it, and a policy
bundle records which description it was trained for by :func:`description_hash`.

Every field carries its unit, allowed range and a one-line doc in ``metadata``; the loader uses them
to produce errors that name the file, the field and the allowed range, and ``sim2pi describe``
prints them as documentation.

Example::

    from hardware.description import load_description
    desc = load_description("configs/robots/rover.yaml")
    desc.geometry.wheel_radius  # 0.033 (m)
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import yaml

from hardware.errors import DescriptionError

# Where the shipped descriptions live (in the source tree and inside the installed package).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "robots"


def f(
    default: Any,
    doc: str,
    *,
    unit: str = "",
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A documented dataclass field with a unit and an allowed range."""
    meta = {"doc": doc, "unit": unit, "lo": lo, "hi": hi, "choices": choices}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return field(default_factory=functools.partial(_copy, default), metadata=meta)
    return field(default=default, metadata=meta)


def _copy(x: Any) -> Any:
    import copy

    return copy.deepcopy(x)


@dataclass
class Pose:
    """A mount pose on the chassis, relative to the midpoint of the wheel axle on the floor."""

    x: float = f(0.0, "forward offset", unit="m", lo=-1.0, hi=1.0)
    y: float = f(0.0, "left offset", unit="m", lo=-1.0, hi=1.0)
    z: float = f(0.0, "height above the floor", unit="m", lo=0.0, hi=1.0)
    yaw: float = f(
        0.0, "heading relative to the chassis, counter-clockwise", unit="deg", lo=-180, hi=180
    )
    pitch: float = f(0.0, "downward tilt (positive looks at the floor)", unit="deg", lo=-90, hi=90)


@dataclass
class Geometry:
    """Chassis and wheel geometry (two driven wheels and a passive caster)."""

    wheel_radius: float = f(0.033, "driven wheel radius", unit="m", lo=0.005, hi=0.5)
    wheel_width: float = f(0.026, "driven wheel width", unit="m", lo=0.002, hi=0.2)
    track_width: float = f(
        0.14, "distance between the two wheel contact points", unit="m", lo=0.03, hi=1.5
    )
    body_length: float = f(0.20, "chassis length", unit="m", lo=0.03, hi=2.0)
    body_width: float = f(0.11, "chassis width (between the wheels)", unit="m", lo=0.02, hi=2.0)
    body_height: float = f(0.05, "chassis plate-to-top height", unit="m", lo=0.005, hi=1.0)
    axle_offset: float = f(
        0.04,
        "how far the wheel axle sits in front of the chassis centre",
        unit="m",
        lo=-1.0,
        hi=1.0,
    )
    caster_radius: float = f(
        0.012, "radius of the ball caster at the rear", unit="m", lo=0.002, hi=0.2
    )
    mass: float = f(0.75, "total mass including battery", unit="kg", lo=0.05, hi=50.0)


@dataclass
class MotorPins:
    """Pins of one motor. `motor` drivers (L298N, DRV8833) use forward/backward (+ optional enable);
    `phase_enable` drivers (DRV8835, TB6612 in PH/EN mode) use phase/enable."""

    forward: int | None = f(None, "BCM pin driving the motor forward (motor driver)", lo=0, hi=27)
    backward: int | None = f(None, "BCM pin driving the motor backward (motor driver)", lo=0, hi=27)
    enable: int | None = f(
        None, "BCM enable/PWM pin (optional for motor, required for phase_enable)", lo=0, hi=27
    )
    phase: int | None = f(None, "BCM direction pin (phase_enable driver)", lo=0, hi=27)


@dataclass
class Motors:
    """The H-bridge wiring and the DC gear-motor model."""

    driver: str = f("motor", "gpiozero class per wheel", choices=("motor", "phase_enable"))
    left: MotorPins = f(MotorPins(forward=17, backward=18), "left motor pins")
    right: MotorPins = f(MotorPins(forward=22, backward=23), "right motor pins")
    pwm_frequency: int = f(1000, "PWM frequency", unit="Hz", lo=50, hi=40000)
    invert_left: bool = f(False, "swap the left motor's direction (wired backwards)")
    invert_right: bool = f(False, "swap the right motor's direction (wired backwards)")
    max_wheel_speed: float = f(
        19.0, "no-load wheel speed at full duty", unit="rad/s", lo=0.5, hi=200.0
    )
    deadband: float = f(0.12, "duty below which the motor does not turn", lo=0.0, hi=0.9)
    time_constant: float = f(
        0.08, "first-order lag of wheel speed to duty", unit="s", lo=0.0, hi=2.0
    )
    stall_torque: float = f(0.08, "stall torque at the wheel", unit="N*m", lo=0.001, hi=20.0)


@dataclass
class Ultrasonic:
    """HC-SR04 ultrasonic range finder (echo through a voltage divider!)."""

    enabled: bool = f(True, "whether the sensor is fitted")
    trigger: int = f(4, "BCM trigger pin", lo=0, hi=27)
    echo: int = f(5, "BCM echo pin (5 V -> 3.3 V divider)", lo=0, hi=27)
    min_distance: float = f(0.02, "closest reliable reading", unit="m", lo=0.0, hi=1.0)
    max_distance: float = f(2.0, "farther than this reads as 'no echo'", unit="m", lo=0.1, hi=5.0)
    cone_angle: float = f(30.0, "full opening angle of the beam", unit="deg", lo=1.0, hi=90.0)
    rate: float = f(20.0, "measurement rate", unit="Hz", lo=1.0, hi=50.0)
    noise_std: float = f(0.005, "range noise standard deviation", unit="m", lo=0.0, hi=0.2)
    timeout: float = f(
        0.03, "longest wait for an echo before 'no echo'", unit="s", lo=0.005, hi=0.2
    )
    mount: Pose = f(Pose(x=0.10, z=0.06), "mount pose")


@dataclass
class Encoders:
    """Quadrature wheel encoders (optional). Without them odometry integrates commanded speed."""

    enabled: bool = f(True, "whether encoders are fitted")
    left_a: int = f(24, "BCM pin, left encoder channel A", lo=0, hi=27)
    left_b: int = f(25, "BCM pin, left encoder channel B", lo=0, hi=27)
    right_a: int = f(26, "BCM pin, right encoder channel A", lo=0, hi=27)
    right_b: int = f(16, "BCM pin, right encoder channel B", lo=0, hi=27)
    ticks_per_rev: int = f(
        360, "encoder steps per wheel revolution (after the gearbox)", lo=1, hi=100000
    )


@dataclass
class Camera:
    """The camera: a CSI camera through picamera2 or a USB webcam through OpenCV."""

    enabled: bool = f(True, "whether a camera is fitted")
    kind: str = f("picamera2", "driver", choices=("picamera2", "opencv"))
    device: int = f(0, "camera index (picamera2 camera number or /dev/videoN)", lo=0, hi=64)
    width: int = f(64, "frame width delivered to the policy", unit="px", lo=8, hi=4096)
    height: int = f(64, "frame height delivered to the policy", unit="px", lo=8, hi=4096)
    fps: int = f(30, "capture rate", unit="Hz", lo=1, hi=240)
    fov: float = f(
        62.2, "horizontal field of view (Pi Camera v2: 62.2)", unit="deg", lo=10.0, hi=179.0
    )
    near: float = f(0.02, "near clip of the rendered twin camera", unit="m", lo=0.001, hi=1.0)
    far: float = f(5.0, "far clip of the rendered twin camera", unit="m", lo=0.5, hi=100.0)
    mount: Pose = f(Pose(x=0.09, z=0.09, pitch=15.0), "mount pose")


@dataclass
class DigitalSensor:
    """A digital line / light sensor (e.g. TCRT5000 module) on one pin."""

    name: str = f("line", "feature name")
    kind: str = f("line", "what it senses", choices=("line", "light"))
    pin: int = f(6, "BCM pin", lo=0, hi=27)
    active_high: bool = f(True, "True if the module pulls the pin high when it senses")


@dataclass
class Control:
    """The control loop."""

    rate: float = f(20.0, "control rate of the loop and the policy", unit="Hz", lo=1.0, hi=500.0)


@dataclass
class Safety:
    """Safety limits enforced on every motor command (see DESIGN.md, 'Safety')."""

    max_duty: float = f(1.0, "largest |duty| ever sent to a motor", lo=0.05, hi=1.0)
    slew_rate: float = f(8.0, "largest duty change per second", unit="1/s", lo=0.1, hi=1000.0)
    deadman: float = f(
        0.3, "stop when no fresh command arrived for this long", unit="s", lo=0.02, hi=5.0
    )
    watchdog: float = f(0.2, "stop when the loop stalls for this long", unit="s", lo=0.02, hi=5.0)
    obstacle_stop: float = f(
        0.08, "refuse forward motion when the range is below this", unit="m", lo=0.0, hi=2.0
    )
    sensor_stale: float = f(
        0.25, "stop when the range reading is older than this", unit="s", lo=0.02, hi=5.0
    )
    camera_stale: float = f(
        0.25, "stop when the camera frame is older than this", unit="s", lo=0.02, hi=5.0
    )
    estop_pin: int | None = f(
        None, "BCM pin of a latching e-stop button (pulled up, pressed = low)", lo=0, hi=27
    )


@dataclass
class RobotDescription:
    """Everything sim2pi needs to know about one robot."""

    name: str = f("rover", "robot name")
    kind: str = f("diff_drive", "drive type", choices=("diff_drive",))
    geometry: Geometry = f(Geometry(), "chassis and wheels")
    motors: Motors = f(Motors(), "H-bridge wiring and motor model")
    ultrasonic: Ultrasonic = f(Ultrasonic(), "HC-SR04 range finder")
    encoders: Encoders = f(Encoders(), "wheel encoders")
    camera: Camera = f(Camera(), "camera")
    sensors: list[DigitalSensor] = f([], "optional digital line/light sensors")
    control: Control = f(Control(), "control loop")
    safety: Safety = f(Safety(), "safety limits")
    source: str | None = field(
        default=None, compare=False, metadata={"doc": "file it was loaded from"}
    )

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source", None)
        return d

    @property
    def hash(self) -> str:
        return description_hash(self)


T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, where: str, file: str | None) -> Any:
    """Convert a YAML value to the annotated type, or raise DescriptionError naming ``where``."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where, file)
    if origin is list:
        (item,) = get_args(tp)
        if not isinstance(value, list):
            raise DescriptionError(f"expected a list, got {value!r}", file=file, field=where)
        return [_convert(item, v, f"{where}[{i}]", file) for i, v in enumerate(value)]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise DescriptionError(
                f"expected a mapping of {tp.__name__} fields, got {value!r}", file=file, field=where
            )
        return _build(tp, value, where, file)
    if tp is bool:
        if not isinstance(value, bool):
            raise DescriptionError(f"expected true or false, got {value!r}", file=file, field=where)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DescriptionError(f"expected an integer, got {value!r}", file=file, field=where)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DescriptionError(f"expected a number, got {value!r}", file=file, field=where)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise DescriptionError(f"expected a string, got {value!r}", file=file, field=where)
        return value
    return value


def _build(cls: type[T], data: dict[str, Any], prefix: str, file: str | None) -> T:
    hints = typing.get_type_hints(cls)
    fields = {fl.name: fl for fl in dataclasses.fields(cls) if fl.name != "source"}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = (
                f" Did you mean '{close[0]}'?" if close else f" Known fields: {', '.join(fields)}."
            )
            raise DescriptionError(
                f"unknown field.{hint}", file=file, field=_join(prefix, str(key))
            )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, _join(prefix, name), file)
    obj = object.__new__(cls)
    # Fill defaults, then the given values, without running __post_init__ on nested parts twice.
    for fl in dataclasses.fields(cls):  # type: ignore[arg-type]
        if fl.name in kwargs:
            setattr(obj, fl.name, kwargs[fl.name])
        elif fl.default is not dataclasses.MISSING:
            setattr(obj, fl.name, fl.default)
        elif fl.default_factory is not dataclasses.MISSING:
            setattr(obj, fl.name, fl.default_factory())
    return obj


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _check_ranges(obj: Any, prefix: str, file: str | None) -> None:
    for fl in dataclasses.fields(obj):
        if fl.name == "source":
            continue
        value = getattr(obj, fl.name)
        where = _join(prefix, fl.name)
        meta = fl.metadata
        if dataclasses.is_dataclass(value):
            _check_ranges(value, where, file)
            continue
        if isinstance(value, list):
            for i, v in enumerate(value):
                if dataclasses.is_dataclass(v):
                    _check_ranges(v, f"{where}[{i}]", file)
            continue
        if value is None:
            continue
        choices = meta.get("choices")
        if choices and value not in choices:
            raise DescriptionError(
                f"{value!r} is not allowed; choose one of {list(choices)}", file=file, field=where
            )
        lo, hi = meta.get("lo"), meta.get("hi")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            unit = f" {meta.get('unit')}" if meta.get("unit") else ""
            if not math.isfinite(value):
                raise DescriptionError(f"{value!r} is not a finite number", file=file, field=where)
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise DescriptionError(
                    f"{value}{unit} is outside the allowed range [{lo}, {hi}]{unit}",
                    file=file,
                    field=where,
                )


def validate(desc: RobotDescription) -> None:
    """Check ranges and cross-field rules; raise DescriptionError naming the field."""
    file = desc.source
    _check_ranges(desc, "", file)
    m = desc.motors
    for side in ("left", "right"):
        pins: MotorPins = getattr(m, side)
        if m.driver == "motor" and (pins.forward is None or pins.backward is None):
            raise DescriptionError(
                "a 'motor' driver needs both 'forward' and 'backward' pins",
                file=file,
                field=f"motors.{side}",
            )
        if m.driver == "phase_enable" and (pins.phase is None or pins.enable is None):
            raise DescriptionError(
                "a 'phase_enable' driver needs 'phase' and 'enable' pins",
                file=file,
                field=f"motors.{side}",
            )
    used: dict[int, str] = {}

    def claim(pin: int | None, where: str) -> None:
        if pin is None:
            return
        if pin in used:
            raise DescriptionError(
                f"BCM pin {pin} is already used by '{used[pin]}'", file=file, field=where
            )
        used[pin] = where

    for side in ("left", "right"):
        pins = getattr(m, side)
        for name in ("forward", "backward", "enable", "phase"):
            claim(getattr(pins, name), f"motors.{side}.{name}")
    if desc.ultrasonic.enabled:
        claim(desc.ultrasonic.trigger, "ultrasonic.trigger")
        claim(desc.ultrasonic.echo, "ultrasonic.echo")
        if desc.ultrasonic.min_distance >= desc.ultrasonic.max_distance:
            raise DescriptionError(
                "must be smaller than ultrasonic.max_distance",
                file=file,
                field="ultrasonic.min_distance",
            )
    if desc.encoders.enabled:
        for name in ("left_a", "left_b", "right_a", "right_b"):
            claim(getattr(desc.encoders, name), f"encoders.{name}")
    for i, s in enumerate(desc.sensors):
        claim(s.pin, f"sensors[{i}].pin")
    claim(desc.safety.estop_pin, "safety.estop_pin")
    g = desc.geometry
    if g.body_width >= g.track_width:
        raise DescriptionError(
            f"{g.body_width} m must be smaller than geometry.track_width "
            f"({g.track_width} m): the wheels sit outside the chassis",
            file=file,
            field="geometry.body_width",
        )
    if desc.camera.near >= desc.camera.far:
        raise DescriptionError("must be smaller than camera.far", file=file, field="camera.near")


def from_dict(data: dict[str, Any], *, source: str | None = None) -> RobotDescription:
    """Build and validate a description from a plain mapping (e.g. parsed YAML)."""
    if not isinstance(data, dict):
        raise DescriptionError(
            f"the top level must be a mapping of fields, got {type(data).__name__}", file=source
        )
    desc = _build(RobotDescription, data, "", source)
    desc.source = source
    validate(desc)
    return desc


def resolve_description_path(name_or_path: str | Path) -> Path:
    """``rover`` → the shipped ``configs/robots/rover.yaml``; anything else is a path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if shipped.exists():
        return shipped
    known = ", ".join(sorted(q.stem for q in CONFIG_DIR.glob("*.yaml")))
    raise DescriptionError(
        f"no such robot description; give a YAML path or one of: {known}", file=str(name_or_path)
    )


def load_description(path: str | Path = "rover") -> RobotDescription:
    """Load a robot description YAML (or a shipped one by name, e.g. ``"rover"``)."""
    p = resolve_description_path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise DescriptionError(f"cannot read the file ({e.strerror})", file=str(p)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise DescriptionError(
            f"not valid YAML{line}: {getattr(e, 'problem', e)}", file=str(p)
        ) from None
    if data is None:
        data = {}
    return from_dict(data, source=str(p))


# Parts of a description a trained policy does not depend on: changing them needs no retraining.
HASH_EXCLUDES = ("name", "safety")


def description_hash(desc: RobotDescription) -> str:
    """A canonical hash of what a policy depends on: geometry, motors, sensors, camera, control.

    The same physical robot always hashes the same: key order, YAML formatting, comments, the file
    path, the robot's name and its safety limits (``HASH_EXCLUDES``) do not matter.
    """
    d = desc.to_dict()
    for k in HASH_EXCLUDES:
        d.pop(k, None)
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=float)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def field_docs(cls: type = RobotDescription, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(field, unit, allowed, doc) rows for documentation and ``sim2pi describe``."""
    rows = []
    hints = typing.get_type_hints(cls)
    for fl in dataclasses.fields(cls):
        if fl.name == "source":
            continue
        tp = hints[fl.name]
        name = _join(prefix, fl.name)
        meta = fl.metadata
        args = [a for a in get_args(tp) if a is not type(None)]
        inner = args[0] if get_origin(tp) in (typing.Union, types.UnionType) else tp
        if get_origin(inner) is list:
            inner = get_args(inner)[0]
            name += "[]"
        if meta.get("choices"):
            allowed = " | ".join(map(str, meta["choices"]))
        elif meta.get("lo") is not None:
            allowed = f"[{meta['lo']}, {meta['hi']}]"
        else:
            allowed = _type_name(inner)
        rows.append((name, meta.get("unit", ""), allowed, meta.get("doc", "")))
        if isinstance(inner, type) and dataclasses.is_dataclass(inner):
            rows.extend(field_docs(inner, name))
    return rows
