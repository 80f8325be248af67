"""Stories for the embedded SFU: who is in a room, and how packets reach subscribers."""

from __future__ import annotations

import asyncio
from fractions import Fraction
from typing import Any

import av
import pytest
from aiortc.mediastreams import MediaStreamError

from relaystream.rtc.room import (
    GOP_CACHE_MAX_PACKETS,
    SUBSCRIBER_QUEUE_PACKETS,
    ForwardedTrack,
    Publication,
    RoomEvent,
    RoomEventKind,
    RoomRegistry,
    TrackKind,
    UserAlreadyPublishing,
)

APP = "app"
ROOM = "room-1"
BOTH = frozenset({TrackKind.AUDIO, TrackKind.VIDEO})
VIDEO_FRAME_TICKS = 3000  # 30 fps on the 90 kHz clock of H.264
AUDIO_FRAME_TICKS = 960  # 20 ms on the 48 kHz clock of Opus


def video_packet(index: int, *, keyframe: bool = False) -> av.Packet[Any]:
    """The ``index``-th frame of a 30 fps stream; its pts tells frames apart."""
    packet = av.Packet(b"\x00\x00\x00\x01" + index.to_bytes(4, "big"))
    packet.pts = index * VIDEO_FRAME_TICKS
    packet.dts = packet.pts
    packet.time_base = Fraction(1, 90_000)
    packet.is_keyframe = keyframe
    return packet


def audio_packet(index: int) -> av.Packet[Any]:
    packet = av.Packet(b"opus" + index.to_bytes(4, "big"))
    packet.pts = index * AUDIO_FRAME_TICKS
    packet.dts = packet.pts
    packet.time_base = Fraction(1, 48_000)
    packet.is_keyframe = True  # every Opus frame decodes on its own
    return packet


def publish_video(publication: Publication, indexes: range, keyframe_every: int) -> None:
    for index in indexes:
        publication.send(TrackKind.VIDEO, video_packet(index, keyframe=index % keyframe_every == 0))


def frame_index(packet: av.Packet[Any]) -> int:
    assert packet.pts is not None
    return packet.pts // VIDEO_FRAME_TICKS


async def received(track: ForwardedTrack, count: int) -> list[int]:
    """The frame indexes of the next ``count`` packets the subscriber reads."""
    return [frame_index(await asyncio.wait_for(track.recv(), 1)) for _ in range(count)]


async def nothing_to_read(track: ForwardedTrack) -> bool:
    try:
        await asyncio.wait_for(track.recv(), 0.05)
    except TimeoutError:
        return True
    return False


def test_a_room_exists_while_someone_publishes_in_it() -> None:
    rooms = RoomRegistry()
    assert rooms.room(APP, ROOM) is None

    camera = rooms.publish(APP, ROOM, "camera", BOTH)
    screen = rooms.publish(APP, ROOM, "screen", frozenset({TrackKind.VIDEO}))

    room = rooms.room(APP, ROOM)
    assert room is not None
    assert set(room.publications) == {"camera", "screen"}
    assert rooms.find_publication(APP, ROOM, "screen") is screen
    assert set(screen.tracks) == {TrackKind.VIDEO}

    camera.end()
    assert rooms.room(APP, ROOM) is room
    assert rooms.find_publication(APP, ROOM, "camera") is None

    screen.end()
    assert rooms.room(APP, ROOM) is None
    assert rooms.find_publication(APP, ROOM, "screen") is None


def test_rooms_are_per_app() -> None:
    rooms = RoomRegistry()
    ours = rooms.publish(APP, ROOM, "camera", BOTH)
    theirs = rooms.publish("other-app", ROOM, "camera", BOTH)

    assert rooms.find_publication(APP, ROOM, "camera") is ours
    assert rooms.find_publication("other-app", ROOM, "camera") is theirs

    theirs.end()
    assert rooms.find_publication(APP, ROOM, "camera") is ours


