"""What WHEP and WHIP share: one HTTP offer/answer, a bearer token, a session URL.

Both protocols answer ``POST`` with ``201``, the SDP answer (candidates included, no
trickle ICE) and a ``Location`` that ``DELETE`` ends; both take an AccessToken as
``Authorization: Bearer``; both let players on other origins call them. This module owns
those rules and the sessions' lifetime (a peer that never connects, fails or leaves is
closed, and everything it held is freed), the bounds on an offer (offer_bounds.py), the
caps on open sessions (session_caps.py) and the ICE settings of every peer connection
(ice.py, ice_servers.py); whep.py and whip.py own only what flows over the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    sdp,
)
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from relaystream.rtc.ice import IceAddresses, use_ice_addresses
from relaystream.rtc.ice_servers import IceServer, link_headers
from relaystream.rtc.offer_bounds import OfferBounds, read_offer
from relaystream.rtc.room import TrackKind
from relaystream.rtc.session_caps import RoomKey, SessionCaps, SessionLimits, SessionSlot
from relaystream.rtc.token import (
    AppKeyLookup,
    Privilege,
    TokenError,
    parse_token,
    verify_token,
)

logger = logging.getLogger(__name__)

# A peer that has not connected by then never will (ICE gives up well before).
DEFAULT_CONNECT_TIMEOUT_S = 30.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CORS_PATH_PREFIXES = ("/whep/", "/whip/")
_CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Expose-Headers": "Location, Link",
}

_PRIVILEGE_NAMES = {
    Privilege.SUBSCRIBE_STREAM: "SubscribeStream",
    Privilege.PUBLISH_STREAM: "PublishStream",
}


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Let WHEP players and WHIP clients served from any origin use these endpoints.

    Safe with ``*``: the credential is a bearer token the page holds, never a cookie.
    """
    if not request.path.startswith(_CORS_PATH_PREFIXES):
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(_CORS_HEADERS)
        raise
    response.headers.update(_CORS_HEADERS)
    return response


@dataclass(frozen=True)
class SignalingSettings:
    """What the operator sets in ``[rtc]`` for WHEP and WHIP sessions."""

    offer_bounds: OfferBounds = field(default_factory=OfferBounds)
    session_limits: SessionLimits = field(default_factory=SessionLimits)
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    ice_addresses: IceAddresses = field(default_factory=IceAddresses)
    ice_servers: tuple[IceServer, ...] = ()


