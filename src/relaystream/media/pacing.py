"""Pacing a relay's output in real time, and how a live one reaches its live edge.

A file is read faster than it plays, so the pipeline sleeps until each packet's media
time has come: a VOD plays at exactly real time from its first packet.

A live source is different: opening it reads ahead (FFmpeg probes a FLV or MPEG-TS
stream for its analyze duration before the first packet comes out), and anchoring the
clock at the first packet would hold that backlog, and so delay every later packet by
it, for as long as the relay runs. A source that delivers packets as it produces them
(RTMP, SRT, RTSP, a live HTTP-FLV or MPEG-TS body) therefore catches up: a packet that
is early was read from a backlog, since at the live edge a packet arrives no earlier
than its time, so the backlog is played faster than real time, by a bounded rate, until
packets stop being early. Nothing is dropped and timestamps are untouched, so a remux
still starts on its keyframe and a viewer's clock never goes backwards; a player only
sees the first seconds arrive a little fast, and time-stretches them (audio) or shows
them sooner (video). A source whose clock runs a little fast is absorbed the same way
instead of piling up delay.

Sources that deliver whole segments at once (HLS, DASH) keep plain real-time pacing: a
segment is not a backlog but the way they arrive, and playing it fast would only leave a
gap before the next one. Their latency is seconds by nature.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# How much faster than real time a live backlog is played. At 1.5x, a 0.5 s probe
# backlog is gone after 1 s of wall time (1.5 s of media); faster would make the
# fast-forward visible and exceed what players smoothly time-stretch, slower would keep
# the start behind for longer.
LIVE_CATCH_UP_RATE = 1.5


class RealtimePacer:
    """Sleeps so that media time advances with wall-clock time.

    A source that falls behind (a live stream that stalled) or jumps ahead (a
    timestamp discontinuity) is re-anchored instead of being played in a burst or
    waited for. With ``catch_up_rate``, packets that are early are played up to that
    many times faster than real time, until they are not (see the module docstring).
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_lag_s: float = 1.0,
        max_wait_s: float = 5.0,
        catch_up_rate: float | None = None,
    ) -> None:
        if catch_up_rate is not None and catch_up_rate <= 1.0:
            raise ValueError(f"catch_up_rate must be above 1, not {catch_up_rate}")
        self._clock = clock
        self._sleep = sleep
        self._max_lag_s = max_lag_s
        self._max_wait_s = max_wait_s
        # The share of each newly reached media second a catch-up saves in wall time.
        self._saved_per_s = 0.0 if catch_up_rate is None else 1.0 - 1.0 / catch_up_rate
        # Wall-clock time at which media time 0 is due.
        self._origin: float | None = None
        # The furthest media time paced so far: audio and video interleave slightly out
        # of order, and only new media time counts towards a catch-up.
        self._furthest_s = 0.0

    def wait_for(self, media_time_s: float) -> None:
        now = self._clock()
        delay = 0.0 if self._origin is None else self._origin + media_time_s - now
        if self._origin is None or delay > self._max_wait_s or delay < -self._max_lag_s:
            self._origin = now - media_time_s
            self._furthest_s = media_time_s
            return
        step_s = max(0.0, media_time_s - self._furthest_s)
        self._furthest_s = max(self._furthest_s, media_time_s)
        if delay > 0 and self._saved_per_s:
            # Early: a backlog. Move the clock's origin earlier by the share of this
            # step the faster rate saves, never past the point where it is due now.
            saved_s = min(delay, step_s * self._saved_per_s)
            self._origin -= saved_s
            delay -= saved_s
        if delay > 0:
            self._sleep(delay)
