"""The web teleop wire protocol: strict validation of every message a browser may send.

Client → server messages are JSON text objects of at most :data:`MAX_MESSAGE_BYTES` bytes, each with
a ``type`` and exactly the fields its schema names:

============ =============================================== =========================================
type         fields                                          meaning
============ =============================================== =========================================
drive        left, right: number in [-1, 1]; seq: int ≥ 0   wheel duty (gpiozero ``Robot.value``)
visibility   visible: bool                                   the page was hidden/shown (hidden → stop)
estop        (none)                                          latch the software e-stop
reset        (none)                                          clear the e-stop (explicit reset)
record       op: "start" | "stop" | "discard"                episode recording control
mode         mode: "teleop" | "policy" | "shared"            who drives (shared = policy + takeover)
episode      (none)                                          end this episode (saved if recording), next
success      (none)                                          end this episode as a success (operator)
ping         id: int ≥ 0                                     round-trip probe, answered by ``pong``
============ =============================================== =========================================

Rules: numbers must be finite and in range (``NaN``, ``Infinity`` and ``1e999`` are refused before
any range check); booleans are not numbers and numbers are not booleans; unknown or missing fields,
duplicate keys, non-object payloads and binary frames are refused. A refused message never moves the
motors: the web source turns it into a stop.

Server → client: binary frames are JPEG images of the live view; text frames are JSON objects with a
``type`` of ``hello``, ``telemetry``, ``pong`` or ``error``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from hardware.errors import Sim2PiError

#: Largest accepted client message (UTF-8 bytes). Anything bigger is refused unread.
MAX_MESSAGE_BYTES = 4096

#: JSON-safe integer bound (2**53): beyond it JavaScript numbers lose precision.
_MAX_INT = 2**53

MODES = ("teleop", "policy", "shared")
RECORD_OPS = ("start", "stop", "discard")


class ProtocolError(Sim2PiError, ValueError):
    """A client message was refused. The message says why (it is safe to echo to the client)."""


@dataclass(frozen=True)
class _Num:
    lo: float
    hi: float


@dataclass(frozen=True)
class _Int:
    lo: int
    hi: int


@dataclass(frozen=True)
class _Bool:
    pass


@dataclass(frozen=True)
class _Choice:
    choices: tuple[str, ...]


_Field = _Num | _Int | _Bool | _Choice

#: The strict schema: message type → {field: kind}. Every field is required; no others are allowed.
SCHEMA: dict[str, dict[str, _Field]] = {
    "drive": {"left": _Num(-1.0, 1.0), "right": _Num(-1.0, 1.0), "seq": _Int(0, _MAX_INT)},
    "visibility": {"visible": _Bool()},
    "estop": {},
    "reset": {},
    "record": {"op": _Choice(RECORD_OPS)},
    "mode": {"mode": _Choice(MODES)},
    "episode": {},
    "success": {},
    "ping": {"id": _Int(0, _MAX_INT)},
}


@dataclass(frozen=True)
class Message:
    """A validated client message: its ``type`` and its fields (already type- and range-checked)."""

    type: str
    fields: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


def _refuse_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not a number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ProtocolError(f"duplicate field {k!r}")
        out[k] = v
    return out


def _check_field(mtype: str, name: str, kind: _Field, value: Any) -> Any:
    where = f"{mtype}.{name}"
    if isinstance(kind, _Bool):
        if not isinstance(value, bool):
            raise ProtocolError(f"{where}: expected true or false")
        return value
    if isinstance(kind, _Choice):
        if not isinstance(value, str) or value not in kind.choices:
            raise ProtocolError(f"{where}: expected one of {list(kind.choices)}")
        return value
    # Numbers: bool is a subclass of int in Python, so exclude it explicitly.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"{where}: expected a number")
    if isinstance(kind, _Int):
        if not isinstance(value, int):
            raise ProtocolError(f"{where}: expected an integer")
        if not kind.lo <= value <= kind.hi:
            raise ProtocolError(f"{where}: out of range [{kind.lo}, {kind.hi}]")
        return value
    # Finite check before the range check (a NaN compares False with everything).
    x = float(value)
    if not math.isfinite(x):
        raise ProtocolError(f"{where}: not a finite number")
    if not kind.lo <= x <= kind.hi:
        raise ProtocolError(f"{where}: out of range [{kind.lo}, {kind.hi}]")
    return x


def parse_message(raw: str | bytes | bytearray | None) -> Message:
    """Validate one client message and return it, or raise :class:`ProtocolError`.

    ``raw`` is the websocket text frame (``bytes`` are decoded as strict UTF-8: binary frames are
    refused by the server before they get here, but HTTP bodies arrive as bytes).
    """
    if raw is None:
        raise ProtocolError("empty message")
    if isinstance(raw, (bytes, bytearray)):
        if len(raw) > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"message larger than {MAX_MESSAGE_BYTES} bytes")
        try:
            text = bytes(raw).decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            raise ProtocolError("message is not UTF-8") from None
    elif isinstance(raw, str):
        text = raw
        # Cheap upper bound first (≤ 4 bytes per code point), exact count only when needed.
        if len(text) > MAX_MESSAGE_BYTES or (
            len(text) * 4 > MAX_MESSAGE_BYTES
            and len(text.encode("utf-8", errors="surrogatepass")) > MAX_MESSAGE_BYTES
        ):
            raise ProtocolError(f"message larger than {MAX_MESSAGE_BYTES} bytes")
    else:
        raise ProtocolError("message must be text")
    try:
        data = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_no_duplicates)
    except ProtocolError:
        raise
    except (ValueError, RecursionError, TypeError):
        raise ProtocolError("not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("message must be a JSON object")
    mtype = data.get("type")
    if not isinstance(mtype, str) or mtype not in SCHEMA:
        raise ProtocolError(f"unknown message type; expected one of {sorted(SCHEMA)}")
    schema = SCHEMA[mtype]
    extra = set(data) - set(schema) - {"type"}
    if extra:
        raise ProtocolError(f"{mtype}: unknown field(s) {sorted(extra)[:5]}")
    missing = set(schema) - set(data)
    if missing:
        raise ProtocolError(f"{mtype}: missing field(s) {sorted(missing)}")
    fields = {name: _check_field(mtype, name, kind, data[name]) for name, kind in schema.items()}
    return Message(mtype, fields)


def encode(obj: dict[str, Any]) -> str:
    """Serialize a server → client message (strict JSON: non-finite numbers become ``null``)."""
    return json.dumps(_finite(obj), separators=(",", ":"), allow_nan=False)


def _finite(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x