def test_a_user_publishes_once_per_room_and_may_come_back_after_leaving() -> None:
    rooms = RoomRegistry()
    first = rooms.publish(APP, ROOM, "camera", BOTH)

    with pytest.raises(UserAlreadyPublishing, match="camera"):
        rooms.publish(APP, ROOM, "camera", BOTH)
    # The same user id in another room is someone else.
    rooms.publish(APP, "room-2", "camera", BOTH)

    first.end()
    again = rooms.publish(APP, ROOM, "camera", BOTH)
    assert rooms.find_publication(APP, ROOM, "camera") is again


def test_ending_a_publication_twice_tells_its_listeners_once() -> None:
    rooms = RoomRegistry()
    publication = rooms.publish(APP, ROOM, "camera", BOTH)
    ends: list[str] = []

    def broken_listener() -> None:
        raise RuntimeError("a bug in someone else's clean-up")

    publication.on_end(lambda: ends.append("first"))
    publication.on_end(broken_listener)  # does not stop the others from being told
    publication.on_end(lambda: ends.append("third"))

    publication.end()
    publication.end()

    assert ends == ["first", "third"]
    assert publication.ended


def test_a_stale_publication_ending_leaves_the_new_one_in_place() -> None:
    rooms = RoomRegistry()
    old = rooms.publish(APP, ROOM, "camera", BOTH)
    old.end()
    new = rooms.publish(APP, ROOM, "camera", BOTH)

    old.room.remove(old)  # a late clean-up of the old publication

    assert rooms.find_publication(APP, ROOM, "camera") is new


async def test_subscribers_receive_every_packet_in_order() -> None:
    rooms = RoomRegistry()
    publication = rooms.publish(APP, ROOM, "camera", BOTH)
    video = publication.tracks[TrackKind.VIDEO]
    audio = publication.tracks[TrackKind.AUDIO]
    first, second = video.subscribe(), video.subscribe()
    listener = audio.subscribe()

    publish_video(publication, range(0, 10), keyframe_every=5)
    for index in range(10):
        publication.send(TrackKind.AUDIO, audio_packet(index))

    assert await received(first, 10) == list(range(10))
    assert await received(second, 10) == list(range(10))
    sounds = [await asyncio.wait_for(listener.recv(), 1) for _ in range(10)]
    assert [p.pts for p in sounds] == [i * AUDIO_FRAME_TICKS for i in range(10)]
    assert first.kind == "video" and listener.kind == "audio"
    assert video.subscriber_count == 2
    assert video.packets_in == 10
    assert video.bytes_in == 10 * 8


async def test_a_viewer_joining_mid_gop_starts_at_the_last_keyframe() -> None:
    rooms = RoomRegistry()
    publication = rooms.publish(APP, ROOM, "camera", BOTH)
    publish_video(publication, range(0, 37), keyframe_every=30)  # keyframes at 0 and 30

    late = publication.tracks[TrackKind.VIDEO].subscribe()
    publish_video(publication, range(37, 40), keyframe_every=30)

    packets = [await asyncio.wait_for(late.recv(), 1) for _ in range(10)]
    assert [frame_index(p) for p in packets] == list(range(30, 40))
    assert packets[0].is_keyframe
    assert await nothing_to_read(late)


async def test_a_viewer_joining_before_any_keyframe_waits_for_one() -> None:
    rooms = RoomRegistry()
    publication = rooms.publish(APP, ROOM, "camera", BOTH)
    # The publisher started mid-GOP: nothing decodable has been seen yet.
    publish_video(publication, range(1, 5), keyframe_every=30)

    viewer = publication.tracks[TrackKind.VIDEO].subscribe()
    assert await nothing_to_read(viewer)

    publish_video(publication, range(5, 32), keyframe_every=30)
    assert await received(viewer, 27) == list(range(5, 32))


async def test_audio_is_not_cached_for_late_listeners() -> None:
    rooms = RoomRegistry()
    publication = rooms.publish(APP, ROOM, "camera", BOTH)
    for index in range(5):
        publication.send(TrackKind.AUDIO, audio_packet(index))

    late = publication.tracks[TrackKind.AUDIO].subscribe()
    publication.send(TrackKind.AUDIO, audio_packet(5))

    packet = await asyncio.wait_for(late.recv(), 1)
    assert packet.pts == 5 * AUDIO_FRAME_TICKS
    assert await nothing_to_read(late)


