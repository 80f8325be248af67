"""Sources that misbehave on purpose, served on 127.0.0.1: status codes, live bodies
that end, servers that never answer."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web

from tests.support.net import serve_app

CHUNK_BYTES = 4096


@contextmanager
def scripted_http_server(files: dict[str, Path] | None = None) -> Iterator[str]:
    """An HTTP server on 127.0.0.1; yields its base URL.

    - ``/status/{code}[/{name}]``: answers that status with an empty body;
    - ``/live/{name}``: streams ``files[name]`` with no length, paced over the file's
      ``?seconds=`` (a live body that then ends, as an encoder that stopped would).
    """
    files = files or {}

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]))

    async def live(request: web.Request) -> web.StreamResponse:
        data = files[request.match_info["name"]].read_bytes()
        seconds = float(request.query.get("seconds", "3"))
        response = web.StreamResponse(headers={"Content-Type": "video/mp2t"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]
        for chunk in chunks:
            await response.write(chunk)
            await asyncio.sleep(seconds / len(chunks))
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/status/{code}/{name}", status)  # a name with an extension
    app.router.add_get("/live/{name}", live)
    with serve_app(app) as base_url:
        yield base_url


@contextmanager
def silent_tcp_server() -> Iterator[int]:
    """A port that accepts connections and never says a word; yields the port."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])
