"""The teleop web app (Starlette): the page, its websocket, and a few authenticated HTTP routes.

Security model (DESIGN.md, "Safety"):

- Served on 127.0.0.1 unless told otherwise; any other bind address requires a token of at least 32
  URL-safe characters (:func:`resolve_token` generates one with :mod:`secrets` when none is given).
- The token is checked in constant time (:func:`hmac.compare_digest`) on the websocket and on every
  route except the static page itself. Browsers pass it as a websocket subprotocol
  (``sim2pi.token.<token>``; the page reads it from the URL fragment, which never reaches a server
  log or a ``Referer``); other clients may send ``Authorization: Bearer <token>``.
- ``Origin``, when present (browsers always send it on websockets and POSTs), must be this server's
  own scheme://host:port. On a loopback bind the ``Host`` header must be a loopback name too, which
  defeats DNS rebinding when no token is set.
- Client messages over :data:`~deploy.web.protocol.MAX_MESSAGE_BYTES` are refused (uvicorn's
  ``ws_max_size`` closes the socket; HTTP bodies are read up to the limit), every message is
  validated by :func:`~deploy.web.protocol.parse_message`, each connection has a token-bucket rate
  limit, and a connection that keeps sending refused messages is closed.
- ``debug=False``; errors reach clients as short generic bodies, never tracebacks.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from deploy.web.protocol import (
    MAX_MESSAGE_BYTES,
    SCHEMA,
    Message,
    ProtocolError,
    encode,
    parse_message,
)
from deploy.web.source import LiveFeed, WebSource
from hardware.errors import Sim2PiError

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
SUBPROTOCOL = "sim2pi.v1"
TOKEN_PREFIX = "sim2pi.token."
MIN_TOKEN_CHARS = 32
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
# Event message types the HTTP routes accept (drive only over the websocket: the deadman is per
# connection).
HTTP_EVENTS = ("estop", "reset", "record", "mode", "episode", "success")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class WebSecurityError(Sim2PiError, ValueError):
    """The web server's security settings are unsafe (e.g. a public bind without a token)."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    h = host.strip("[]").lower()
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token: str | None) -> tuple[str | None, bool]:
    """The token to use and whether it was generated.

    Loopback binds may run without a token; any other bind gets a fresh ``secrets`` token when none
    is given. A given token must have ≥ 32 URL-safe characters (``A-Z a-z 0-9 - _``).
    """
    if token is not None:
        if len(token) < MIN_TOKEN_CHARS or not _TOKEN_RE.match(token):
            raise WebSecurityError(
                f"the web token must have at least {MIN_TOKEN_CHARS} characters from A-Z a-z 0-9 - _; "
                "leave --token out to have one generated"
            )
        return token, False
    if is_loopback(host):
        return None, False
    return secrets.token_urlsafe(32), True


@dataclass
class WebConfig:
    """Settings of the web app."""

    host: str = "127.0.0.1"  # address the server binds (decides whether a token is required)
    token: str | None = None  # None = no token (loopback only)
    rate: float = 80.0  # messages per second per connection (token-bucket refill)
    burst: float = 160.0  # token-bucket size
    max_refused: int = 50  # refused messages before the connection is closed
    telemetry_hz: float = 10.0  # telemetry pushes per second

    def __post_init__(self) -> None:
        if self.token is None and not is_loopback(self.host):
            raise WebSecurityError(
                f"binding to {self.host} exposes the robot; a token is required (see resolve_token)"
            )
        if self.token is not None:
            resolve_token(self.host, self.token)  # validates length and characters


