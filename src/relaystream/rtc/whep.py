"""WHEP: watch a publisher in a room with one HTTP offer/answer (no trickle ICE).

``POST /whep/{app_id}/{room_id}/{user_id}`` with an SDP offer and ``Authorization:
Bearer <token>`` (an AccessToken with SubscribeStream for that room) answers ``201`` with
the SDP answer, candidates included, and a session URL that ``DELETE`` ends.

A room hosted on Janus cannot be played this way: Janus makes the offer to its viewers
and takes none, so a client's offer could only be answered by forwarding the media once
more. Its WHEP URL answers ``409`` pointing at the room page and its ``/access`` gate.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web
from aiortc import RTCSessionDescription
from aiortc.exceptions import OperationError

from relaystream.logs import log_event
from relaystream.rtc.keyframe_requests import forward_keyframe_requests
from relaystream.rtc.room import Publication, RoomRegistry, TrackKind
from relaystream.rtc.session_caps import SessionCaps
from relaystream.rtc.shared_packetization import send_shared_payloads
from relaystream.rtc.signaling import (
    PeerSession,
    PeerSessions,
    SignalingSettings,
    authorize,
    authorize_viewer,
    h264_only,
    offered_kinds,
    read_sdp_offer,
)
from relaystream.rtc.token import AppKeyLookup, Privilege

logger = logging.getLogger(__name__)

# (app_id, room_id, user_id) → the base URL of the node that publishes it, if another.
OwnerLookup = Callable[[str, str, str], Awaitable[str | None]]
# AppId → whether its rooms live on Janus.
JanusHosted = Callable[[str], bool]


class WhepEndpoint:
    """The WHEP routes and the sessions they created."""

    def __init__(
        self,
        rooms: RoomRegistry,
        app_key_for: AppKeyLookup,
        settings: SignalingSettings | None = None,
        caps: SessionCaps | None = None,
        *,
        owner_url: OwnerLookup | None = None,
        janus_hosted: JanusHosted | None = None,
    ) -> None:
        self._rooms = rooms
        self._janus_hosted = janus_hosted
        self._app_key_for = app_key_for
        # Several nodes: the base URL of the node a publisher runs on, when not this one.
        self._owner_url = owner_url
        self._sessions = PeerSessions("/whep/sessions/", settings, caps)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/whep/{app_id}/{room_id}/{user_id}", self.subscribe),
            web.options("/whep/{app_id}/{room_id}/{user_id}", self.preflight),
            self._sessions.route(),
            web.options("/whep/{tail:.*}", self._sessions.preflight),
        ]

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def preflight(self, request: web.Request) -> web.Response:
        """A browser's CORS preflight carries no token; a page of ours may send one."""
        if "Authorization" not in request.headers:
            return await self._sessions.preflight(request)
        authorize_viewer(request, self._app_key_for)
        return self._sessions.preflight_for_token_holder()

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
        if self._janus_hosted is not None and self._janus_hosted(app_id):
            raise web.HTTPConflict(text=_on_janus(app_id, room_id))
        offer = await read_sdp_offer(request, self._sessions.settings.offer_bounds)
        publication = self._rooms.find_publication(app_id, room_id, user_id)
        if publication is None and self._owner_url is not None:
            owner = await self._owner_url(app_id, room_id, user_id)
            if owner is not None:
                # 307: the viewer posts the same offer, with its token, to the owner.
                raise web.HTTPTemporaryRedirect(owner.rstrip("/") + request.path_qs)
        if publication is None or publication.ended:
            raise web.HTTPNotFound(text=f"no publisher {user_id!r} in room {room_id!r}\n")
        session = self._sessions.open((app_id, room_id))
        try:
            await self._answer(session, offer, publication)
        except BaseException as exc:
            await self._sessions.discard(session)
            if isinstance(exc, ValueError | OperationError):
                raise web.HTTPBadRequest(text=f"cannot answer this offer: {exc}\n") from exc
            raise
        self._sessions.add(session)
        session.on_close(publication.on_end(lambda: self._sessions.close_soon(session)))
        _log_viewer("viewer joined", publication, viewer_id)
        session.on_close(lambda: _log_viewer("viewer left", publication, viewer_id))
        return self._sessions.answer(session)

    async def close_all(self) -> None:
        await self._sessions.close_all()

    async def _answer(
        self, session: PeerSession, offer: RTCSessionDescription, publication: Publication
    ) -> None:
        pc = session.pc
        # Transceivers (with H.264 as the only video codec) must exist before the
        # offer is applied: that is when aiortc settles the codecs of the answer.
        # One subscription per kind: further m-lines of a kind are answered inactive.
        offered = dict.fromkeys(offered_kinds(offer))
        wanted = [kind for kind in offered if kind in publication.tracks]
        if not wanted:
            published = ", ".join(sorted(publication.tracks)) or "nothing"
            raise ValueError(f"it asks for no track this publisher has ({published})")
        for kind in wanted:
            track = publication.tracks[kind].subscribe()
            # A sender that never started (the viewer never connected) does not stop
            # its track: stopped here, it leaves the publication's fan-out either way.
            session.on_close(track.stop)
            transceiver = pc.addTransceiver(track, direction="sendonly")
            send_shared_payloads(transceiver.sender, track)
            if kind is TrackKind.VIDEO:
                transceiver.setCodecPreferences(h264_only())
                forward_keyframe_requests(transceiver.sender, publication.request_keyframe)
        self._sessions.use_ice_settings(session)
        await pc.setRemoteDescription(offer)
        await pc.setLocalDescription(await pc.createAnswer())


def _on_janus(app_id: str, room_id: str) -> str:
    room = f"/rooms/{quote(app_id, safe='')}/{quote(room_id, safe='')}"
    return (
        f"room {room_id!r} is hosted on Janus, which makes the offer to its viewers, so "
        f"WHEP cannot play it: open the room page {room}, or GET {room}/access with this "
        "token for Janus's URL, the room's id and its pin\n"
    )


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
