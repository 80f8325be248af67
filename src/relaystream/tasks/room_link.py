"""A run's link to its room server, kept up: a lost link is joined again with backoff.

The run sends through ``RoomLink`` as through any publisher. When the room server says
the link is lost (an external SFU went away, a WHIP session failed), ``keep_joined``
leaves the dead publication and joins again, backing off like a source reconnect;
packets sent meanwhile are dropped (the idle timer still ends a task that never gets
back). The embedded SFU never loses its link, so for it this is a plain pass-through.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import av

from relaystream.rtc.publisher import JoinRefused, RoomPublisher
from relaystream.rtc.room import TrackKind

logger = logging.getLogger(__name__)


class RoomLink:
    def __init__(
        self,
        publisher: RoomPublisher,
        rejoin: Callable[[], Awaitable[RoomPublisher]],
        *,
        sleep: Callable[[float], Awaitable[None]],
        backoff_initial_s: float,
        backoff_max_s: float,
    ) -> None:
        self._publisher: RoomPublisher | None = publisher
        self._target = publisher.target
        self._rejoin = rejoin
        self._sleep = sleep
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._keyframe_handlers: list[Callable[[], None]] = []
        self.rejoins = 0

    @property
    def target(self) -> str:
        return self._target

    @property
    def healthy(self) -> bool:
        return self._publisher is not None and self._publisher.healthy

    def send(self, kind: TrackKind, packet: av.Packet[Any]) -> None:
        if self._publisher is not None:
            self._publisher.send(kind, packet)

    def on_keyframe_request(self, handler: Callable[[], None]) -> None:
        self._keyframe_handlers.append(handler)
        if self._publisher is not None:
            self._publisher.on_keyframe_request(handler)

    async def keep_joined(self, on_lost: Callable[[str], Awaitable[None]]) -> JoinRefused:
        """Rejoin whenever the link is lost; returns only when a rejoin is refused."""
        while True:
            assert self._publisher is not None
            detail = await self._publisher.link_lost()
            logger.warning("room link to %s lost: %s", self._target, detail)
            await self._drop_publisher()
            await on_lost(detail)
            backoff_s = self._backoff_initial_s
            while self._publisher is None:
                await self._sleep(backoff_s)
                backoff_s = min(backoff_s * 2, self._backoff_max_s)
                try:
                    publisher = await self._rejoin()
                except JoinRefused as exc:
                    if exc.token_invalid:
                        return exc
                    logger.warning("rejoining %s failed: %s", self._target, exc.reason)
                    continue
                for handler in self._keyframe_handlers:
                    publisher.on_keyframe_request(handler)
                self._publisher = publisher
                self.rejoins += 1

    async def leave(self) -> None:
        await self._drop_publisher()

    async def _drop_publisher(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            with contextlib.suppress(Exception):
                await publisher.leave()