def bearer_token(request: web.Request, privilege: Privilege) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise web.HTTPUnauthorized(
            text=f"a Bearer token with {_PRIVILEGE_NAMES[privilege]} privilege is required\n",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


def authorize_viewer(request: web.Request, app_key_for: AppKeyLookup) -> tuple[str, str]:
    """The path's ``(app_id, room_id)``, once the request's token may watch that room."""
    app_id, room_id = request.match_info["app_id"], request.match_info["room_id"]
    authorize(
        request, app_key_for, app_id=app_id, room_id=room_id, privilege=Privilege.SUBSCRIBE_STREAM
    )
    return app_id, room_id


def authorize(
    request: web.Request,
    app_key_for: AppKeyLookup,
    *,
    app_id: str,
    room_id: str,
    privilege: Privilege,
    user_id: str | None = None,
) -> str:
    """Check the request's bearer token for ``privilege`` in the room; return its user id.

    ``user_id`` None accepts any user (a viewer names itself); otherwise the token must
    be for that user (a publisher publishes as itself only). 401 without a token, 403 for
    a token that does not grant this, 404 for an unknown AppId.
    """
    token = bearer_token(request, privilege)
    app_key = app_key_for(app_id)
    if app_key is None:
        raise web.HTTPNotFound(text=f"unknown AppId {app_id!r}\n")
    try:
        token_user = parse_token(token)[0].user_id
        verify_token(
            token,
            app_id=app_id,
            app_key=app_key,
            room_id=room_id,
            user_id=token_user if user_id is None else user_id,
            privilege=privilege,
        )
    except TokenError as exc:
        raise web.HTTPForbidden(text=f"token refused: {exc}\n") from exc
    return token_user


async def read_sdp_offer(request: web.Request, bounds: OfferBounds) -> RTCSessionDescription:
    """The request's SDP offer: 415 unless it is ``application/sdp``, 413/400 when it is
    beyond ``bounds`` (checked before anything parses it)."""
    if request.content_type != "application/sdp":
        raise web.HTTPUnsupportedMediaType(text="Content-Type must be application/sdp\n")
    return RTCSessionDescription(sdp=await read_offer(request, bounds), type="offer")


def h264_only() -> list[RTCRtpCodecCapability]:
    """Video codecs a room carries: H.264 packetization-mode 1 (plus its RTX)."""
    return [
        codec
        for codec in RTCRtpSender.getCapabilities("video").codecs
        if codec.mimeType == "video/rtx"
        or (codec.mimeType == "video/H264" and codec.parameters.get("packetization-mode") == "1")
    ]


def offered_kinds(offer: RTCSessionDescription) -> list[TrackKind]:
    """The audio/video m-lines of an offer, in order; ValueError if it does not parse."""
    try:
        media = sdp.SessionDescription.parse(offer.sdp).media
    except Exception as exc:
        raise ValueError("the offer is not valid SDP") from exc
    return [TrackKind(m.kind) for m in media if m.kind in {"audio", "video"}]


class PeerSession:
    """One peer connection made by an offer/answer, and what to undo when it closes."""

    def __init__(self, pc: RTCPeerConnection, slot: SessionSlot) -> None:
        self.session_id = secrets.token_urlsafe(16)
        self.pc = pc
        self._cleanups: list[Callable[[], object]] = [slot.release]

    def on_close(self, cleanup: Callable[[], object]) -> None:
        """Run ``cleanup`` when the session closes: everything that still references the
        session (listeners, timers, subscriptions) must be undone there, or the whole
        peer connection stays in memory."""
        self._cleanups.append(cleanup)

    def run_cleanups(self) -> None:
        for cleanup in self._cleanups:
            try:
                cleanup()
            except Exception:
                logger.exception("cleanup of session %s failed", self.session_id)
        self._cleanups.clear()


class PeerSessions:
    """The sessions of one endpoint, each reachable at ``{path_prefix}{session_id}``.

    ``caps`` may be shared by several endpoints: the node's cap counts them all.
    """

    def __init__(
        self,
        path_prefix: str,
        settings: SignalingSettings | None = None,
        caps: SessionCaps | None = None,
    ) -> None:
        self._path_prefix = path_prefix
        self.settings = settings or SignalingSettings()
        self._caps = caps or SessionCaps(self.settings.session_limits)
        # Anyone may send a preflight; only a client whose token passed gets TURN secrets.
        self._public_links = link_headers(self.settings.ice_servers, with_credentials=False)
        self._links = link_headers(self.settings.ice_servers, with_credentials=True)
        self._sessions: dict[str, PeerSession] = {}
        self._closing: set[asyncio.Future[None]] = set()

    def __len__(self) -> int:
        return len(self._sessions)

    def route(self) -> web.RouteDef:
        return web.delete(self._path_prefix + "{session_id}", self.delete)

    async def preflight(self, _: web.Request) -> web.Response:
        """The answer to anyone's ``OPTIONS``: the servers that need no credentials."""
        response = web.Response(status=204)
        self._add_links(response, self._public_links)
        return response

    def preflight_for_token_holder(self) -> web.Response:
        """The answer to an ``OPTIONS`` whose token passed: every server, TURN included."""
        response = web.Response(status=204)
        self._add_links(response, self._links)
        return response

    def open(self, room: RoomKey) -> PeerSession:
        """A new session with its peer connection, if ``room`` and the node have room for
        one (else HTTP 503). Add the transceivers, then ``use_ice_settings``; ``add`` it
        once answered, or ``discard`` it."""
        slot = self._caps.admit(room)
        return PeerSession(RTCPeerConnection(RTCConfiguration(iceServers=[])), slot)

    def use_ice_settings(self, session: PeerSession) -> None:
        """Bind and announce the configured ICE addresses (before the answer is made)."""
        use_ice_addresses(session.pc, self.settings.ice_addresses)

    async def discard(self, session: PeerSession) -> None:
        """Free a session that was never added (its offer could not be answered)."""
        session.run_cleanups()
        with contextlib.suppress(Exception):
            await session.pc.close()

    def add(self, session: PeerSession) -> None:
        """Keep ``session`` until it is deleted, fails, or never connects."""
        self._sessions[session.session_id] = session
        pc = session.pc

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in {"failed", "closed"}:
                await self.close(session)

        timer = asyncio.get_running_loop().call_later(
            self.settings.connect_timeout_s, self._close_if_unconnected, session
        )
        session.on_close(timer.cancel)  # a pending timer would hold the session

    def answer(self, session: PeerSession) -> web.Response:
        """The ``201 Created`` that carries the session's SDP answer and its URL."""
        assert session.pc.localDescription is not None
        response = web.Response(
            status=201,
            content_type="application/sdp",
            text=session.pc.localDescription.sdp,
            headers={"Location": self._path_prefix + session.session_id},
        )
        self._add_links(response, self._links)
        return response

    @staticmethod
    def _add_links(response: web.StreamResponse, links: list[str]) -> None:
        for link in links:
            response.headers.add("Link", link)

    async def delete(self, request: web.Request) -> web.Response:
        session = self._sessions.get(request.match_info["session_id"])
        if session is None:
            raise web.HTTPNotFound(text="no such session\n")
        await self.close(session)
        return web.Response(status=200)

    def close_soon(self, session: PeerSession) -> None:
        closing = asyncio.ensure_future(self.close(session))
        self._closing.add(closing)  # keep a reference until it is done
        closing.add_done_callback(self._closing.discard)

    async def close(self, session: PeerSession) -> None:
        if self._sessions.pop(session.session_id, None) is None:
            return
        await self.discard(session)

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(s) for s in tuple(self._sessions.values())))

    def _close_if_unconnected(self, session: PeerSession) -> None:
        if session.pc.connectionState != "connected":
            logger.info("session %s never connected; closing it", session.session_id)
            self.close_soon(session)
