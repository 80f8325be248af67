"""WHEP: watch a publisher in a room with one HTTP offer/answer (no trickle ICE).

``POST /whep/{app_id}/{room_id}/{user_id}`` with an SDP offer and ``Authorization:
Bearer <token>`` (an AccessToken with SubscribeStream for that room) answers ``201`` with
the SDP answer, candidates included, and a session URL that ``DELETE`` ends.
"""

from __future__ import annotations

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import OperationError

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


class WhepEndpoint:
    """The WHEP routes and the sessions they created."""

    def __init__(self, rooms: RoomRegistry, app_key_for: AppKeyLookup) -> None:
        self._rooms = rooms
        self._app_key_for = app_key_for
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
        authorize(
            request,
            self._app_key_for,
            app_id=app_id,
            room_id=room_id,
            privilege=Privilege.SUBSCRIBE_STREAM,
        )
        require_sdp(request)
        publication = self._rooms.find_publication(app_id, room_id, user_id)
        if publication is None or publication.ended:
            raise web.HTTPNotFound(text=f"no publisher {user_id!r} in room {room_id!r}\n")
        offer = RTCSessionDescription(sdp=await request.text(), type="offer")
        try:
            session = await self._answer(offer, publication)
        except (ValueError, OperationError) as exc:
            raise web.HTTPBadRequest(text=f"cannot answer this offer: {exc}\n") from exc
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
