"""How a relay task joins a room and publishes: one interface, room servers behind it.

The embedded SFU is the default implementation; an external SFU (Janus, a WHIP
endpoint) implements the same two protocols.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import av

from relaystream.rtc.room import Publication, RoomRegistry, TrackKind, UserAlreadyPublishing
from relaystream.rtc.token import AppKeyLookup, Privilege, TokenError, verify_token


class JoinRefused(Exception):
    """The room would not let the virtual user in; ``token_invalid`` says whether the
    token was the reason."""

    def __init__(self, reason: str, *, token_invalid: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.token_invalid = token_invalid


class RoomPublisher(Protocol):
    """A virtual user in a room, publishing encoded packets."""

    def send(self, kind: TrackKind, packet: av.Packet[Any]) -> None: ...

    def on_keyframe_request(self, handler: Callable[[], None]) -> None:
        """Call ``handler`` when viewers need a keyframe (PLI/FIR), at most about once a
        second: a transcoding publisher encodes one; a forwarding one cannot and waits
        for the source's next."""
        ...

    @property
    def target(self) -> str:
        """Where it publishes, for the task's stats (never holds a secret)."""
        ...

    @property
    def healthy(self) -> bool:
        """Whether the link to the room server is up now."""
        ...

    async def link_lost(self) -> str:
        """Return (with what happened) when the link to the room server is lost for
        good; the run then leaves and joins again, as it reconnects a source."""
        ...

    async def leave(self) -> None: ...


@dataclass(frozen=True)
class JoinRequest:
    """Who joins which room, and the token that must allow it to send ``sends``."""

    app_id: str
    room_id: str
    user_id: str
    token: str
    sends: frozenset[TrackKind]
    # False for a task rejoining after a restart or reconnect: its token was checked
    # when it started.
    check_expiry: bool = True


class RoomConnector(Protocol):
    async def join(self, request: JoinRequest) -> RoomPublisher:
        """Join as the request's user, announcing both an audio and a video track (so a
        later change of what is sent needs no renegotiation by viewers)."""
        ...


_PRIVILEGE_FOR_KIND = {
    TrackKind.AUDIO: Privilege.PUBLISH_AUDIO,
    TrackKind.VIDEO: Privilege.PUBLISH_VIDEO,
}


def check_publish_token(app_key_for: AppKeyLookup, request: JoinRequest) -> str:
    """What a real room checks before it lets a publisher in; JoinRefused if refused.
    Returns the app's AppKey."""
    app_key = app_key_for(request.app_id)
    if app_key is None:
        raise JoinRefused(f"unknown AppId {request.app_id!r}", token_invalid=True)
    try:
        for kind in request.sends:
            verify_token(
                request.token,
                app_id=request.app_id,
                app_key=app_key,
                room_id=request.room_id,
                user_id=request.user_id,
                privilege=_PRIVILEGE_FOR_KIND[kind],
                check_expiry=request.check_expiry,
            )
    except TokenError as exc:
        raise JoinRefused(str(exc), token_invalid=True) from exc
    return app_key


class EmbeddedPublisher:
    def __init__(self, publication: Publication) -> None:
        self._publication = publication

    @property
    def target(self) -> str:
        return "embedded"

    @property
    def healthy(self) -> bool:
        return not self._publication.ended

    async def link_lost(self) -> str:
        await asyncio.Future()  # in-process: there is no link to lose
        return ""

    def send(self, kind: TrackKind, packet: av.Packet[Any]) -> None:
        self._publication.send(kind, packet)

    def on_keyframe_request(self, handler: Callable[[], None]) -> None:
        self._publication.on_keyframe_request(handler)

    async def leave(self) -> None:
        self._publication.end()


class EmbeddedRoomConnector:
    """Joins rooms of this server's own SFU, checking the token as a real room would."""

    def __init__(self, rooms: RoomRegistry, app_key_for: AppKeyLookup) -> None:
        self._rooms = rooms
        self._app_key_for = app_key_for

    async def join(self, request: JoinRequest) -> RoomPublisher:
        check_publish_token(self._app_key_for, request)
        try:
            publication = self._rooms.publish(
                request.app_id, request.room_id, request.user_id, frozenset(TrackKind)
            )
        except UserAlreadyPublishing as exc:
            raise JoinRefused(str(exc), token_invalid=False) from exc
        return EmbeddedPublisher(publication)


class PerAppRoomConnector:
    """Joins each app's rooms through the connector its config chose (``default`` for
    apps that chose none: the embedded SFU)."""

    def __init__(self, default: RoomConnector, per_app: dict[str, RoomConnector]) -> None:
        self._default = default
        self._per_app = per_app

    async def join(self, request: JoinRequest) -> RoomPublisher:
        return await self._per_app.get(request.app_id, self._default).join(request)
