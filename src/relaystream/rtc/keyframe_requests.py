"""Viewers' keyframe requests (RTCP PLI and FIR), gathered per publication and rate limited.

A viewer that lost a packet of a keyframe, or joined where the GOP cache could not
help, asks the sender for a new keyframe. aiortc's ``RTCRtpSender`` handles PLI and FIR
by calling its own ``_send_keyframe()`` (aiortc 1.16, ``_handle_rtcp_packet``), which only
flags the sender's encoder for the next frame; a sender that forwards encoded packets,
as ours do, has no encoder, so the request would go nowhere. ``forward_keyframe_requests``
wraps that method on one sender instance (never the class): aiortc's own behaviour is
kept and the request also reaches the publication. It can go when aiortc offers a public
event for incoming PLI/FIR.

Every viewer of a publication shares its one encoder, so one viewer asking in a loop
must not turn the stream into keyframes only: ``KeyframeRequests`` passes at most one
request per ``min_interval_s`` to the publisher, and a request that arrives sooner is
folded into one that is passed on when the interval ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_MIN_INTERVAL_S = 1.0


def forward_keyframe_requests(sender: Any, on_request: Callable[[], None]) -> None:
    """Call ``on_request`` whenever ``sender`` (an ``RTCRtpSender``) receives PLI or FIR."""
    flag_encoder = sender._send_keyframe

    def send_keyframe() -> None:
        flag_encoder()
        on_request()

    sender._send_keyframe = send_keyframe


class KeyframeRequests:
    """The publisher's handlers for keyframe requests, called at most once per interval."""

    def __init__(
        self,
        min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._handlers: list[Callable[[], None]] = []
        self._last_passed_at: float | None = None
        self._deferred: asyncio.TimerHandle | None = None
        self.received = 0
        self.passed_on = 0

    @property
    def pending(self) -> bool:
        """Whether a request waits for the interval to end."""
        return self._deferred is not None

    def subscribe(self, handler: Callable[[], None]) -> Callable[[], None]:
        """Call ``handler`` on each request passed on; returns what unsubscribes it."""
        self._handlers.append(handler)

        def unsubscribe() -> None:
            if handler in self._handlers:
                self._handlers.remove(handler)

        return unsubscribe

    def request(self) -> None:
        self.received += 1
        if self._deferred is not None:
            return  # already folded into the next one
        now = self._clock()
        wait_s = (
            0.0
            if self._last_passed_at is None
            else self._last_passed_at + self.min_interval_s - now
        )
        if wait_s <= 0:
            self._pass_on()
        else:
            self._deferred = asyncio.get_running_loop().call_later(wait_s, self._pass_deferred)

    def close(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
        self._handlers.clear()

    def _pass_deferred(self) -> None:
        self._deferred = None
        self._pass_on()

    def _pass_on(self) -> None:
        self._last_passed_at = self._clock()
        self.passed_on += 1
        for handler in tuple(self._handlers):
            try:
                handler()
            except Exception:
                logger.exception("keyframe request handler failed")