async def test_a_gop_longer_than_the_cache_is_not_replayed() -> None:
    rooms = RoomRegistry()
    publication = rooms.publish(APP, ROOM, "camera", BOTH)
    # A keyframe, then more frames than the cache keeps: the cache gives up on this GOP.
    publish_video(publication, range(0, GOP_CACHE_MAX_PACKETS + 10), keyframe_every=10_000)

    late = publication.tracks[TrackKind.VIDEO].subscribe()
    assert await nothing_to_read(late)


async def test_a_viewer_joining_a_long_gop_still_starts_at_its_keyframe() -> None:
    rooms = RoomRegistry()
    publication = rooms.publish(APP, ROOM, "camera", BOTH)
    # 30 fps with a keyframe every 9 s: 270 packets since the keyframe, under the cache
    # limit, so the cache is meant to give this viewer a picture at once.
    gop_packets = 270
    assert SUBSCRIBER_QUEUE_PACKETS < gop_packets < GOP_CACHE_MAX_PACKETS
    publish_video(publication, range(0, gop_packets), keyframe_every=10_000)

    late = publication.tracks[TrackKind.VIDEO].subscribe()

    first = await asyncio.wait_for(late.recv(), 0.5)
    assert first.is_keyframe
    assert first.pts == 0


async def test_a_subscriber_that_never_reads_loses_packets_until_a_keyframe() -> None:
    rooms = RoomRegistry()
    publication = rooms.publish(APP, ROOM, "camera", BOTH)
    video = publication.tracks[TrackKind.VIDEO]
    stalled, watching = video.subscribe(), video.subscribe()
    total = SUBSCRIBER_QUEUE_PACKETS + 60
    keyframe_every = SUBSCRIBER_QUEUE_PACKETS + 50

    watched: list[int] = []
    for index in range(total):
        # The publisher never waits: send is synchronous and returns at once.
        publish_video(publication, range(index, index + 1), keyframe_every)
        watched += await received(watching, 1)

    # The attentive subscriber saw everything, in order.
    assert watched == list(range(total))
    # The stalled one overflowed one packet after its queue filled, then skipped the
    # rest of that GOP: it resumes exactly at the next keyframe.
    resumed = await received(stalled, total - keyframe_every)
    assert resumed == list(range(keyframe_every, total))
    assert await nothing_to_read(stalled)
    assert stalled.packets_dropped == keyframe_every


async def test_audio_resumes_at_once_after_an_overflow() -> None:
    rooms = RoomRegistry()
    publication = rooms.publish(APP, ROOM, "camera", BOTH)
    stalled = publication.tracks[TrackKind.AUDIO].subscribe()

    for index in range(SUBSCRIBER_QUEUE_PACKETS + 3):
        publication.send(TrackKind.AUDIO, audio_packet(index))

    # The packet that found the queue full is kept: audio needs no keyframe.
    pts = [(await asyncio.wait_for(stalled.recv(), 1)).pts for _ in range(3)]
    newest = range(SUBSCRIBER_QUEUE_PACKETS, SUBSCRIBER_QUEUE_PACKETS + 3)
    assert pts == [i * AUDIO_FRAME_TICKS for i in newest]
    assert await nothing_to_read(stalled)
    assert stalled.packets_dropped == SUBSCRIBER_QUEUE_PACKETS


async def test_when_the_publication_ends_subscribers_drain_then_end() -> None:
    rooms = RoomRegistry()
    publication = rooms.publish(APP, ROOM, "camera", BOTH)
    video = publication.tracks[TrackKind.VIDEO]
    viewer = video.subscribe()
    publish_video(publication, range(0, 3), keyframe_every=30)

    publication.end()
    publish_video(publication, range(3, 5), keyframe_every=30)  # too late: ignored

    assert await received(viewer, 3) == [0, 1, 2]
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(viewer.recv(), 1)
    assert viewer.readyState == "ended"
    assert video.subscriber_count == 0
    with pytest.raises(MediaStreamError):
        await viewer.recv()


