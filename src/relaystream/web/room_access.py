"""The gate of the room page: where a room's media is, for a viewer whose token passed.

``GET /rooms/{app_id}/{room_id}/access`` with ``Authorization: Bearer <token>`` (an
AccessToken with SubscribeStream for that room, checked as WHEP checks it: 401 without
one, 403 naming the failed check) answers what the page needs to watch the room::

    {"roomServer": "embedded"}
    {"roomServer": "janus", "janus": {"url": ..., "room": ..., "pin": ...}}

An embedded room is watched through this server (its events and WHEP). A room on Janus
is watched straight from Janus, whose subscribers take an offer from Janus rather than
make one: the page joins with the room's pin, which only this answer carries. The answer
is never cached and never logged.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from aiohttp import web

from relaystream.rtc.janus import JanusRoomConnector
from relaystream.rtc.signaling import authorize_viewer
from relaystream.rtc.token import AppKeyLookup

# AppId → its Janus connector, None when its rooms are not on Janus.
JanusLookup = Callable[[str], JanusRoomConnector | None]


class RoomServerKind(StrEnum):
    """Where the page finds a room's media."""

    EMBEDDED = "embedded"
    JANUS = "janus"


class RoomAccessEndpoint:
    """The ``/access`` route of the room page."""

    def __init__(self, app_key_for: AppKeyLookup, janus_for: JanusLookup) -> None:
        self._app_key_for = app_key_for
        self._janus_for = janus_for

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/rooms/{app_id}/{room_id}/access", self.access)]

    async def access(self, request: web.Request) -> web.Response:
        app_id, room_id = authorize_viewer(request, self._app_key_for)
        headers = {"Cache-Control": "no-store"}
        janus = self._janus_for(app_id)
        access = janus.viewer_access(app_id, room_id) if janus is not None else None
        if access is None:
            return web.json_response({"roomServer": RoomServerKind.EMBEDDED}, headers=headers)
        body = {
            "roomServer": RoomServerKind.JANUS,
            "janus": {"url": access.url, "room": access.room, "pin": access.pin},
        }
        return web.json_response(body, headers=headers)
