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
sees the first seconds arrive early, as after a network hiccup. How much is caught up
is bounded too: a live source is never read further ahead than its probe, so a source
still early beyond that is a file that did not say its duration (taken for live), and
it plays at real time like any other file.

Sources that deliver whole segments at once (HLS, DASH) keep plain real-time pacing: a
segment is not a backlog but the way they arrive, and playing it fast would only leave a
gap before the next one. Their latency is seconds by nature.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# How much faster than real time a live backlog is played. At 1.5x, the usual few
# hundred milliseconds an audio+video stream is read ahead are gone within a second, and
# the 2 s probe of a single-stream FLV within 4 s; faster would make the fast-forward
# visible and audio harder for players to stretch, slower would keep the start behind
# for longer.
LIVE_CATCH_UP_RATE = 1.5
# The most a live source can be read ahead between two anchors: the 2 s probe
# (formats.py) and a keyframe interval's worth of the other stream.
LIVE_CATCH_UP_LIMIT_S = 3.0


class RealtimePacer:
    """Sleeps so that media time advances with wall-clock time.

    A source that falls behind (a live stream that stalled) or jumps ahead (a
    timestamp discontinuity) is re-anchored instead of being played in a burst or
    waited for. With ``catch_up_rate``, packets that are early are played up to that
    many times faster than real time, until they are not or ``catch_up_limit_s`` was
    caught up since the last anchor (see the module docstring).
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_lag_s: float = 1.0,
        max_wait_s: float = 5.0,
        catch_up_rate: float | None = None,
        catch_up_limit_s: float = LIVE_CATCH_UP_LIMIT_S,
    ) -> None:
        if catch_up_rate is not None and catch_up_rate <= 1.0:
            raise ValueError(f"catch_up_rate must be above 1, not {catch_up_rate}")
        self._clock = clock
        self._sleep = sleep
        self._max_lag_s = max_lag_s
        self._max_wait_s = max_wait_s
        # The share of each newly reached media second a catch-up saves in wall time.
        self._saved_per_s = 0.0 if catch_up_rate is None else 1.0 - 1.0 / catch_up_rate
        self._catch_up_limit_s = catch_up_limit_s
        # What may still be caught up since the clock was last anchored.
        self._catch_up_left_s = catch_up_limit_s
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
            self._catch_up_left_s = self._catch_up_limit_s
            return
        step_s = max(0.0, media_time_s - self._furthest_s)
        self._furthest_s = max(self._furthest_s, media_time_s)
        if delay > 0 and self._saved_per_s:
            # Early: a backlog. Move the clock's origin earlier by the share of this
            # step the faster rate saves, never past the point where it is due now.
            saved_s = min(delay, step_s * self._saved_per_s, self._catch_up_left_s)
            self._catch_up_left_s -= saved_s
            self._origin -= saved_s
            delay -= saved_s
        if delay > 0:
            self._sleep(delay)
