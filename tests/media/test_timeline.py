"""Stories for the source timeline: whatever a source's clock does, output time starts
near 0, only moves forward, and never leaves a gap where the source jumped."""

from __future__ import annotations

import pytest

from relaystream.media.timeline import Timeline

FRAME_S = 0.04


def play(timeline: Timeline, track: int, times: list[float]) -> list[float]:
    return [round(timeline.rebase(track, t, FRAME_S), 6) for t in times]


def test_output_starts_at_zero_whatever_the_source_clock() -> None:
    assert play(Timeline(), 0, [5000.0, 5000.04, 5000.08]) == [0.0, 0.04, 0.08]


def test_a_jump_forward_is_closed_up_not_waited_for() -> None:
    timeline = Timeline()

    out = play(timeline, 0, [10.0, 10.04, 1010.08, 1010.12])

    assert out == [0.0, 0.04, 0.08, 0.12]
    assert timeline.discontinuities == 1


def test_a_jump_back_continues_where_the_track_ended() -> None:
    timeline = Timeline()

    out = play(timeline, 0, [10.0, 10.04, 3.0, 3.04])

    assert out == [0.0, 0.04, 0.08, 0.12]


def test_even_a_small_step_back_never_makes_output_go_back() -> None:
    out = play(Timeline(), 0, [10.0, 10.04, 10.08, 10.0, 10.04])

    assert out == sorted(out) and len(set(out)) == len(out)


def test_a_short_real_gap_is_kept() -> None:
    # Half a second missing from a live stream plays as the gap it is.
    assert play(Timeline(), 0, [0.0, 0.5]) == [0.0, 0.5]


def test_tracks_keep_their_offset_and_each_closes_its_own_jump() -> None:
    timeline = Timeline()
    video = [timeline.rebase(0, 100.0, FRAME_S)]
    audio = [timeline.rebase(1, 100.02, 0.02)]
    video.append(timeline.rebase(0, 900.0, FRAME_S))  # both jump together...
    audio.append(timeline.rebase(1, 900.02, 0.02))  # ...and arrive interleaved

    assert audio[0] == pytest.approx(0.02)  # muxed 20 ms after the video, kept
    assert video[1] == pytest.approx(0.04)
    assert audio[1] == pytest.approx(0.04)


def test_a_restart_resumes_every_track_at_the_end_of_the_longest() -> None:
    timeline = Timeline()
    play(timeline, 0, [0.0, 0.04, 0.08])  # video ends at 0.12
    timeline.rebase(1, 0.0, 0.2)  # audio ends at 0.2

    timeline.restart()

    assert timeline.rebase(1, 0.0, 0.02) == pytest.approx(0.2)
    assert timeline.rebase(0, 0.0, FRAME_S) == pytest.approx(0.2)


def test_packets_squeezed_one_tick_apart_are_spread_to_their_own_duration() -> None:
    # What the ffmpeg CLI makes of overlapping live segments: the clock "repaired" into
    # steps of one 90 kHz tick. Played as they are, a viewer would get 100 frames/s.
    tick = 1 / 90_000
    out = play(Timeline(), 0, [0.0, 0.04, 0.08, 0.08 + tick, 0.08 + 2 * tick, 0.08 + 3 * tick])

    assert out == pytest.approx([0.0, 0.04, 0.08, 0.12, 0.16, 0.2])
