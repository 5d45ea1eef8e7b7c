"""Robot description: loading, validation errors that name file/field/range, canonical hash."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hardware.description import (
    CONFIG_DIR,
    RobotDescription,
    description_hash,
    field_docs,
    from_dict,
    load_description,
)
from hardware.errors import DescriptionError, Sim2PiError

ROVER = CONFIG_DIR / "rover.yaml"


def write(tmp_path: Path, data: object, name: str = "bot.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def rover_dict() -> dict:
    return yaml.safe_load(ROVER.read_text())


def test_shipped_rover_loads_with_realistic_numbers() -> None:
    d = load_description("rover")
    assert d.source and d.source.endswith("rover.yaml")
    # 20 Hz control, top speed of a small gear-motor rover (0.3-1.5 m/s), camera fitted
    assert d.control.rate == 20.0
    assert 0.3 < d.motors.max_wheel_speed * d.geometry.wheel_radius < 1.5
    assert d.camera.enabled and d.ultrasonic.enabled
    assert d == load_description(ROVER)


def test_every_field_of_the_shipped_file_is_documented() -> None:
    text = ROVER.read_text()
    for name, _unit, _allowed, doc in field_docs():
        leaf = name.split(".")[-1].removesuffix("[]")
        assert doc, f"field {name} has no doc"
        assert f"{leaf}:" in text, f"field {name} missing from rover.yaml"
    # every non-comment key line carries a comment
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):  # a key line
            assert "#" in line, f"undocumented line: {line!r}"


@pytest.mark.parametrize(
    ("patch", "field", "needle"),
    [
        ({"geometry": {"wheel_radius": -0.1}}, "geometry.wheel_radius", "[0.005, 0.5]"),
        ({"geometry": {"wheel_radius": "big"}}, "geometry.wheel_radius", "expected a number"),
        (
            {"geometry": {"wheel_radus": 0.03}},
            "geometry.wheel_radus",
            "Did you mean 'wheel_radius'",
        ),
        ({"motors": {"driver": "servo"}}, "motors.driver", "motor"),
        ({"control": {"rate": 0}}, "control.rate", "outside the allowed range"),
        ({"ultrasonic": {"echo": 17}}, "ultrasonic.echo", "already used by 'motors.left.forward'"),
        ({"camera": {"enabled": "yes"}}, "camera.enabled", "true or false"),
        ({"motors": {"driver": "phase_enable"}}, "motors.left", "phase"),
        ({"geometry": {"body_width": 0.3}}, "geometry.body_width", "track_width"),
        ({"safety": {"deadman": float("nan")}}, "safety.deadman", "finite"),
        ({"encoders": {"ticks_per_rev": 1.5}}, "encoders.ticks_per_rev", "integer"),
    ],
)
def test_bad_field_error_names_file_field_and_range(
    tmp_path: Path, patch: dict, field: str, needle: str
) -> None:
    data = rover_dict()
    for section, values in patch.items():
        if isinstance(data.get(section), dict):
            data[section].update(values)
        else:
            data[section] = values
    p = write(tmp_path, data)
    with pytest.raises(DescriptionError) as ei:
        load_description(p)
    msg = str(ei.value)
    assert str(p) in msg
    assert f"field '{field}'" in msg
    assert needle in msg
    assert ei.value.field == field
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, Sim2PiError)


def test_invalid_yaml_and_missing_file_are_description_errors(tmp_path: Path) -> None:
    p = write(tmp_path, "geometry: [1, 2\n")
    with pytest.raises(DescriptionError, match="not valid YAML at line"):
        load_description(p)
    with pytest.raises(DescriptionError, match="cannot read"):
        load_description(tmp_path / "missing.yaml")
    with pytest.raises(DescriptionError, match="top level must be a mapping"):
        load_description(write(tmp_path, "- 1\n- 2\n", "list.yaml"))
    with pytest.raises(DescriptionError, match="rover"):
        load_description("no_such_robot")


def test_partial_file_takes_defaults(tmp_path: Path) -> None:
    d = load_description(write(tmp_path, {"name": "mini", "geometry": {"wheel_radius": 0.02}}))
    assert d.geometry.wheel_radius == 0.02
    assert d.geometry.track_width == RobotDescription().geometry.track_width


def test_hash_is_canonical(tmp_path: Path) -> None:
    data = rover_dict()
    a = load_description(write(tmp_path, data, "a.yaml"))
    # reordered keys, no comments, another path: same hash
    reordered = dict(reversed(list(data.items())))
    b = load_description(write(tmp_path, reordered, "b.yaml"))
    assert description_hash(a) == description_hash(b) == a.hash
    # integer vs float spelling of the same number: same hash
    data2 = rover_dict()
    data2["control"]["rate"] = 20
    c = load_description(write(tmp_path, data2, "c.yaml"))
    assert c.hash == a.hash
    # any physical change: another hash
    data3 = rover_dict()
    data3["geometry"]["wheel_radius"] = 0.034
    assert load_description(write(tmp_path, data3, "d.yaml")).hash != a.hash
    data4 = rover_dict()
    data4["camera"]["fov"] = 70.0
    assert load_description(write(tmp_path, data4, "e.yaml")).hash != a.hash
    # safety limits and the name do not change what a policy was trained on
    data5 = rover_dict()
    data5["safety"]["deadman"] = 0.5
    data5["name"] = "my_rover"
    assert load_description(write(tmp_path, data5, "f.yaml")).hash == a.hash


def test_from_dict_round_trip() -> None:
    d = load_description("rover")
    assert from_dict(d.to_dict()) == d
