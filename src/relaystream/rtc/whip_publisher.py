"""Publishing a relay to any WHIP endpoint (another relaystream node, MediaMTX, LiveKit's
WHIP ingress, a CDN) instead of the embedded SFU.

Each task joins with one aiortc peer connection: its offer (sendonly audio + video,
H.264 packetization-mode 1 and Opus) is POSTed to the app's URL template with the
configured bearer token, the ``201``'s ``Location`` is kept, and leaving DELETEs it.
Packets are never decoded: the sender tracks are the embedded SFU's ``ForwardedTrack``,
which hands aiortc's sender the task's ``av.Packet``s to packetize as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin

import aiohttp
import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from relaystream.rtc.ice import IceAddresses, use_ice_addresses
from relaystream.rtc.keyframe_requests import KeyframeRequests, forward_keyframe_requests
from relaystream.rtc.publisher import (
    JoinRefused,
    JoinRequest,
    RoomPublisher,
    check_publish_token,
)
from relaystream.rtc.room import ForwardedTrack, TrackKind
from relaystream.rtc.signaling import h264_only
from relaystream.rtc.token import AppKeyLookup

logger = logging.getLogger(__name__)

WHIP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class WhipTarget:
    """Where an app's relays are published: ``url_template`` takes ``{app_id}``,
    ``{room_id}`` and ``{user_id}`` (percent-encoded); ``bearer_token`` goes in every
    request's ``Authorization``."""

    url_template: str
    bearer_token: str = ""

    def url_for(self, app_id: str, room_id: str, user_id: str) -> str:
        return self.url_template.format(
            app_id=quote(app_id, safe=""),
            room_id=quote(room_id, safe=""),
            user_id=quote(user_id, safe=""),
        )

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.bearer_token}"} if self.bearer_token else {}


class WhipRoomPublisher:
    """One task's WHIP session: sends its packets, DELETEs the session on leave."""

    def __init__(
        self,
        target: WhipTarget,
        pc: RTCPeerConnection,
        tracks: dict[TrackKind, ForwardedTrack],
        keyframe_requests: KeyframeRequests,
    ) -> None:
        self._target = target
        self.target_url = target.url_template
        self.session_url: str | None = None
        self._pc = pc
        self._tracks = tracks
        self._keyframe_requests = keyframe_requests
        self._lost = asyncio.Event()

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in {"failed", "closed"}:
                self._lost.set()

    @property
    def target(self) -> str:
        return self.target_url

    @property
    def healthy(self) -> bool:
        return self._pc.connectionState in {"new", "connecting", "connected"}

    def send(self, kind: TrackKind, packet: av.Packet[Any]) -> None:
        track = self._tracks.get(kind)
        if track is not None:
            track.offer(packet)

    def on_keyframe_request(self, handler: Callable[[], None]) -> None:
        self._keyframe_requests.subscribe(handler)

    async def link_lost(self) -> str:
        await self._lost.wait()
        return f"the WHIP session at {self.session_url} was lost"

    async def leave(self) -> None:
        self._keyframe_requests.close()
        for track in self._tracks.values():
            track.finish()
        if self.session_url is not None:
            try:
                async with (
                    aiohttp.ClientSession(
                        timeout=aiohttp.ClientTimeout(total=WHIP_TIMEOUT_S)
                    ) as http,
                    http.delete(self.session_url, headers=self._target.headers()),
                ):
                    pass
            except (aiohttp.ClientError, TimeoutError) as exc:
                logger.warning("WHIP DELETE failed: %s", exc)
        with contextlib.suppress(Exception):
            await self._pc.close()


async def publish_with_whip(
    target: WhipTarget,
    *,
    app_id: str,
    room_id: str,
    user_id: str,
    ice_addresses: IceAddresses,
) -> RoomPublisher:
    """Open a WHIP session announcing audio and video; JoinRefused when the endpoint
    does not take it."""
    url = target.url_for(app_id, room_id, user_id)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    keyframe_requests = KeyframeRequests()
    tracks: dict[TrackKind, ForwardedTrack] = {}
    for kind in (TrackKind.AUDIO, TrackKind.VIDEO):
        track = tracks[kind] = ForwardedTrack(kind, on_stop=lambda _: None)
        transceiver = pc.addTransceiver(track, direction="sendonly")
        if kind is TrackKind.VIDEO:
            transceiver.setCodecPreferences(h264_only())
            forward_keyframe_requests(transceiver.sender, keyframe_requests.request)
    publisher = WhipRoomPublisher(target, pc, tracks, keyframe_requests)
    publisher.target_url = url.partition("?")[0]  # a query may carry a credential
    try:
        use_ice_addresses(pc, ice_addresses)
        await pc.setLocalDescription(await pc.createOffer())
        assert pc.localDescription is not None
        answer, location = await _post_offer(url, target, pc.localDescription.sdp)
        publisher.session_url = urljoin(url, location)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    except BaseException as exc:
        await publisher.leave()
        if isinstance(exc, JoinRefused):
            raise
        if isinstance(exc, aiohttp.ClientError | TimeoutError | ValueError):
            raise JoinRefused(f"WHIP endpoint {url}: {exc}", token_invalid=False) from exc
        raise
    logger.info("publishing %s/%s/%s to WHIP endpoint %s", app_id, room_id, user_id, url)
    return publisher


async def _post_offer(url: str, target: WhipTarget, offer: str) -> tuple[str, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WHIP_TIMEOUT_S)) as http,
        http.post(
            url,
            data=offer,
            headers={"Content-Type": "application/sdp", **target.headers()},
        ) as response,
    ):
        text = await response.text()
        if response.status != 201:
            raise JoinRefused(
                f"WHIP endpoint {url} answered {response.status}: {text.strip()[:200]}",
                token_invalid=False,
            )
        location = response.headers.get("Location")
        if not location:
            raise JoinRefused(f"WHIP endpoint {url} gave no Location", token_invalid=False)
        return text, location


class WhipRoomConnector:
    """Joins an app's rooms on a WHIP endpoint, after the checks the embedded room makes."""

    def __init__(
        self,
        target: WhipTarget,
        app_key_for: AppKeyLookup,
        ice_addresses: IceAddresses | None = None,
    ) -> None:
        self._target = target
        self._app_key_for = app_key_for
        self._ice_addresses = ice_addresses or IceAddresses()

    async def join(self, request: JoinRequest) -> RoomPublisher:
        check_publish_token(self._app_key_for, request)
        return await publish_with_whip(
            self._target,
            app_id=request.app_id,
            room_id=request.room_id,
            user_id=request.user_id,
            ice_addresses=self._ice_addresses,
        )
