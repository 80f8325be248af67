"""Headless Chromium driven over the DevTools protocol: a real browser as a viewer."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.net import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PAGES = Path(__file__).parent / "pages"


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._next_id = 0

    async def evaluate(self, expression: str) -> Any:
        self._next_id += 1
        await self._ws.send_json(
            {
                "id": self._next_id,
                "method": "Runtime.evaluate",
                "params": {"expression": expression, "returnByValue": True},
            }
        )
        while True:
            message = await self._ws.receive_json()
            if message.get("id") == self._next_id:
                return message["result"]["result"].get("value")

    async def wait_for_json(self, expression: str, timeout_s: float) -> Any:
        """Poll until ``expression`` (which yields a JSON string or null) has a value."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = await self.evaluate(f"JSON.stringify({expression})")
            if value and value != "null":
                return json.loads(value)
            await asyncio.sleep(0.3)
        raise AssertionError(f"{expression} still null after {timeout_s} s")


@asynccontextmanager
async def chromium_page(url: str, profile_dir: Path) -> AsyncIterator[Page]:
    """Open ``url`` in headless Chromium; only loopback traffic, no background services."""
    port = free_port()
    process = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--autoplay-policy=no-user-gesture-required",
            # ICE on loopback, with plain addresses: no mDNS announcements on the LAN.
            "--allow-loopback-in-peer-connection",
            "--disable-features=WebRtcHideLocalIpsWithMdns",
            f"--user-data-dir={profile_dir}",
            f"--remote-debugging-port={port}",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as http:
            targets = await _targets(http, port)
            ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with http.ws_connect(ws_url, max_msg_size=0) as ws:
                yield Page(ws)
    finally:
        process.terminate()
        process.wait(10)


async def _targets(http: aiohttp.ClientSession, port: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        try:
            response = await http.get(f"http://127.0.0.1:{port}/json")
            targets: list[dict[str, Any]] = await response.json()
            if any(t["type"] == "page" for t in targets):
                return targets
        except aiohttp.ClientError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)
