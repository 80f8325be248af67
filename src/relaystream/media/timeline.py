"""Continuous output time from a source's timestamps, whatever the source does.

A source's clock may jump forward or back (an encoder restart, a spliced playlist, a
33-bit MPEG-TS wrap) and a looping VOD starts again from zero. Downstream, the pacer and
the frame-rate filter must see time that only moves forward at the media's own pace:
a +1000 s jump fed to an ``fps`` filter is 1000 s of duplicated frames. So every packet
is rebased here, before it is decoded or forwarded: a discontinuity is closed up, never
filled.

Each track keeps its own offset, because packets of two tracks that jumped together
arrive interleaved; each is re-anchored where its own previous packet ended, which keeps
them in sync within a packet's duration. A loop re-anchors every track at the same
point, the end of the longest track, so audio and video start each pass together.
"""

from __future__ import annotations

from dataclasses import dataclass

# A packet further than this from where its track's previous packet ended is a
# discontinuity. Forward gaps shorter than this are kept (a real gap in a live stream
# the pacer plays as it came).
FORWARD_JUMP_S = 1.0
# A packet that starts before the previous one is half over overlaps it: a clock that
# went back, or one "repaired" by a remuxer into steps of one tick (the ffmpeg CLI does
# that to a live DASH stream whose segments overlap). Either way it is a jump: output
# must stay monotonic and paced for the viewer.
OVERLAP_FRACTION = 0.5
# When a packet does not say how long it lasts.
DEFAULT_DURATION_S = 0.02


@dataclass
class _TrackClock:
    offset_s: float
    end_s: float | None = None  # output time where the track's last packet ended
    last_source_s: float | None = None
    last_duration_s: float = DEFAULT_DURATION_S


class Timeline:
    """Maps each track's source time (decode order) to output time starting near 0."""

    def __init__(self) -> None:
        self._tracks: dict[int, _TrackClock] = {}
        self._origin_s: float | None = None
        self._resume_at_s: float | None = None
        self.discontinuities = 0

    def rebase(self, track: int, source_s: float, duration_s: float | None) -> float:
        """The output time of a packet at ``source_s`` lasting ``duration_s``."""
        duration_s = duration_s if duration_s and duration_s > 0 else DEFAULT_DURATION_S
        clock = self._tracks.get(track)
        if clock is None:
            if self._origin_s is None:
                self._origin_s = source_s
            start_s = self._resume_at_s if self._resume_at_s is not None else 0.0
            # Tracks seen after the first keep their offset from it: a/v sync as muxed.
            clock = self._tracks[track] = _TrackClock(offset_s=start_s - self._origin_s)
        elif clock.end_s is not None and clock.last_source_s is not None:
            expected_s = clock.end_s - clock.offset_s
            gap_s = source_s - expected_s
            overlaps = gap_s < -OVERLAP_FRACTION * clock.last_duration_s
            if gap_s > FORWARD_JUMP_S or overlaps:
                self.discontinuities += 1
                clock.offset_s = clock.end_s - source_s
        output_s = source_s + clock.offset_s
        clock.last_source_s = source_s
        clock.last_duration_s = duration_s
        clock.end_s = max(clock.end_s or output_s, output_s + duration_s)
        return output_s

    @property
    def end_s(self) -> float:
        """Where the longest track has ended so far."""
        return max((c.end_s or 0.0 for c in self._tracks.values()), default=0.0)

    def restart(self) -> None:
        """The source starts over (a loop, a reopen): every track resumes at ``end_s``."""
        self._resume_at_s = self.end_s
        self._origin_s = None
        self._tracks.clear()
