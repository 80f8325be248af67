"""Publishing relays into a Janus VideoRoom over Janus's HTTP API.

relaystream creates each room (H.264 + Opus) on first use and publishes each task into
it as a VideoRoom publisher named after the task's UserId, with one aiortc peer
connection whose sender tracks hand Janus the task's encoded packets (never decoded).
A room's id, pin and secret are derived from the app's AppKey and the room's name, so
they survive restarts and several nodes agree on them without sharing state; the pin is
what relaystream hands a viewer whose subscribe token it has checked.

Each publisher holds its own Janus session, kept alive by a long poll that is also how
Janus's events (the answer, a hangup) arrive; losing it is a lost room link.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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

JANUS_TIMEOUT_S = 10.0
_ROOM_EXISTS = 427
# Room ids stay below 2**53, so the room page's JavaScript reads them exactly.
_ROOM_ID_BITS = 52


class JanusError(Exception):
    """Janus answered a request with an error."""

    def __init__(self, message: str, *, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class JanusRoomAccess:
    """What a viewer needs to join a relaystream room on Janus."""

    room: int
    pin: str = field(repr=False)


@dataclass(frozen=True)
class JanusViewerAccess:
    """What the room page needs to watch a room on Janus, straight from Janus: handed
    out only to a viewer whose subscribe token was checked."""

    url: str  # Janus's HTTP API, as browsers reach it
    room: int
    pin: str = field(repr=False)


def janus_room_access(app_id: str, app_key: str, room_id: str) -> JanusRoomAccess:
    """The Janus room of ``(app_id, room_id)``: its id and pin, from the AppKey."""
    digest = _derive(app_key, f"room:{app_id}/{room_id}")
    room = int.from_bytes(digest[:8], "big") >> (64 - _ROOM_ID_BITS)
    return JanusRoomAccess(room=room or 1, pin=digest[8:24].hex())


def _room_secret(app_id: str, app_key: str, room_id: str) -> str:
    return _derive(app_key, f"secret:{app_id}/{room_id}").hex()


def _derive(app_key: str, label: str) -> bytes:
    return hmac.new(app_key.encode(), label.encode(), hashlib.sha256).digest()


class JanusSession:
    """One Janus session with one VideoRoom handle, over the HTTP API."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self._http = http
        self._url = url.rstrip("/")
        self.session_id = 0
        self.handle_id = 0

    async def open(self) -> None:
        self.session_id = (await self._post(self._url, {"janus": "create"}))["data"]["id"]
        attach = {"janus": "attach", "plugin": "janus.plugin.videoroom"}
        self.handle_id = (await self._post(self._session_url, attach))["data"]["id"]

    @property
    def _session_url(self) -> str:
        return f"{self._url}/{self.session_id}"

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """A synchronous VideoRoom request (create, listparticipants...): its data."""
        answer = await self._post(
            f"{self._session_url}/{self.handle_id}", {"janus": "message", "body": body}
        )
        data: dict[str, Any] = answer.get("plugindata", {}).get("data", {})
        if "error_code" in data:
            raise JanusError(str(data.get("error")), code=int(data["error_code"]))
        return data

    async def message(self, body: dict[str, Any], jsep: dict[str, str] | None = None) -> None:
        """An asynchronous request; its outcome arrives as an event (``next_event``).
        Without an SDP the ``jsep`` member is left out: Janus refuses an empty one."""
        request: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        await self._post(f"{self._session_url}/{self.handle_id}", request)

    async def end_of_candidates(self) -> None:
        """Every candidate is in our SDP already: Janus waits for this before it calls
        ICE done (it assumes trickle otherwise)."""
        await self._post(
            f"{self._session_url}/{self.handle_id}",
            {"janus": "trickle", "candidate": {"completed": True}},
        )

    async def next_event(self) -> dict[str, Any]:
        """The next event of the session (a long poll, which also keeps it alive)."""
        async with self._http.get(
            self._session_url,
            params={"maxev": "1", "rid": secrets.token_hex(4)},
            timeout=aiohttp.ClientTimeout(total=60),
        ) as response:
            event: dict[str, Any] = await response.json(content_type=None)
        if event.get("janus") == "error":
            raise JanusError(str(event.get("error", {}).get("reason")))
        return event

    async def destroy(self) -> None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, JanusError):
            await self._post(self._session_url, {"janus": "destroy"})

    async def _post(self, url: str, message: dict[str, Any]) -> dict[str, Any]:
        message = {**message, "transaction": secrets.token_hex(8)}
        async with self._http.post(
            url, json=message, timeout=aiohttp.ClientTimeout(total=JANUS_TIMEOUT_S)
        ) as response:
            answer: dict[str, Any] = await response.json(content_type=None)
        if answer.get("janus") == "error":
            error = answer.get("error", {})
            raise JanusError(str(error.get("reason")), code=int(error.get("code", 0)))
        return answer


