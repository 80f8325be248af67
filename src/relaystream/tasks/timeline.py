"""The room's clock across media workers.

Each worker stamps its packets from about zero (video on the 90 kHz clock, audio on
48 kHz, one origin for both). A task's publication outlives its workers, and a viewer's
player expects RTP timestamps that keep rising with real time, so the run maps every
worker's clock onto one room clock: a new worker's first packet lands after the last
one sent, plus the real time that passed in between. Audio and video of one worker get
the same offset, which keeps them in sync.

This layer only joins workers. Smoothing a source's own discontinuities (jumps, wraps,
loops) is the worker's job, where the source is known.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from relaystream.media.wire import EncodedPacket, MessageKind

# The smallest step between two workers' packets, so the first new one is never a
# duplicate timestamp even when the switch took no measurable time.
_MIN_STEP_S = 0.02
_TICKS_PER_S = {MessageKind.VIDEO: 90_000, MessageKind.AUDIO: 48_000}


@dataclass
class _Track:
    last_pts: int | None = None


class RoomTimeline:
    """Rebases packets of successive workers onto one rising room clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tracks = {kind: _Track() for kind in _TICKS_PER_S}
        self._offset_s: float | None = None
        self._last_sent_at: float | None = None
        self._last_room_s = 0.0
        self._awaiting_keyframe = False

    def new_worker(self) -> None:
        """The next packet comes from a new worker, on a clock of its own."""
        self._offset_s = None
        self._awaiting_keyframe = True

    def rebase(self, packet: EncodedPacket) -> EncodedPacket | None:
        """The packet on the room clock, or None while a new worker's video has not
        reached a keyframe yet (a viewer could not decode what comes before it)."""
        kind = packet.kind
        ticks = _TICKS_PER_S[kind]
        if kind is MessageKind.VIDEO and self._awaiting_keyframe:
            if not packet.keyframe:
                return None
            self._awaiting_keyframe = False
        now = self._clock()
        if self._offset_s is None:
            self._offset_s = self._start_offset(packet.pts / ticks, now)
        track = self._tracks[kind]
        pts = round((packet.pts / ticks + self._offset_s) * ticks)
        if track.last_pts is not None and pts <= track.last_pts:
            pts = track.last_pts + 1  # never backwards, whatever a worker sends
        track.last_pts = pts
        self._last_room_s = max(self._last_room_s, pts / ticks)
        self._last_sent_at = now
        return replace(packet, pts=pts)

    def _start_offset(self, first_s: float, now: float) -> float:
        if self._last_sent_at is None:
            return -first_s
        gap_s = max(now - self._last_sent_at, _MIN_STEP_S)
        return self._last_room_s + gap_s - first_s
