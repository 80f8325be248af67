"""Loopback ports and HTTP servers for tests."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web


def _redirect_to(location: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound(location)

    return redirect


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def static_http_server(
    root: Path,
    *,
    redirects: Mapping[str, str] | None = None,
    port: int | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Iterator[str]:
    """Serve ``root`` over HTTP (with Range support) on 127.0.0.1; yields the base URL.

    ``redirects`` maps a path to the URL it answers with a 302. With ``ssl_context`` it
    is HTTPS.
    """
    app = web.Application()
    for path, location in (redirects or {}).items():
        app.router.add_get(path, _redirect_to(location))
    app.router.add_static("/", root)
    with serve_app(app, port=port, ssl_context=ssl_context) as base_url:
        yield base_url


@contextmanager
def serve_app(
    app: web.Application, *, port: int | None = None, ssl_context: ssl.SSLContext | None = None
) -> Iterator[str]:
    """Run ``app`` on 127.0.0.1 in an event loop of its own thread (so blocking test code
    and workers can fetch from it); yields the base URL."""
    port = port or free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


class ConnectionRecorder:
    """A TCP listener that only counts who connects: it catches a fetch that must not
    happen. It accepts, records, and closes."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = socket.create_server((host, port))
        self._server.settimeout(0.2)
        self.host = host
        self.port = int(self._server.getsockname()[1])
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()


@contextmanager
def connection_recorder(host: str = "127.0.0.1", port: int = 0) -> Iterator[ConnectionRecorder]:
    recorder = ConnectionRecorder(host, port)
    try:
        yield recorder
    finally:
        recorder.close()


@contextmanager
def silent_tcp_server() -> Iterator[str]:
    """A listener on 127.0.0.1 that accepts connections and never answers: a source
    that keeps a worker waiting (until its open timeout). Yields ``host:port``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.1)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        done.set()
        thread.join(5)
        listener.close()
        for connection in accepted:
            connection.close()