async def test_a_stalled_subscriber_still_learns_that_the_publication_ended() -> None:
    rooms = RoomRegistry()
    publication = rooms.publish(APP, ROOM, "camera", BOTH)
    stalled = publication.tracks[TrackKind.AUDIO].subscribe()
    for index in range(SUBSCRIBER_QUEUE_PACKETS):
        publication.send(TrackKind.AUDIO, audio_packet(index))

    publication.end()  # must not block on the full queue

    with pytest.raises(MediaStreamError):
        for _ in range(SUBSCRIBER_QUEUE_PACKETS + 1):
            await asyncio.wait_for(stalled.recv(), 1)


async def test_a_subscriber_that_stops_is_no_longer_fed() -> None:
    rooms = RoomRegistry()
    publication = rooms.publish(APP, ROOM, "camera", BOTH)
    video = publication.tracks[TrackKind.VIDEO]
    leaving, staying = video.subscribe(), video.subscribe()

    leaving.stop()
    publish_video(publication, range(0, 2), keyframe_every=30)

    assert video.subscriber_count == 1
    assert await received(staying, 2) == [0, 1]
    with pytest.raises(MediaStreamError):
        await leaving.recv()


async def test_subscribing_after_the_publication_ended_gives_an_ended_track() -> None:
    rooms = RoomRegistry()
    publication = rooms.publish(APP, ROOM, "camera", BOTH)
    video = publication.tracks[TrackKind.VIDEO]
    publication.end()

    # A viewer whose request was in flight while the publisher left.
    too_late = video.subscribe()

    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(too_late.recv(), 0.5)


def test_a_listener_added_after_the_end_is_told_at_once() -> None:
    rooms = RoomRegistry()
    publication = rooms.publish(APP, ROOM, "camera", BOTH)
    publication.end()
    ends: list[str] = []

    publication.on_end(lambda: ends.append("late"))

    assert ends == ["late"]


def test_room_listeners_learn_who_joins_and_leaves_until_they_stop_listening() -> None:
    rooms = RoomRegistry()
    events: list[RoomEvent] = []
    other_room: list[RoomEvent] = []
    stop = rooms.listen(APP, ROOM, events.append)
    rooms.listen(APP, "room-2", other_room.append)

    camera = rooms.publish(APP, ROOM, "camera", BOTH)
    microphone = rooms.publish(APP, ROOM, "microphone", frozenset({TrackKind.AUDIO}))
    assert [p.user_id for p in rooms.publishers(APP, ROOM)] == ["camera", "microphone"]
    camera.end()
    camera.end()  # a second end is not a second departure
    # The room is gone with its last publisher; a listener is still told of the next one.
    microphone.end()
    assert rooms.publishers(APP, ROOM) == []
    comeback = rooms.publish(APP, ROOM, "camera", BOTH)
    stop()
    comeback.end()

    assert events == [
        RoomEvent(RoomEventKind.JOINED, "camera", BOTH),
        RoomEvent(RoomEventKind.JOINED, "microphone", frozenset({TrackKind.AUDIO})),
        RoomEvent(RoomEventKind.LEFT, "camera", BOTH),
        RoomEvent(RoomEventKind.LEFT, "microphone", frozenset({TrackKind.AUDIO})),
        RoomEvent(RoomEventKind.JOINED, "camera", BOTH),
    ]
    assert other_room == []


def test_a_failing_room_listener_does_not_stop_the_others() -> None:
    rooms = RoomRegistry()
    seen: list[str] = []

    def broken(_: RoomEvent) -> None:
        raise RuntimeError("listener bug")

    rooms.listen(APP, ROOM, broken)
    rooms.listen(APP, ROOM, lambda event: seen.append(event.user_id))
    rooms.publish(APP, ROOM, "camera", BOTH).end()
    assert seen == ["camera", "camera"]


async def test_a_viewer_with_no_gop_to_start_from_asks_the_publisher_for_a_keyframe() -> None:
    rooms = RoomRegistry()
    publication = rooms.publish(APP, ROOM, "camera", BOTH)
    video = publication.tracks[TrackKind.VIDEO]
    requests: list[str] = []
    video.request_keyframe = lambda: requests.append("pli")

    video.subscribe()
    publication.tracks[TrackKind.AUDIO].subscribe()
    assert requests == ["pli"]
    publish_video(publication, range(3), keyframe_every=30)
    video.subscribe()  # starts from the cached keyframe: nothing to ask
    assert requests == ["pli"]