class TokenBucket:
    """A per-connection rate limit: ``rate`` tokens per second, at most ``burst`` banked."""

    def __init__(self, rate: float, burst: float, clock: Any = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens = burst
        self._t = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
        self._t = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def _header(scope: Mapping[str, Any], name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k == name:
            return v.decode("latin-1")
    return None


def _netloc(scheme: str, host_port: str) -> tuple[str, int] | None:
    """Normalize ``host[:port]`` to (lowercase host, port) with the scheme's default port."""
    try:
        parts = urlsplit(f"//{host_port}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    default = 443 if scheme in ("https", "wss") else 80
    return host.lower(), port or default


class Guard:
    """Token, Origin and Host checks shared by the websocket and the HTTP routes."""

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self._token = config.token.encode() if config.token else None

    def token_ok(self, presented: str | None) -> bool:
        if self._token is None:
            return True
        if presented is None:
            return False
        # Constant-time compare on bytes of any length (compare_digest handles unequal lengths).
        return hmac.compare_digest(presented.encode("utf-8", "replace"), self._token)

    def origin_ok(self, scope: Mapping[str, Any]) -> bool:
        """``Origin`` (when sent) equals this server's host:port; loopback binds want a loopback Host."""
        host = _header(scope, b"host")
        if host is None:
            return False
        scheme = scope.get("scheme", "http")
        scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        here = _netloc(scheme, host)
        if here is None:
            return False
        if is_loopback(self.config.host) and not is_loopback(here[0]):
            return False  # DNS rebinding: a foreign name pointing at 127.0.0.1
        origin = _header(scope, b"origin")
        if origin is None:
            return True  # not a browser (browsers always send Origin on websockets and POSTs)
        try:
            o = urlsplit(origin)
        except ValueError:
            return False
        if o.scheme not in ("http", "https") or o.scheme != scheme:
            return False
        return _netloc(o.scheme, o.netloc) == here

    @staticmethod
    def ws_token(scope: Mapping[str, Any]) -> tuple[str | None, bool]:
        """(token, speaks our subprotocol) from the websocket handshake."""
        token = None
        ours = False
        for p in scope.get("subprotocols", []) or []:
            if p == SUBPROTOCOL:
                ours = True
            elif p.startswith(TOKEN_PREFIX):
                token = p[len(TOKEN_PREFIX) :]
        auth = _header(scope, b"authorization")
        if token is None and auth and auth.startswith("Bearer "):
            token = auth[len("Bearer ") :]
        return token, ours

    @staticmethod
    def http_token(request: Request) -> str | None:
        auth = request.headers.get("authorization")
        if auth and auth.startswith("Bearer "):
            return auth[len("Bearer ") :]
        return None


class _Connection:
    """One websocket: validation, rate limit, and a single sender task for all outgoing frames."""

    def __init__(self, ws: WebSocket, source: WebSource, feed: LiveFeed, config: WebConfig) -> None:
        self.ws, self.source, self.feed, self.config = ws, source, feed, config
        self.bucket = TokenBucket(config.rate, config.burst)
        self.refused = 0
        self.cid = 0
        self.wake = asyncio.Event()
        self.outbox: deque[str] = deque(maxlen=64)
        self.closing = False

    def queue(self, obj: dict[str, Any]) -> None:
        self.outbox.append(encode(obj))
        self.wake.set()

    async def run(self) -> None:
        self.cid = self.source.connect()
        self.feed.subscribe(self.wake)
        sender = asyncio.create_task(self._send_loop())
        self.queue(
            {
                "type": "hello",
                "driver": True,
                "deadman": self.source.deadman,
                "width": self.feed.width,
                "height": self.feed.height,
                "max_bytes": MAX_MESSAGE_BYTES,
            }
        )
        try:
            await self._receive_loop()
        finally:
            self.source.disconnect(self.cid)
            self.feed.unsubscribe(self.wake)
            sender.cancel()
            try:
                await sender
            except (asyncio.CancelledError, Exception):
                pass

    async def _receive_loop(self) -> None:
        while not self.closing:
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if not self.bucket.take():
                self._refuse("rate limit exceeded")
            elif msg.get("bytes") is not None:
                self._refuse("binary messages are not accepted")
            else:
                try:
                    self._handle(parse_message(msg.get("text")))
                except ProtocolError as e:
                    self._refuse(str(e))
            if self.refused >= self.config.max_refused:
                log.warning(
                    "web: closing connection %d after %d refused messages", self.cid, self.refused
                )
                self.closing = True
                await self.ws.close(code=1008)
                return

    def _refuse(self, why: str) -> None:
        self.refused += 1
        self.source.refuse(self.cid)
        if self.refused <= 10 or self.refused % 10 == 0:
            self.queue({"type": "error", "error": why[:200], "refused": self.refused})

    def _handle(self, m: Message) -> None:
        t = m.type
        if t == "drive":
            self.source.drive(self.cid, m["left"], m["right"], m["seq"])
        elif t == "visibility":
            self.source.set_visible(self.cid, m["visible"])
        elif t == "ping":
            self.queue({"type": "pong", "id": m["id"]})
        elif t in ("record",):
            self.source.post("record", m["op"])
        elif t == "mode":
            self.source.post("mode", m["mode"])
        else:  # estop, reset, episode, success
            self.source.post(t)

    async def _send_loop(self) -> None:
        period = 1.0 / self.config.telemetry_hz
        next_tel = 0.0
        sent_seq = 0
        loop = asyncio.get_running_loop()
        while True:
            timeout = max(0.0, next_tel - loop.time())
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            while self.outbox:
                await self.ws.send_text(self.outbox.popleft())
            seq, jpeg = self.feed.latest_jpeg()
            if jpeg is not None and seq != sent_seq:
                sent_seq = seq
                await self.ws.send_bytes(jpeg)
            if loop.time() >= next_tel:
                next_tel = loop.time() + period
                tel = self.feed.telemetry()
                tel.update(
                    type="telemetry", driver=self.source.is_driver(self.cid), refused=self.refused
                )
                await self.ws.send_text(encode(tel))


def create_app(source: WebSource, feed: LiveFeed, config: WebConfig | None = None) -> Starlette:
    """The ASGI app serving the page, ``/ws`` and ``/api/...`` for ``source`` and ``feed``."""
    config = config or WebConfig()
    guard = Guard(config)
    http_bucket = TokenBucket(config.rate, config.burst)

    def _headers(resp: Response) -> Response:
        resp.headers.update(SECURITY_HEADERS)
        return resp

    async def index(request: Request) -> Response:
        if not guard.origin_ok(request.scope):
            return _headers(PlainTextResponse("forbidden", status_code=403))
        return _headers(FileResponse(STATIC_DIR / "index.html", media_type="text/html"))

    def _check(request: Request) -> Response | None:
        if not guard.origin_ok(request.scope):
            return PlainTextResponse("forbidden", status_code=403)
        if not guard.token_ok(guard.http_token(request)):
            return PlainTextResponse("unauthorized", status_code=401)
        if not http_bucket.take():
            return PlainTextResponse("too many requests", status_code=429)
        return None

    async def status(request: Request) -> Response:
        refused = _check(request)
        if refused is not None:
            return _headers(refused)
        tel = feed.telemetry()
        tel["connected"] = source.connected
        return _headers(JSONResponse(protocol_safe(tel)))

    async def event(request: Request) -> Response:
        refused = _check(request)
        if refused is not None:
            return _headers(refused)
        kind = request.path_params["kind"]
        if kind not in HTTP_EVENTS:
            return _headers(PlainTextResponse("not found", status_code=404))
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_MESSAGE_BYTES:
                return _headers(PlainTextResponse("payload too large", status_code=413))
        fields = body.decode("utf-8", "replace").strip() or "{}"
        # Build {"type": kind, ...fields} textually so duplicate/unknown keys are still refused.
        if not fields.startswith("{") or not fields.endswith("}"):
            return _headers(PlainTextResponse("bad request", status_code=400))
        inner = fields[1:-1].strip()
        raw = '{"type":' + json.dumps(kind) + ("," + inner if inner else "") + "}"
        try:
            m = parse_message(raw)
        except ProtocolError as e:
            return _headers(JSONResponse({"error": str(e)[:200]}, status_code=400))
        if m.type == "record":
            source.post("record", m["op"])
        elif m.type == "mode":
            source.post("mode", m["mode"])
        else:
            source.post(m.type)
        return _headers(JSONResponse({"ok": True}))

    async def websocket(ws: WebSocket) -> None:
        token, ours = guard.ws_token(ws.scope)
        if not ours or not guard.origin_ok(ws.scope) or not guard.token_ok(token):
            log.warning("web: refused a websocket from %s", ws.client.host if ws.client else "?")
            await ws.close(code=1008)  # before accept → HTTP 403
            return
        await ws.accept(subprotocol=SUBPROTOCOL)
        try:
            await _Connection(ws, source, feed, config).run()
        except WebSocketDisconnect:
            pass

    async def _generic(request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, HTTPException) else 500
        text = {404: "not found", 405: "method not allowed"}.get(code, "error")
        return _headers(PlainTextResponse(text, status_code=code))

    routes = [
        Route("/", index),
        Route("/api/status", status),
        Route("/api/{kind}", event, methods=["POST"]),
        WebSocketRoute("/ws", websocket),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    return Starlette(
        debug=False,
        routes=routes,
        exception_handlers={HTTPException: _generic, Exception: _generic},
    )


def protocol_safe(obj: dict[str, Any]) -> Any:
    """Telemetry as strict JSON (non-finite numbers → null)."""
    return json.loads(encode(obj))


assert set(HTTP_EVENTS) <= set(SCHEMA)
