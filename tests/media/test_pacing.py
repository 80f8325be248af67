"""Stories for the pacer: a VOD plays at real time, a live source reaches its live edge.

A fake clock stands in for the wall clock: the pacer takes its clock and sleep, and
these stories are about when packets go out, not about the machine's timers.
"""

from __future__ import annotations

import itertools

import pytest

from relaystream.media.pacing import LIVE_CATCH_UP_LIMIT_S, LIVE_CATCH_UP_RATE, RealtimePacer

FPS = 30
FRAME_S = 1 / FPS


# -- real-time pacing ----------------------------------------------------------------


class FakeClock:
    """A wall clock that only moves when the pacer sleeps or the test says so."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def pacer_on(clock: FakeClock) -> RealtimePacer:
    return RealtimePacer(clock=clock, sleep=clock.sleep, max_lag_s=1.0, max_wait_s=5.0)


def test_media_time_is_played_at_wall_clock_speed() -> None:
    clock = FakeClock()
    pacer = pacer_on(clock)

    for media_time_s in (10.0, 10.0, 10.5, 11.0, 12.0):  # a stream that starts at 10 s
        pacer.wait_for(media_time_s)

    assert clock.sleeps == [0.5, 0.5, 1.0]
    assert clock.now == 102.0


def test_a_source_that_is_slightly_late_is_not_waited_for() -> None:
    clock = FakeClock()
    pacer = pacer_on(clock)
    pacer.wait_for(0.0)

    clock.now += 1.5  # the network stalled half a second more than the media lasted
    pacer.wait_for(1.0)
    pacer.wait_for(1.2)  # still behind: played at once, catching up

    assert clock.sleeps == []
    pacer.wait_for(2.0)
    assert clock.sleeps == [0.5]


def test_a_source_far_behind_is_reanchored_instead_of_played_in_a_burst() -> None:
    clock = FakeClock()
    pacer = pacer_on(clock)
    pacer.wait_for(0.0)

    clock.now += 30.0  # a live stream that stalled for half a minute
    pacer.wait_for(1.0)
    pacer.wait_for(1.5)

    # Media time 1.0 is the new "now": what follows is paced from there.
    assert clock.sleeps == [0.5]


def test_a_jump_ahead_in_timestamps_is_reanchored_instead_of_waited_for() -> None:
    clock = FakeClock()
    pacer = pacer_on(clock)
    pacer.wait_for(0.0)

    pacer.wait_for(3600.0)  # a discontinuity: an hour ahead
    pacer.wait_for(3600.25)

    assert clock.sleeps == [0.25]


def test_a_wait_up_to_the_limit_is_honoured() -> None:
    clock = FakeClock()
    pacer = pacer_on(clock)
    pacer.wait_for(0.0)

    pacer.wait_for(5.0)

    assert clock.sleeps == [5.0]


# -- a live source catching up with its live edge ---------------------------------------


def live_source_lags(
    pacer: RealtimePacer, clock: FakeClock, *, read_ahead_s: float, duration_s: float
) -> list[float]:
    """How long after it was produced each frame of a live 30 fps source left the pacer.

    The source produces frame ``i`` at ``i / FPS`` s after it started; opening it read
    ``read_ahead_s`` of it ahead (a probe), after which the demuxer hands over each frame
    as it arrives, blocking until then.
    """
    started_at = clock.now
    clock.now += read_ahead_s
    lags = []
    for index in range(round(duration_s * FPS)):
        produced_at = started_at + index * FRAME_S
        clock.now = max(clock.now, produced_at)
        pacer.wait_for(index * FRAME_S)
        lags.append(clock.now - produced_at)
    return lags


def test_a_live_probe_backlog_is_caught_up_and_the_live_edge_then_passes_at_once() -> None:
    clock = FakeClock()
    pacer = RealtimePacer(clock=clock, sleep=clock.sleep, catch_up_rate=LIVE_CATCH_UP_RATE)

    lags = live_source_lags(pacer, clock, read_ahead_s=2.0, duration_s=10.0)

    assert lags[0] == pytest.approx(2.0)  # the first frame, at once, 2 s behind
    # Each media second of backlog takes 1/1.5 s: 2 s are caught up within 6 s of media.
    last_second = lags[-FPS:]
    assert max(last_second) < 1e-6
    assert clock.sleeps  # the backlog was paced, not dumped


def test_catching_up_is_never_faster_than_its_rate() -> None:
    clock = FakeClock()
    pacer = RealtimePacer(clock=clock, sleep=clock.sleep, catch_up_rate=LIVE_CATCH_UP_RATE)

    lags = live_source_lags(pacer, clock, read_ahead_s=2.0, duration_s=4.0)

    sent_at = [index * FRAME_S + lag for index, lag in enumerate(lags)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent_at)]
    assert min(gaps) >= FRAME_S / LIVE_CATCH_UP_RATE - 1e-9
    assert min(gaps) < FRAME_S - 1e-6  # and it did play faster than real time


def test_without_catch_up_a_live_backlog_is_held_for_as_long_as_the_relay_runs() -> None:
    # What a VOD wants (a file is read ahead by nature), and why live sources catch up.
    clock = FakeClock()
    pacer = pacer_on(clock)

    lags = live_source_lags(pacer, clock, read_ahead_s=2.0, duration_s=10.0)

    assert min(lags) == pytest.approx(2.0)


def test_a_live_source_arriving_in_small_bursts_is_passed_on_without_added_delay() -> None:
    # Frames produced over 100 ms arrive together at its end, as TCP and servers batch.
    clock = FakeClock()
    pacer = RealtimePacer(clock=clock, sleep=clock.sleep, catch_up_rate=LIVE_CATCH_UP_RATE)
    started_at = clock.now
    burst = 3
    sent_late = []
    for index in range(10 * FPS):
        arrives_at = started_at + (index // burst + 1) * burst * FRAME_S
        clock.now = max(clock.now, arrives_at)
        pacer.wait_for(index * FRAME_S)
        sent_late.append(clock.now - arrives_at)

    assert max(sent_late[-FPS:]) < 1e-6  # once caught up, each frame leaves as it arrives


def test_a_file_taken_for_live_catches_up_only_a_probe_then_plays_at_real_time() -> None:
    # A file that does not say its duration is read as fast as the network allows.
    clock = FakeClock()
    pacer = RealtimePacer(clock=clock, sleep=clock.sleep, catch_up_rate=LIVE_CATCH_UP_RATE)
    started_at = clock.now
    sent_at = []
    for index in range(20 * FPS):
        pacer.wait_for(index * FRAME_S)
        sent_at.append(clock.now)

    played_s = sent_at[-1] - started_at
    assert played_s == pytest.approx((20 * FPS - 1) * FRAME_S - LIVE_CATCH_UP_LIMIT_S)
    last_gaps = [later - earlier for earlier, later in itertools.pairwise(sent_at[-FPS:])]
    assert last_gaps == pytest.approx([FRAME_S] * (FPS - 1))


def test_a_catch_up_rate_must_be_faster_than_real_time() -> None:
    with pytest.raises(ValueError, match="above 1"):
        RealtimePacer(catch_up_rate=1.0)