class JanusPublisher:
    """A task publishing in a Janus VideoRoom."""

    def __init__(
        self,
        target: str,
        http: aiohttp.ClientSession,
        session: JanusSession,
        pc: RTCPeerConnection,
        tracks: dict[TrackKind, ForwardedTrack],
        keyframe_requests: KeyframeRequests,
    ) -> None:
        self._target = target
        self._http = http
        self._session = session
        self._pc = pc
        self._tracks = tracks
        self._keyframe_requests = keyframe_requests
        self._lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._events: asyncio.Task[None] | None = None

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "failed":
                self._lose("the media connection to Janus failed")

    @property
    def target(self) -> str:
        return self._target

    @property
    def healthy(self) -> bool:
        return not self._lost.done() and self._pc.connectionState != "failed"

    def follow_events(self) -> None:
        self._events = asyncio.ensure_future(self._follow_events())

    def send(self, kind: TrackKind, packet: av.Packet[Any]) -> None:
        track = self._tracks.get(kind)
        if track is not None:
            track.offer(packet)

    def on_keyframe_request(self, handler: Callable[[], None]) -> None:
        self._keyframe_requests.subscribe(handler)

    async def link_lost(self) -> str:
        return await asyncio.shield(self._lost)

    async def leave(self) -> None:
        if self._events is not None:
            self._events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._events
        self._keyframe_requests.close()
        for track in self._tracks.values():
            track.finish()
        # Destroying the session takes the publisher out of the room at once.
        await self._session.destroy()
        with contextlib.suppress(Exception):
            await self._pc.close()
        await self._http.close()

    def _lose(self, detail: str) -> None:
        if not self._lost.done():
            self._lost.set_result(detail)

    async def _follow_events(self) -> None:
        while True:
            try:
                event = await self._session.next_event()
            except (aiohttp.ClientError, TimeoutError, JanusError, ValueError) as exc:
                self._lose(f"lost the Janus session: {exc}")
                return
            if event.get("janus") in {"hangup", "detached"}:
                self._lose(f"Janus ended the publisher: {event.get('reason', event['janus'])}")
                return


class JanusRoomConnector:
    """Joins an app's rooms as VideoRoom publishers on the Janus at ``url``."""

    def __init__(
        self,
        url: str,
        app_key_for: AppKeyLookup,
        ice_addresses: IceAddresses | None = None,
        *,
        browser_url: str | None = None,
    ) -> None:
        self._url = url
        self._browser_url = browser_url or url
        self._app_key_for = app_key_for
        self._ice_addresses = ice_addresses or IceAddresses()

    def viewer_access(self, app_id: str, room_id: str) -> JanusViewerAccess | None:
        """The room's Janus access for a viewer; None for an unknown AppId. The caller
        checks the viewer's subscribe token first."""
        app_key = self._app_key_for(app_id)
        if app_key is None:
            return None
        access = janus_room_access(app_id, app_key, room_id)
        return JanusViewerAccess(url=self._browser_url, room=access.room, pin=access.pin)

    async def join(self, request: JoinRequest) -> RoomPublisher:
        app_key = check_publish_token(self._app_key_for, request)
        app_id, room_id, user_id = request.app_id, request.room_id, request.user_id
        access = janus_room_access(app_id, app_key, room_id)
        http = aiohttp.ClientSession()
        session = JanusSession(http, self._url)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        keyframe_requests = KeyframeRequests()
        tracks: dict[TrackKind, ForwardedTrack] = {}
        for kind in (TrackKind.AUDIO, TrackKind.VIDEO):
            track = tracks[kind] = ForwardedTrack(kind, on_stop=lambda _: None)
            transceiver = pc.addTransceiver(track, direction="sendonly")
            if kind is TrackKind.VIDEO:
                transceiver.setCodecPreferences(h264_only())
                forward_keyframe_requests(transceiver.sender, keyframe_requests.request)
        publisher = JanusPublisher(
            f"janus {self._url} room {access.room}", http, session, pc, tracks, keyframe_requests
        )
        try:
            await session.open()
            await self._create_room(session, access, _room_secret(app_id, app_key, room_id))
            use_ice_addresses(pc, self._ice_addresses)
            await pc.setLocalDescription(await pc.createOffer())
            assert pc.localDescription is not None
            join = {
                "request": "joinandconfigure",
                "ptype": "publisher",
                "room": access.room,
                "pin": access.pin,
                "display": user_id,
                "audio": True,
                "video": True,
            }
            await session.message(join, {"type": "offer", "sdp": pc.localDescription.sdp})
            await session.end_of_candidates()
            answer = await self._answer(session)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        except BaseException as exc:
            await publisher.leave()
            if isinstance(exc, JoinRefused):
                raise
            if isinstance(exc, aiohttp.ClientError | TimeoutError | JanusError | ValueError):
                raise JoinRefused(f"Janus at {self._url}: {exc}", token_invalid=False) from exc
            raise
        publisher.follow_events()
        logger.info("publishing %s/%s/%s into Janus room %s", app_id, room_id, user_id, access.room)
        return publisher

    async def _create_room(
        self, session: JanusSession, access: JanusRoomAccess, secret: str
    ) -> None:
        try:
            await session.request(
                {
                    "request": "create",
                    "room": access.room,
                    "pin": access.pin,
                    "secret": secret,
                    "videocodec": "h264",
                    "audiocodec": "opus",
                    "h264_profile": "42e01f",
                    "publishers": 100,
                    "is_private": True,
                }
            )
        except JanusError as exc:
            if exc.code != _ROOM_EXISTS:
                raise

    async def _answer(self, session: JanusSession) -> str:
        async with asyncio.timeout(JANUS_TIMEOUT_S):
            while True:
                event = await session.next_event()
                data = event.get("plugindata", {}).get("data", {})
                if "error_code" in data:
                    raise JoinRefused(
                        f"Janus refused the publisher: {data.get('error')}", token_invalid=False
                    )
                jsep = event.get("jsep")
                if jsep and jsep.get("type") == "answer":
                    return str(jsep["sdp"])
