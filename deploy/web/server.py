"""Run the teleop web app with uvicorn on a background thread of the robot process.

The control loop keeps the main thread (it owns SIGINT/SIGTERM and stops the motors in ``finally``);
uvicorn, started off the main thread, installs no signal handlers of its own.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType

import uvicorn

from deploy.web.app import WebConfig, create_app, is_loopback
from deploy.web.protocol import MAX_MESSAGE_BYTES
from deploy.web.source import LiveFeed, WebSource
from hardware.errors import DeviceError

log = logging.getLogger(__name__)


class WebServer:
    """The web app on ``host:port`` (port 0 picks a free one), served from a daemon thread.

    Use as a context manager or call :meth:`start` / :meth:`stop`. :attr:`url` is the address to open
    (with ``#token=...`` when a token is set: the fragment never reaches the server's logs).
    """

    def __init__(
        self,
        source: WebSource,
        feed: LiveFeed,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        token: str | None = None,
        config: WebConfig | None = None,
    ) -> None:
        self.config = config or WebConfig(host=host, token=token)
        self.host = host
        self.app = create_app(source, feed, self.config)
        family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host.strip("[]"), port))
        except OSError as e:
            self._sock.close()
            raise DeviceError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.port = int(self._sock.getsockname()[1])
        uv = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            ws_max_size=MAX_MESSAGE_BYTES,
            ws_per_message_deflate=False,  # no compression-bomb surface; JPEGs don't compress
            ws_ping_interval=5.0,
            ws_ping_timeout=5.0,
            server_header=False,
            date_header=False,
            proxy_headers=False,
            lifespan="off",
        )
        self._server = uvicorn.Server(uv)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's address (for a wildcard bind, the machine's hostname)."""
        host = self.host.strip("[]")
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        if ":" in host:
            host = f"[{host}]"
        base = f"http://{host}:{self.port}/"
        return base + (f"#token={self.config.token}" if self.config.token else "")

    def start(self, timeout: float = 10.0) -> WebServer:
        """Start serving; returns once the socket accepts connections."""
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name="sim2pi-web",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise DeviceError("the web server did not start")
            time.sleep(0.01)
        where = "loopback only" if is_loopback(self.host) else "token required"
        log.info("teleop page: %s (%s)", self.url, where)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and close the socket (idempotent)."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout)
            self._thread = None
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
