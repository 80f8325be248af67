"""WHEP: watch a publisher in a room with one HTTP offer/answer (no trickle ICE).

``POST /whep/{app_id}/{room_id}/{user_id}`` with an SDP offer and ``Authorization:
Bearer <token>`` (an AccessToken with SubscribeStream for that room) answers ``201`` with
the SDP answer, candidates included, and a session URL that ``DELETE`` ends.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import OperationError

from relaystream.logs import log_event
from relaystream.rtc.room import ForwardedTrack, Publication, RoomRegistry, TrackKind
from relaystream.rtc.signaling import (
    PeerSession,
    PeerSessions,
    authorize,
    h264_only,
    offered_kinds,
    preflight,
    require_sdp,
)
from relaystream.rtc.token import AppKeyLookup, Privilege

logger = logging.getLogger(__name__)

# (app_id, room_id, user_id) → the base URL of the node that publishes it, if another.
OwnerLookup = Callable[[str, str, str], Awaitable[str | None]]


class WhepEndpoint:
    """The WHEP routes and the sessions they created."""

    def __init__(
        self,
        rooms: RoomRegistry,
        app_key_for: AppKeyLookup,
        owner_url: OwnerLookup | None = None,
    ) -> None:
        self._rooms = rooms
        self._app_key_for = app_key_for
        # Several nodes: the base URL of the node a publisher runs on, when not this one.
        self._owner_url = owner_url
        self._sessions = PeerSessions("/whep/sessions/")

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/whep/{app_id}/{room_id}/{user_id}", self.subscribe),
            self._sessions.route(),
            web.options("/whep/{tail:.*}", preflight),
        ]

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def subscribe(self, request: web.Request) -> web.Response:
        app_id = request.match_info["app_id"]
        room_id = request.match_info["room_id"]
        user_id = request.match_info["user_id"]
        viewer_id = authorize(
            request,
            self._app_key_for,
            app_id=app_id,
            room_id=room_id,
            privilege=Privilege.SUBSCRIBE_STREAM,
        )
        require_sdp(request)
        publication = self._rooms.find_publication(app_id, room_id, user_id)
        if publication is None and self._owner_url is not None:
            owner = await self._owner_url(app_id, room_id, user_id)
            if owner is not None:
                # 307: the viewer posts the same offer, with its token, to the owner.
                raise web.HTTPTemporaryRedirect(owner.rstrip("/") + request.path_qs)
        if publication is None or publication.ended:
            raise web.HTTPNotFound(text=f"no publisher {user_id!r} in room {room_id!r}\n")
        offer = RTCSessionDescription(sdp=await request.text(), type="offer")
        try:
            session = await self._answer(offer, publication)
        except (ValueError, OperationError) as exc:
            raise web.HTTPBadRequest(text=f"cannot answer this offer: {exc}\n") from exc
        _log_viewer("viewer joined", publication, viewer_id)
        session.on_close(lambda: _log_viewer("viewer left", publication, viewer_id))
        return self._sessions.answer(session)

    async def close_all(self) -> None:
        await self._sessions.close_all()

    async def _answer(self, offer: RTCSessionDescription, publication: Publication) -> PeerSession:
        # Host candidates only: the viewer reaches us directly (same machine or LAN).
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        session = PeerSession(pc)
        tracks: list[ForwardedTrack] = []
        try:
            # Transceivers (with H.264 as the only video codec) must exist before the
            # offer is applied: that is when aiortc settles the codecs of the answer.
            wanted = [kind for kind in offered_kinds(offer) if kind in publication.tracks]
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
        self._sessions.add(session)
        publication.on_end(lambda: self._sessions.close_soon(session))
        return session


def _log_viewer(event: str, publication: Publication, viewer_id: str) -> None:
    # Not the session id: its URL ends the session without a token.
    room = publication.room
    log_event(
        logger,
        event,
        room=f"{room.app_id}/{room.room_id}",
        publisher=publication.user_id,
        viewer=viewer_id,
    )
