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
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import OperationError
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from relaystream.rtc.encoded_receiver import forward_encoded, request_keyframe
from relaystream.rtc.room import Publication, RoomRegistry, TrackKind, UserAlreadyPublishing
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
    ) -> None:
        self._rooms = rooms
        self._app_key_for = app_key_for
        self._reserved_user = reserved_user
        self._sessions = PeerSessions("/whip/sessions/")

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/whip/{app_id}/{room_id}/{user_id}", self.publish),
            self._sessions.route(),
            web.options("/whip/{tail:.*}", preflight),
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
        require_sdp(request)
        offer = RTCSessionDescription(sdp=await request.text(), type="offer")
        try:
            kinds = frozenset(offered_kinds(offer))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"cannot answer this offer: {exc}\n") from exc
        if not kinds:
            raise web.HTTPBadRequest(text="cannot answer this offer: it has no audio or video\n")
        if self._reserved_user and await self._reserved_user(app_id, room_id, user_id):
            raise web.HTTPConflict(text=f"user {user_id!r} is a relay task's in room {room_id!r}\n")
        try:
            publication = self._rooms.publish(app_id, room_id, user_id, kinds)
        except UserAlreadyPublishing as exc:
            raise web.HTTPConflict(text=f"{exc}\n") from exc
        try:
            session = await self._answer(offer, publication)
        except (ValueError, OperationError) as exc:
            publication.end()
            raise web.HTTPBadRequest(text=f"cannot answer this offer: {exc}\n") from exc
        except BaseException:
            publication.end()
            raise
        logger.info("WHIP publisher %s joined room %s/%s", user_id, app_id, room_id)
        return self._sessions.answer(session)

    async def close_all(self) -> None:
        await self._sessions.close_all()

    async def _answer(self, offer: RTCSessionDescription, publication: Publication) -> PeerSession:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        session = PeerSession(pc)
        forwarders: list[asyncio.Task[None]] = []
        try:
            # One receiving transceiver per kind, made before the offer is applied so
            # that video settles on H.264 (the only codec a room carries).
            for kind in publication.tracks:
                transceiver = pc.addTransceiver(kind.value, direction="recvonly")
                forward_encoded(transceiver.receiver)
                if kind is TrackKind.VIDEO:
                    transceiver.setCodecPreferences(h264_only())
                    publication.tracks[kind].request_keyframe = partial(
                        request_keyframe, transceiver.receiver
                    )

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                kind = TrackKind(track.kind)
                forwarders.append(asyncio.ensure_future(_forward(track, kind, publication)))

            await pc.setRemoteDescription(offer)
            answer = await pc.createAnswer()
            if TrackKind.VIDEO in publication.tracks and "H264" not in answer.sdp:
                raise ValueError("its video offers no H.264 with packetization-mode 1")
            await pc.setLocalDescription(answer)
        except BaseException:
            await pc.close()
            raise

        def leave() -> None:
            for forwarder in forwarders:
                forwarder.cancel()
            publication.end()

        session.on_close(leave)
        self._sessions.add(session)
        return session


async def _forward(track: MediaStreamTrack, kind: TrackKind, publication: Publication) -> None:
    """Hand each encoded frame the publisher sends to the room, as it arrives."""
    while True:
        try:
            packet = await track.recv()
        except MediaStreamError:
            return
        if isinstance(packet, av.Packet):  # always, for a receiver that forwards
            publication.send(kind, packet)
