"""WHEP: watch a publisher in a room with one HTTP offer/answer (no trickle ICE).

``POST /whep/{app_id}/{room_id}/{user_id}`` with an SDP offer and ``Authorization:
Bearer <token>`` (an AccessToken with SubscribeStream for that room) answers ``201`` with
the SDP answer, candidates included, and a session URL that ``DELETE`` ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription, sdp
from aiortc.exceptions import OperationError
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from relaystream.logs import log_event
from relaystream.rtc.room import ForwardedTrack, Publication, RoomRegistry, TrackKind
from relaystream.rtc.token import (
    AppKeyLookup,
    Privilege,
    TokenError,
    parse_token,
    verify_token,
)

logger = logging.getLogger(__name__)

# A viewer that has not connected by then never will (ICE gives up well before).
CONNECT_TIMEOUT_S = 30.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Expose-Headers": "Location",
}


def h264_only() -> list[RTCRtpCodecCapability]:
    """Video codecs we can forward: H.264 packetization-mode 1 (plus its RTX)."""
    return [
        codec
        for codec in RTCRtpSender.getCapabilities("video").codecs
        if codec.mimeType == "video/rtx"
        or (codec.mimeType == "video/H264" and codec.parameters.get("packetization-mode") == "1")
    ]


def _offered_kinds(offer: RTCSessionDescription) -> list[TrackKind]:
    """The audio/video m-lines of an offer, in order; ValueError if it does not parse."""
    try:
        media = sdp.SessionDescription.parse(offer.sdp).media
    except Exception as exc:
        raise ValueError("the offer is not valid SDP") from exc
    return [TrackKind(m.kind) for m in media if m.kind in {"audio", "video"}]


class WhepSession:
    """One viewer's peer connection to one publication."""

    def __init__(
        self, session_id: str, pc: RTCPeerConnection, publication: Publication, viewer_id: str
    ) -> None:
        self.session_id = session_id
        self.pc = pc
        self.publication = publication
        self.viewer_id = viewer_id


class WhepEndpoint:
    """The WHEP routes and the sessions they created."""

    def __init__(self, rooms: RoomRegistry, app_key_for: AppKeyLookup) -> None:
        self._rooms = rooms
        self._app_key_for = app_key_for
        self._sessions: dict[str, WhepSession] = {}
        self._closing: set[asyncio.Future[None]] = set()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/whep/{app_id}/{room_id}/{user_id}", self.subscribe),
            web.delete("/whep/sessions/{session_id}", self.unsubscribe),
            web.options("/whep/{tail:.*}", self.preflight),
        ]

    @web.middleware
    async def cors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Let WHEP players served from any origin use these endpoints.

        Safe with ``*``: the credential is a bearer token the page holds, never a cookie.
        """
        if not request.path.startswith("/whep/"):
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(_CORS_HEADERS)
            raise
        response.headers.update(_CORS_HEADERS)
        return response

    async def preflight(self, _: web.Request) -> web.Response:
        return web.Response(status=204)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def subscribe(self, request: web.Request) -> web.Response:
        app_id = request.match_info["app_id"]
        room_id = request.match_info["room_id"]
        user_id = request.match_info["user_id"]
        viewer_id = self._authorize(request, app_id, room_id)
        if request.content_type != "application/sdp":
            raise web.HTTPUnsupportedMediaType(text="Content-Type must be application/sdp\n")
        publication = self._rooms.find_publication(app_id, room_id, user_id)
        if publication is None or publication.ended:
            raise web.HTTPNotFound(text=f"no publisher {user_id!r} in room {room_id!r}\n")
        offer = RTCSessionDescription(sdp=await request.text(), type="offer")
        try:
            session = await self._answer(offer, publication, viewer_id)
        except (ValueError, OperationError) as exc:
            raise web.HTTPBadRequest(text=f"cannot answer this offer: {exc}\n") from exc
        assert session.pc.localDescription is not None
        _log_viewer("viewer joined", session)
        return web.Response(
            status=201,
            content_type="application/sdp",
            text=session.pc.localDescription.sdp,
            headers={"Location": f"/whep/sessions/{session.session_id}"},
        )

    async def unsubscribe(self, request: web.Request) -> web.Response:
        session = self._sessions.get(request.match_info["session_id"])
        if session is None:
            raise web.HTTPNotFound(text="no such session\n")
        await self._close(session)
        return web.Response(status=200)

    async def close_all(self) -> None:
        await asyncio.gather(*(self._close(s) for s in tuple(self._sessions.values())))

    def _authorize(self, request: web.Request, app_id: str, room_id: str) -> str:
        """The viewer's user id, from a token that lets it watch this room."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise web.HTTPUnauthorized(
                text="a Bearer token with SubscribeStream privilege is required\n",
                headers={"WWW-Authenticate": "Bearer"},
            )
        app_key = self._app_key_for(app_id)
        if app_key is None:
            raise web.HTTPNotFound(text=f"unknown AppId {app_id!r}\n")
        try:
            viewer = parse_token(token)[0].user_id
            verify_token(
                token,
                app_id=app_id,
                app_key=app_key,
                room_id=room_id,
                user_id=viewer,
                privilege=Privilege.SUBSCRIBE_STREAM,
            )
        except TokenError as exc:
            raise web.HTTPForbidden(text=f"token refused: {exc}\n") from exc
        return viewer

    async def _answer(
        self, offer: RTCSessionDescription, publication: Publication, viewer_id: str
    ) -> WhepSession:
        # Host candidates only: the viewer reaches us directly (same machine or LAN).
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        session = WhepSession(secrets.token_urlsafe(16), pc, publication, viewer_id)
        tracks: list[ForwardedTrack] = []
        try:
            # Transceivers (with H.264 as the only video codec) must exist before the
            # offer is applied: that is when aiortc settles the codecs of the answer.
            wanted = [kind for kind in _offered_kinds(offer) if kind in publication.tracks]
            if not wanted:
                published = ", ".join(sorted(publication.tracks)) or "nothing"
                raise ValueError(f"it asks for no track this publisher has ({published})")
            for kind in wanted:
                track = publication.tracks[kind].subscribe()
                tracks.append(track)
                transceiver = pc.addTransceiver(track, direction="sendonly")
                if kind is TrackKind.VIDEO:
                    transceiver.setCodecPreferences(h264_only())
            await pc.setRemoteDescription(offer)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception:
            await pc.close()
            for track in tracks:  # a sender that never started does not stop its track
                track.stop()
            raise
        self._sessions[session.session_id] = session
        publication.on_end(lambda: self._close_soon(session))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in {"failed", "closed"}:
                await self._close(session)

        asyncio.get_running_loop().call_later(
            CONNECT_TIMEOUT_S, self._close_if_unconnected, session
        )

        return session

    def _close_if_unconnected(self, session: WhepSession) -> None:
        if session.pc.connectionState != "connected":
            self._close_soon(session)

    def _close_soon(self, session: WhepSession) -> None:
        closing = asyncio.ensure_future(self._close(session))
        self._closing.add(closing)  # keep a reference until it is done
        closing.add_done_callback(self._closing.discard)

    async def _close(self, session: WhepSession) -> None:
        if self._sessions.pop(session.session_id, None) is None:
            return
        _log_viewer("viewer left", session)
        with contextlib.suppress(Exception):
            await session.pc.close()


def _log_viewer(event: str, session: WhepSession) -> None:
    # Not the session id: its URL ends the session without a token.
    publication = session.publication
    log_event(
        logger,
        event,
        room=f"{publication.room.app_id}/{publication.room.room_id}",
        publisher=publication.user_id,
        viewer=session.viewer_id,
    )
