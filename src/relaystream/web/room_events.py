"""Who publishes in a room, live: a server-sent event stream for the room page.

``GET /rooms/{app_id}/{room_id}/events`` with ``Authorization: Bearer <token>`` (an
AccessToken with SubscribeStream for that room, the one that lets the page watch) sends
``snapshot`` (everyone publishing now), then ``joined`` and ``left`` as publications
start and end. The token rides in a header, never in the URL, so the page reads the
stream with ``fetch`` rather than ``EventSource`` (which cannot send headers).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from relaystream.rtc.room import RoomEvent, RoomRegistry
from relaystream.rtc.room_owner import RoomOwnerLookup, redirect_to_room_owner
from relaystream.rtc.signaling import authorize_viewer
from relaystream.rtc.token import AppKeyLookup

# A comment line this often keeps proxies from closing an idle stream, and finds out
# that a client has gone away.
KEEPALIVE_S = 15.0
# A client this far behind is dropped; it reconnects and gets a fresh snapshot.
MAX_PENDING_EVENTS = 1000


class RoomEventStreams:
    """The ``/events`` route and the streams it has open."""

    def __init__(
        self,
        rooms: RoomRegistry,
        app_key_for: AppKeyLookup,
        *,
        room_owner: RoomOwnerLookup | None = None,
    ) -> None:
        self._rooms = rooms
        self._app_key_for = app_key_for
        # Several nodes: the room's node, when another one hosts it.
        self._room_owner = room_owner
        self._open: set[asyncio.Queue[RoomEvent | None]] = set()

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/rooms/{app_id}/{room_id}/events", self.stream)]

    async def stream(self, request: web.Request) -> web.StreamResponse:
        app_id, room_id = authorize_viewer(request, self._app_key_for)
        await redirect_to_room_owner(request, self._room_owner, app_id, room_id)
        pending: asyncio.Queue[RoomEvent | None] = asyncio.Queue(MAX_PENDING_EVENTS)

        def enqueue(event: RoomEvent) -> None:
            if pending.full():
                stop_listening()
                pending.get_nowait()
                pending.put_nowait(None)
            else:
                pending.put_nowait(event)

        stop_listening = self._rooms.listen(app_id, room_id, enqueue)
        self._open.add(pending)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        try:
            await response.prepare(request)
            publishers = [
                _publisher(p.user_id, p.tracks) for p in self._rooms.publishers(app_id, room_id)
            ]
            await _send(response, "snapshot", {"publishers": publishers})
            while True:
                try:
                    event = await asyncio.wait_for(pending.get(), KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if event is None:
                    break
                await _send(response, event.kind.value, _publisher(event.user_id, event.tracks))
        except ConnectionError:
            pass  # the page went away
        finally:
            stop_listening()
            self._open.discard(pending)
        return response

    def close_all(self) -> None:
        """End every open stream (the server is stopping)."""
        for pending in tuple(self._open):
            while pending.full():
                pending.get_nowait()
            pending.put_nowait(None)


def _publisher(user_id: str, tracks: Any) -> dict[str, Any]:
    return {"userId": user_id, "tracks": sorted(str(kind) for kind in tracks)}


async def _send(response: web.StreamResponse, event: str, data: dict[str, Any]) -> None:
    await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
