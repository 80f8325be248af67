"""Stories for the RoomTimeline: successive workers' clocks joined into one rising clock."""

from __future__ import annotations

from relaystream.media.wire import EncodedPacket, MessageKind
from relaystream.tasks.timeline import RoomTimeline


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def video(pts_s: float, keyframe: bool = False) -> EncodedPacket:
    return EncodedPacket(MessageKind.VIDEO, b"v", round(pts_s * 90_000), keyframe)


def audio(pts_s: float) -> EncodedPacket:
    return EncodedPacket(MessageKind.AUDIO, b"a", round(pts_s * 48_000))


def room_s(packet: EncodedPacket | None) -> float:
    assert packet is not None
    return packet.pts / (90_000 if packet.kind is MessageKind.VIDEO else 48_000)


def test_the_first_worker_starts_the_room_clock_at_zero() -> None:
    timeline = RoomTimeline(FakeClock())
    timeline.new_worker()

    assert room_s(timeline.rebase(video(0.5, keyframe=True))) == 0.0
    assert room_s(timeline.rebase(audio(0.52))) == 0.02


def test_a_new_worker_continues_after_the_last_packet_plus_the_real_gap() -> None:
    clock = FakeClock()
    timeline = RoomTimeline(clock)
    timeline.new_worker()
    timeline.rebase(video(0.0, keyframe=True))
    timeline.rebase(video(10.0))
    clock.now += 3.0  # a reconnect took 3 s

    timeline.new_worker()
    first = timeline.rebase(video(0.0, keyframe=True))
    sound = timeline.rebase(audio(0.0))

    assert room_s(first) == 13.0
    assert room_s(sound) == 13.0  # one offset for both tracks: still in sync


def test_a_new_workers_video_starts_at_a_keyframe() -> None:
    timeline = RoomTimeline(FakeClock())
    timeline.new_worker()
    timeline.rebase(video(0.0, keyframe=True))

    timeline.new_worker()
    assert timeline.rebase(video(0.0)) is None
    assert timeline.rebase(audio(0.0)) is not None  # audio needs no keyframe
    assert timeline.rebase(video(0.04, keyframe=True)) is not None


def test_timestamps_never_go_backwards_whatever_a_worker_sends() -> None:
    timeline = RoomTimeline(FakeClock())
    timeline.new_worker()
    stamps = [timeline.rebase(video(t, keyframe=True)) for t in (1.0, 2.0, 1.5, 1.5)]

    pts = [p.pts for p in stamps if p is not None]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
