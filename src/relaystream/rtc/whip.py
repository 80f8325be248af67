"""WHIP: publish into a room from a browser, OBS or GStreamer with one offer/answer.

``POST /whip/{app_id}/{room_id}/{user_id}`` with an SDP offer (sendonly audio and/or
video; video must offer H.264 packetization-mode 1) and ``Authorization: Bearer
<token>`` (an AccessToken with PublishStream for that user in that room) answers ``201``
with the SDP answer and a session URL that ``DELETE`` ends. The publisher joins the room
as ``user_id`` while connected, exactly like a relay task: its frames are forwarded to
the room's viewers as they arrive, never decoded (see encoded_receiver.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial

import av
from aiohttp import web
from aiortc import RTCSessionDescription
from aiortc.exceptions import OperationError
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from relaystream.rtc.encoded_receiver import forward_encoded, request_keyframe
from relaystream.rtc.room import Publication, RoomRegistry, TrackKind, UserAlreadyPublishing
from relaystream.rtc.room_owner import RoomOwnerLookup, redirect_to_room_owner
from relaystream.rtc.session_caps import SessionCaps
from relaystream.rtc.signaling import (
    PeerSession,
    PeerSessions,
    SignalingSettings,
    authorize,
    h264_only,
    offered_kinds,
    read_sdp_offer,
)
from relaystream.rtc.token import AppKeyLookup, Privilege

logger = logging.getLogger(__name__)

# Whether a user id belongs to a relay task of the room, even one between two workers
# (and so not in the room at this instant): (app_id, room_id, user_id) -> bool.
ReservedUserCheck = Callable[[str, str, str], Awaitable[bool]]


class WhipEndpoint:
    """The WHIP routes and the publishers they let in."""

    def __init__(
        self,
        rooms: RoomRegistry,
        app_key_for: AppKeyLookup,
        *,
        reserved_user: ReservedUserCheck | None = None,
        settings: SignalingSettings | None = None,
        caps: SessionCaps | None = None,
        room_owner: RoomOwnerLookup | None = None,
    ) -> None:
        self._rooms = rooms
        self._app_key_for = app_key_for
        self._reserved_user = reserved_user
        # Several nodes: the room's node, when another one hosts it.
        self._room_owner = room_owner
        self._sessions = PeerSessions("/whip/sessions/", settings, caps)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/whip/{app_id}/{room_id}/{user_id}", self.publish),
            self._sessions.route(),
            web.options("/whip/{tail:.*}", self._sessions.preflight),
        ]

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def publish(self, request: web.Request) -> web.Response:
        app_id = request.match_info["app_id"]
        room_id = request.match_info["room_id"]
        user_id = request.match_info["user_id"]
        authorize(
            request,
            self._app_key_for,
            app_id=app_id,
            room_id=room_id,
            user_id=user_id,
            privilege=Privilege.PUBLISH_STREAM,
        )
        await redirect_to_room_owner(request, self._room_owner, app_id, room_id)
        offer = await read_sdp_offer(request, self._sessions.settings.offer_bounds)
        try:
            kinds = frozenset(offered_kinds(offer))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"cannot answer this offer: {exc}\n") from exc
        if not kinds:
            raise web.HTTPBadRequest(text="cannot answer this offer: it has no audio or video\n")
        if self._reserved_user and await self._reserved_user(app_id, room_id, user_id):
            raise web.HTTPConflict(text=f"user {user_id!r} is a relay task's in room {room_id!r}\n")
        session = self._sessions.open((app_id, room_id))
        try:
            publication = self._rooms.publish(app_id, room_id, user_id, kinds)
        except UserAlreadyPublishing as exc:
            await self._sessions.discard(session)
            raise web.HTTPConflict(text=f"{exc}\n") from exc
        session.on_close(publication.end)
        try:
            await self._answer(session, offer, publication)
        except BaseException as exc:
            await self._sessions.discard(session)
            if isinstance(exc, ValueError | OperationError):
                raise web.HTTPBadRequest(text=f"cannot answer this offer: {exc}\n") from exc
            raise
        self._sessions.add(session)
        logger.info("WHIP publisher %s joined room %s/%s", user_id, app_id, room_id)
        return self._sessions.answer(session)

    async def close_all(self) -> None:
        await self._sessions.close_all()

    async def _answer(
        self, session: PeerSession, offer: RTCSessionDescription, publication: Publication
    ) -> None:
        pc = session.pc
        # One receiving transceiver per kind, made before the offer is applied so
        # that video settles on H.264 (the only codec a room carries).
        for kind in publication.tracks:
            transceiver = pc.addTransceiver(kind.value, direction="recvonly")
            forward_encoded(transceiver.receiver)
            if kind is TrackKind.VIDEO:
                transceiver.setCodecPreferences(h264_only())
                # Viewers' PLIs and new viewers with no GOP to replay reach the sender.
                publication.on_keyframe_request(partial(request_keyframe, transceiver.receiver))

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            kind = TrackKind(track.kind)
            forwarder = asyncio.ensure_future(_forward(track, kind, publication))
            session.on_close(forwarder.cancel)

        self._sessions.use_ice_settings(session)
        await pc.setRemoteDescription(offer)
        answer = await pc.createAnswer()
        if TrackKind.VIDEO in publication.tracks and "H264" not in answer.sdp:
            raise ValueError("its video offers no H.264 with packetization-mode 1")
        await pc.setLocalDescription(answer)


async def _forward(track: MediaStreamTrack, kind: TrackKind, publication: Publication) -> None:
    """Hand each encoded frame the publisher sends to the room, as it arrives."""
    while True:
        try:
            packet = await track.recv()
        except MediaStreamError:
            return
        if isinstance(packet, av.Packet):  # always, for a receiver that forwards
            publication.send(kind, packet)
