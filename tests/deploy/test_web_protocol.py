"""The web protocol validator and the web command source (no server, no browser)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy.web.protocol import MAX_MESSAGE_BYTES, SCHEMA, ProtocolError, parse_message
from deploy.web.source import WebSource


def test_valid_messages_parse() -> None:
    m = parse_message('{"type":"drive","left":0.5,"right":-1,"seq":3}')
    assert m.type == "drive" and m["left"] == 0.5 and m["right"] == -1.0 and m["seq"] == 3
    assert parse_message('{"type":"record","op":"discard"}')["op"] == "discard"
    assert parse_message('{"type":"mode","mode":"shared"}')["mode"] == "shared"
    assert parse_message(b'{"type":"estop"}').type == "estop"
    assert parse_message('{"type":"visibility","visible":false}')["visible"] is False


@pytest.mark.parametrize(
    "raw",
    [
        '{"type":"drive","left":NaN,"right":0,"seq":1}',
        '{"type":"drive","left":Infinity,"right":0,"seq":1}',
        '{"type":"drive","left":-Infinity,"right":0,"seq":1}',
        '{"type":"drive","left":1e999,"right":0,"seq":1}',
        '{"type":"drive","left":1.0000001,"right":0,"seq":1}',
        '{"type":"drive","left":true,"right":0,"seq":1}',  # booleans are not numbers
        '{"type":"drive","left":"0.5","right":0,"seq":1}',
        '{"type":"drive","left":0,"right":0,"seq":1.5}',
        '{"type":"drive","left":0,"right":0,"seq":-1}',
        '{"type":"drive","left":0,"right":0}',  # missing field
        '{"type":"drive","left":0,"right":0,"seq":1,"turbo":1}',  # unknown field
        '{"type":"drive","left":0,"left":1,"right":0,"seq":1}',  # duplicate key
        '{"type":"visibility","visible":0}',  # numbers are not booleans
        '{"type":"record","op":"START"}',
        '{"type":"mode","mode":"autopilot"}',
        '{"type":"estop","why":"x"}',
        '{"type":"nope"}',
        '{"left":0,"right":0,"seq":1}',
        "[1,2]",
        "null",
        '"drive"',
        "{",
        "",
        "[" * 5000,
        '{"type":"drive","left":' + "9" * 5000 + ',"right":0,"seq":1}',
        '{"type":"ping","id":' + str(2**60) + "}",
    ],
)
def test_malformed_messages_are_refused(raw: str) -> None:
    with pytest.raises(ProtocolError):
        parse_message(raw)


def test_size_limit_counts_bytes() -> None:
    pad = "é" * (MAX_MESSAGE_BYTES // 2)  # ~4 KiB of characters, > 4 KiB of UTF-8
    with pytest.raises(ProtocolError, match="larger"):
        parse_message('{"type":"estop","x":"' + pad + '"}')
    with pytest.raises(ProtocolError, match="larger"):
        parse_message(b"{" + b" " * MAX_MESSAGE_BYTES + b"}")
    with pytest.raises(ProtocolError):
        parse_message(b"\xff\xfe")
    with pytest.raises(ProtocolError):
        parse_message(None)


# --- hypothesis: malformed messages never produce a motor command other than stop ------------

_junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_bad_number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not (-1 <= x <= 1)),
    st.booleans(),
    st.text(max_size=8),
    st.none(),
    st.lists(st.floats(-1, 1), max_size=2),
    st.integers().filter(lambda x: abs(x) > 1),
)


@st.composite
def malformed_drive(draw: st.DrawFn) -> str:
    """A drive message broken in one or more ways (bad value, extra/missing field, raw junk)."""
    msg: dict = {"type": "drive", "left": 0.25, "right": 0.25, "seq": 1}
    how = draw(st.sampled_from(["left", "right", "both", "extra", "missing", "seq", "type"]))
    if how in ("left", "both"):
        msg["left"] = draw(_bad_number)
    if how in ("right", "both"):
        msg["right"] = draw(_bad_number)
    if how == "extra":
        msg[draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in msg))] = draw(_junk)
    if how == "missing":
        del msg[draw(st.sampled_from(["left", "right", "seq"]))]
    if how == "seq":
        msg["seq"] = draw(
            st.one_of(
                st.floats(),
                st.booleans(),
                st.integers(max_value=-1),
                st.integers(min_value=2**53 + 1),
                st.text(max_size=4),
            )
        )
    if how == "type":
        msg["type"] = draw(
            st.one_of(
                st.text(max_size=10).filter(lambda t: t not in SCHEMA),
                st.integers(),
                st.none(),
                st.booleans(),
            )
        )
    text = json.dumps(msg, allow_nan=True)
    # Python writes 1e999 as Infinity; sometimes spell it the JavaScript-hostile way instead.
    if draw(st.booleans()):
        text = text.replace("Infinity", "1e999")
    return text


_any_message = st.one_of(
    malformed_drive(),
    _junk.map(lambda v: json.dumps(v, allow_nan=True)),
    st.text(max_size=200),
    st.binary(max_size=200),
    st.integers(min_value=MAX_MESSAGE_BYTES + 1, max_value=3 * MAX_MESSAGE_BYTES).map(
        lambda n: '{"type":"estop","pad":"' + "x" * n + '"}'
    ),
)


def _feed(src: WebSource, cid: int, raw: str | bytes) -> None:
    """What the websocket handler does with one message."""
    try:
        m = parse_message(raw)
    except ProtocolError:
        src.refuse(cid)
        return
    if m.type == "drive":
        src.drive(cid, m["left"], m["right"], m["seq"])


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=_any_message)
def test_hypothesis_malformed_messages_only_ever_stop(raw: str | bytes) -> None:
    src = WebSource(deadman=10.0)
    cid = src.connect()
    src.drive(cid, 0.7, 0.7, 0)  # the robot is moving
    _feed(src, cid, raw)
    cmd = src.command(None)
    assert cmd is not None
    a = np.asarray(cmd.action, dtype=np.float64)
    assert a.shape == (2,) and np.all(np.isfinite(a))
    try:
        m = parse_message(raw)
    except ProtocolError:
        assert np.array_equal(a, [0.0, 0.0]), f"refused {raw!r} but action is {a}"
        return
    # The rare valid message: every field passed the schema, so the action is a legal duty.
    assert m.type in SCHEMA
    assert np.all(np.abs(a) <= 1.0)
    for v in m.fields.values():
        assert not (isinstance(v, float) and not math.isfinite(v))


# --- the source's deadman behaviour (injected clock) ------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_source_deadman_close_hide_and_takeover() -> None:
    clock = _Clock()
    src = WebSource(deadman=0.3, clock=clock)
    assert src.command(None).action.tolist() == [0.0, 0.0]  # nobody connected → stop
    a = src.connect()
    assert src.drive(a, 0.4, 0.2, 1)
    cmd = src.command(None)
    assert cmd.action.tolist() == [0.4, 0.2] and cmd.stamp == 100.0 and cmd.source == "web"
    clock.t += 0.31
    assert src.command(None) is None  # stale: the safety layer's deadman stops the motors
    src.drive(a, 0.4, 0.2, 2)
    src.set_visible(a, False)
    assert src.command(None).action.tolist() == [0.0, 0.0]
    assert not src.drive(a, 0.4, 0.2, 3)  # hidden pages cannot drive
    src.set_visible(a, True)
    assert src.drive(a, 0.4, 0.2, 4)
    b = src.connect()  # a newer page takes control; the old one can no longer drive
    assert src.command(None).action.tolist() == [0.0, 0.0]
    assert not src.drive(a, 0.9, 0.9, 5)
    assert src.drive(b, -0.1, 0.1, 1)
    assert src.command(None).action.tolist() == [-0.1, 0.1]
    src.disconnect(b)
    assert src.command(None).action.tolist() == [0.0, 0.0]


def test_source_events_and_estop_hook() -> None:
    hits: list[str] = []
    src = WebSource(on_estop=lambda: hits.append("estop"))
    cid = src.connect()
    src.drive(cid, 0.5, 0.5, 1)
    src.post("record", "start")
    src.post("estop")
    assert hits == ["estop"]
    assert src.command(None).action.tolist() == [0.0, 0.0]
    assert src.events() == ["estop"]
    assert [(e.kind, e.arg) for e in src.controls()] == [("record", "start"), ("estop", None)]
    src.post("reset")
    assert src.events() == ["reset_estop"]
    assert src.events() == [] and [e.kind for e in src.controls()] == ["reset"]
