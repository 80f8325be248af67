"""Serves the room page, the console and their static files, with strict headers.

Every page is the same file for every visitor: no secret or per-user data is ever
rendered into it. What a page needs from the server beyond its files is public
(``/console/settings.json``: the region and the built-in test stream's URL), or given
only for a checked token (``/rooms/.../access``: the room's Janus pin).
"""

from __future__ import annotations

from importlib.resources import files

from aiohttp import web

from relaystream.rtc.room_owner import RoomOwnerLookup, redirect_to_room_owner

STATIC_FILES = {
    "room.html": "text/html",
    "room.js": "text/javascript",
    "room_janus.js": "text/javascript",
    "janus_api.js": "text/javascript",
    "player.js": "text/javascript",
    "console.html": "text/html",
    "console.js": "text/javascript",
    "volcengine.js": "text/javascript",
    "style.css": "text/css",
}


def _security_headers(connect_origins: tuple[str, ...] = ()) -> dict[str, str]:
    """Scripts, styles and fetches from this origin only: an injected script could read
    the console's secret key, so none may run. The room page may also fetch from the
    Janus that hosts rooms (``connect_origins``). WebRTC media is not governed by
    connect-src."""
    connect_src = " ".join(("'self'", *connect_origins))
    return {
        "Content-Security-Policy": (
            "default-src 'none'; script-src 'self'; style-src 'self'; "
            f"connect-src {connect_src}; img-src 'self' data:; "
            "media-src 'self' blob: mediastream:; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'"
        ),
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    }


def _static(name: str, headers: dict[str, str] | None = None) -> web.Response:
    body = (files("relaystream.web") / "static" / name).read_bytes()
    return web.Response(
        body=body,
        content_type=STATIC_FILES[name],
        charset="utf-8",
        headers=headers or _security_headers(),
    )


class WebPages:
    def __init__(
        self,
        *,
        region: str,
        demo_stream_url: str,
        room_owner: RoomOwnerLookup | None = None,
        janus_origin: str | None = None,
    ) -> None:
        self._settings = {"region": region, "demoStreamUrl": demo_stream_url}
        # The room page of a room on Janus talks to Janus's HTTP API itself.
        self._room_page_headers = _security_headers((janus_origin,) if janus_origin else ())
        # Several nodes: the page is served by the room's node, so that its fetches
        # (events, WHEP) reach that node from the same origin.
        self._room_owner = room_owner

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/rooms/{app_id}/{room_id}", self.room_page),
            web.get("/console", self.console),
            web.get("/console/settings.json", self.settings),
            web.get("/static/{name}", self.static_file),
        ]

    async def room_page(self, request: web.Request) -> web.Response:
        app_id = request.match_info["app_id"]
        room_id = request.match_info["room_id"]
        await redirect_to_room_owner(request, self._room_owner, app_id, room_id)
        return _static("room.html", self._room_page_headers)

    async def console(self, _: web.Request) -> web.Response:
        return _static("console.html")

    async def settings(self, _: web.Request) -> web.Response:
        return web.json_response(self._settings, headers={"Cache-Control": "no-cache"})

    async def static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound(text="no such file\n")
        return _static(name)
