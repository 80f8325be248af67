"""Sources that misbehave on purpose, served on 127.0.0.1: status codes, live bodies
that end, servers that never answer."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web

from tests.support.net import free_port

CHUNK_BYTES = 4096


@contextmanager
def scripted_http_server(files: dict[str, Path] | None = None) -> Iterator[str]:
    """An HTTP server on 127.0.0.1; yields its base URL.

    - ``/status/{code}[/{name}]``: answers that status with an empty body;
    - ``/live/{name}``: streams ``files[name]`` with no length, paced over the file's
      ``?seconds=`` (a live body that then ends, as an encoder that stopped would).
    """
    files = files or {}
    port = free_port()
    loop = asyncio.new_event_loop()
    runners: list[web.AppRunner] = []

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

    async def start() -> None:
        app = web.Application()
        app.router.add_get("/status/{code}", status)
        app.router.add_get("/status/{code}/{name}", status)  # a name with an extension
        app.router.add_get("/live/{name}", live)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runners[0].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextmanager
def silent_tcp_server() -> Iterator[int]:
    """A port that accepts connections and never says a word; yields the port."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])
