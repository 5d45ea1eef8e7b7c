"""Security of the teleop web server: tokens, Origin, size limits, validation, rate limit, no leaks.

Each test starts the real server (uvicorn on 127.0.0.1, a free port) around a bare
:class:`WebSource` and stops it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy.web.app import SUBPROTOCOL, TOKEN_PREFIX, WebConfig, WebSecurityError, resolve_token
from deploy.web.server import WebServer
from deploy.web.source import LiveFeed, WebSource

TOKEN = secrets.token_urlsafe(32)


@pytest.fixture
def served() -> Iterator[tuple[WebServer, WebSource, LiveFeed]]:
    src, feed = WebSource(deadman=5.0), LiveFeed()
    srv = WebServer(src, feed, host="127.0.0.1", port=0, token=TOKEN).start()
    try:
        yield srv, src, feed
    finally:
        srv.stop()
        feed.close()


def _origin(srv: WebServer) -> str:
    return f"http://127.0.0.1:{srv.port}"


def _ws(srv: WebServer, *, token: str | None = TOKEN, origin: str | None = "self", **kw):
    protocols = [SUBPROTOCOL] + ([TOKEN_PREFIX + token] if token is not None else [])
    return websockets.connect(
        f"ws://127.0.0.1:{srv.port}/ws",
        subprotocols=protocols,
        origin=_origin(srv) if origin == "self" else origin,
        open_timeout=5,
        **kw,
    )


async def _refused(srv: WebServer, **kw) -> int:
    with pytest.raises(websockets.exceptions.InvalidStatus) as e:
        async with _ws(srv, **kw):
            pass
    return e.value.response.status_code


def _wait(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_token_rules() -> None:
    assert resolve_token("127.0.0.1", None) == (None, False)
    assert resolve_token("localhost", None) == (None, False)
    tok, generated = resolve_token("0.0.0.0", None)
    assert generated and tok is not None and len(tok) >= 32
    with pytest.raises(WebSecurityError):
        resolve_token("0.0.0.0", "short")
    with pytest.raises(WebSecurityError):
        resolve_token("127.0.0.1", "x" * 31)
    with pytest.raises(WebSecurityError):
        resolve_token("127.0.0.1", "a" * 31 + " ")  # would break the websocket subprotocol header
    with pytest.raises(WebSecurityError):
        WebConfig(host="192.168.1.5", token=None)
    WebConfig(host="0.0.0.0", token=TOKEN)


def test_websocket_refuses_missing_or_wrong_token_and_foreign_origin(served) -> None:
    srv, src, _ = served

    async def main() -> None:
        assert await _refused(srv, token=None) == 403
        assert await _refused(srv, token=TOKEN[:-1] + ("A" if TOKEN[-1] != "A" else "B")) == 403
        assert await _refused(srv, token=TOKEN + "x") == 403
        assert await _refused(srv, origin="http://evil.example") == 403
        assert await _refused(srv, origin=f"http://127.0.0.1:{srv.port + 1}") == 403
        assert await _refused(srv, origin=f"https://127.0.0.1:{srv.port}") == 403
        assert await _refused(srv, origin="null") == 403
        assert not src.connected
        async with _ws(srv) as ws:  # the right token and our own origin are accepted
            hello = json.loads(await ws.recv())
            assert hello["type"] == "hello" and hello["driver"] is True
            assert src.connected

    asyncio.run(main())


def test_http_routes_need_token_and_origin(served) -> None:
    srv, src, _ = served
    base = f"http://127.0.0.1:{srv.port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base, timeout=5) as c:
        # DNS rebinding: a foreign Host name pointing at 127.0.0.1, with a matching Origin.
        evil = f"evil.example:{srv.port}"
        assert c.get("/", headers={"Host": evil, "Origin": f"http://{evil}"}).status_code == 403
        r = c.post("/api/estop", headers={**auth, "Host": evil, "Origin": f"http://{evil}"})
        assert r.status_code == 403
        page = c.get("/")
        assert page.status_code == 200 and "sim2pi" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert c.get("/static/teleop.js").status_code == 200
        assert c.post("/api/estop").status_code == 401
        assert (
            c.post("/api/estop", headers={"Authorization": "Bearer " + "x" * 43}).status_code == 401
        )
        assert c.get("/api/status").status_code == 401
        r = c.post("/api/estop", headers={**auth, "Origin": "http://evil.example"})
        assert r.status_code == 403
        assert not [e for e in src.controls() if e.kind == "estop"]
        assert c.post("/api/estop", headers={**auth, "Origin": base}).json() == {"ok": True}
        assert [e.kind for e in src.controls()] == ["estop"]
        r = c.post("/api/mode", headers=auth, content='{"mode":"shared"}')
        assert r.status_code == 200
        assert [(e.kind, e.arg) for e in src.controls()] == [("mode", "shared")]
        for body in ('{"mode":"warp"}', '{"mode":"shared","x":1}', '{"type":"reset"}', "[]", "nan"):
            assert c.post("/api/mode", headers=auth, content=body).status_code == 400, body
        assert c.post("/api/drive", headers=auth, content="{}").status_code == 404
        assert c.post("/api/estop", headers=auth, content="{" + " " * 5000 + "}").status_code == 413
        assert src.controls() == []
        assert c.get("/api/status", headers=auth).status_code == 200
        # No debug pages, no tracebacks.
        r = c.get("/nope/../../etc/passwd")
        assert r.status_code == 404 and "Traceback" not in r.text and len(r.text) < 50
        r = c.put("/api/estop", headers=auth)
        assert r.status_code == 405 and "Traceback" not in r.text


def test_oversized_and_binary_messages_are_refused(served) -> None:
    srv, src, _ = served

    async def main() -> None:
        async with _ws(srv) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "drive", "left": 0.5, "right": 0.5, "seq": 1}))
            assert _wait(lambda: src.command(None).action.tolist() == [0.5, 0.5])
            await ws.send(b"\x00" * 16)  # binary → refused → stop
            assert _wait(lambda: src.command(None).action.tolist() == [0.0, 0.0])
            await ws.send(json.dumps({"type": "drive", "left": 0.5, "right": 0.5, "seq": 2}))
            assert _wait(lambda: src.command(None).action.tolist() == [0.5, 0.5])
            await ws.send('{"type":"estop","pad":"' + "x" * 5000 + '"}')  # > 4 KiB → closed
            with pytest.raises(websockets.exceptions.ConnectionClosed) as e:
                for _ in range(100):
                    await asyncio.wait_for(ws.recv(), 5)
            assert e.value.rcvd is not None and e.value.rcvd.code == 1009
        assert _wait(lambda: src.command(None).action.tolist() == [0.0, 0.0])
        assert not src.connected

    asyncio.run(main())


def test_rate_limit_closes_a_flooding_connection(served) -> None:
    srv, src, _ = served

    async def main() -> None:
        async with _ws(srv) as ws:
            await ws.recv()
            msg = json.dumps({"type": "drive", "left": 0.3, "right": 0.3, "seq": 1})
            with pytest.raises(websockets.exceptions.ConnectionClosed) as e:
                for _ in range(3000):
                    await ws.send(msg)
                for _ in range(1000):
                    await asyncio.wait_for(ws.recv(), 5)
            assert e.value.rcvd is not None and e.value.rcvd.code == 1008
        assert _wait(lambda: not src.connected)
        assert src.command(None).action.tolist() == [0.0, 0.0]

    asyncio.run(main())


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    bad=st.lists(
        st.one_of(
            st.sampled_from(
                [
                    '{"type":"drive","left":NaN,"right":0.5,"seq":1}',
                    '{"type":"drive","left":1e999,"right":0.5,"seq":1}',
                    '{"type":"drive","left":true,"right":true,"seq":1}',
                    '{"type":"drive","left":0.5,"right":0.5,"seq":1,"boost":2}',
                    '{"type":"drive","left":2,"right":2,"seq":1}',
                    '{"type":"drive","left":"1","right":0.5,"seq":1}',
                ]
            ),
            st.text(max_size=64),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_hypothesis_malformed_over_websocket_only_stop(served, bad: list[str]) -> None:
    """A sample over the real socket: after each bad message the command is a stop, and the server
    still answers."""
    srv, src, _ = served

    async def main() -> None:
        async with _ws(srv) as ws:
            await ws.recv()
            for raw in bad:
                await ws.send(json.dumps({"type": "drive", "left": 0.6, "right": 0.6, "seq": 1}))
                assert _wait(lambda: src.command(None).action.tolist() == [0.6, 0.6])
                await ws.send(raw)
                await ws.send('{"type":"ping","id":7}')
                while True:  # the pong proves the bad message was handled first
                    m = await asyncio.wait_for(ws.recv(), 5)
                    if isinstance(m, str) and json.loads(m).get("type") == "pong":
                        break
                a = src.command(None).action
                assert np.array_equal(a, [0.0, 0.0]), (raw, a)

    asyncio.run(main())
