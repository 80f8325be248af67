"""The room's event stream and the pages, over plain HTTP."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.publisher import WhipPublisher
from tests.support.server import APP_ID, RelayServer

ROOM = "room-events"


async def next_event(response: aiohttp.ClientResponse) -> tuple[str, dict[str, Any]]:
    """The next server-sent event (keep-alive comments skipped)."""
    name, data = "", ""
    while True:
        line = (await asyncio.wait_for(response.content.readline(), 20)).decode().rstrip("\n")
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data += line.removeprefix("data: ")
        elif not line and data:
            return name, json.loads(data)


async def test_the_event_stream_wants_a_subscribe_token_in_the_header(
    relay_server: RelayServer,
) -> None:
    url = f"{relay_server.base_url}/rooms/{APP_ID}/{ROOM}/events"
    token = relay_server.subscribe_token(ROOM)
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as response:
            assert response.status == 401
        async with http.get(url, params={"token": token}) as response:
            assert response.status == 401  # never from the URL
        publish_only = relay_server.publish_token(ROOM, "viewer")
        async with http.get(url, headers={"Authorization": f"Bearer {publish_only}"}) as response:
            assert response.status == 403
        other_room = relay_server.subscribe_token("another-room")
        async with http.get(url, headers={"Authorization": f"Bearer {other_room}"}) as response:
            assert response.status == 403


async def test_the_access_gate_says_an_embedded_room_plays_here(relay_server: RelayServer) -> None:
    url = f"{relay_server.base_url}/rooms/{APP_ID}/{ROOM}/access"
    token = relay_server.subscribe_token(ROOM)
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as response:
            assert response.status == 401
        async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200
            assert await response.json() == {"roomServer": "embedded"}
        async with http.get(f"{relay_server.base_url}/rooms/{APP_ID}/{ROOM}") as response:
            # No Janus in this config: the room page fetches from its own origin only.
            assert "connect-src 'self';" in response.headers["Content-Security-Policy"]


async def test_the_event_stream_tells_who_joins_and_leaves(
    relay_server: RelayServer, clips: dict[str, Path]
) -> None:
    url = f"{relay_server.base_url}/rooms/{APP_ID}/{ROOM}/events"
    headers = {"Authorization": f"Bearer {relay_server.subscribe_token(ROOM)}"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as events:
        assert events.status == 200
        assert events.content_type == "text/event-stream"
        assert await next_event(events) == ("snapshot", {"publishers": []})

        publisher = WhipPublisher(
            f"{relay_server.base_url}/whip/{APP_ID}/{ROOM}/guest",
            relay_server.publish_token(ROOM, "guest"),
            clips["ts"],
        )
        await publisher.connect()
        joined = {"userId": "guest", "tracks": ["audio", "video"]}
        assert await next_event(events) == ("joined", joined)
        assert await publisher.leave() == 200
        assert await next_event(events) == ("left", joined)


async def test_pages_carry_no_secret_and_a_strict_policy(relay_server: RelayServer) -> None:
    async with aiohttp.ClientSession() as http:
        for path in (f"/rooms/{APP_ID}/{ROOM}", "/console"):
            async with http.get(relay_server.base_url + path) as response:
                assert response.status == 200
                assert response.content_type == "text/html"
                policy = response.headers["Content-Security-Policy"]
                assert "script-src 'self'" in policy
                assert response.headers["Referrer-Policy"] == "no-referrer"
                assert APP_ID not in await response.text()
        async with http.get(f"{relay_server.base_url}/console/settings.json") as response:
            settings = await response.json()
        assert settings["region"] == "cn-north-1"
        assert settings["demoStreamUrl"].endswith("/demo/testsrc.flv")
        async with http.get(f"{relay_server.base_url}/static/../server.py") as response:
            assert response.status == 404
        async with http.get(f"{relay_server.base_url}/static/secret.toml") as response:
            assert response.status == 404
