"""Stories for the worker-to-server byte stream: what is written is what is read."""

from __future__ import annotations

import asyncio
import io
import struct

import pytest

from relaystream.media.events import (
    AudioInput,
    SourceEnded,
    SourceFailed,
    SourceOpened,
    VideoInput,
    WorkerEvent,
)
from relaystream.media.wire import (
    AUDIO_CLOCK,
    MAX_PAYLOAD_BYTES,
    VIDEO_CLOCK,
    EncodedPacket,
    MessageKind,
    WireError,
    read_message,
    write_event,
    write_packet,
)

HEADER = struct.Struct("!BBqI")  # kind, flags, pts, length: the documented layout


def reader_of(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


async def read_all(data: bytes) -> list[EncodedPacket | WorkerEvent]:
    reader = reader_of(data)
    messages = []
    while (message := await read_message(reader)) is not None:
        messages.append(message)
    return messages


async def test_packets_and_events_arrive_as_they_were_written() -> None:
    keyframe = EncodedPacket(
        MessageKind.VIDEO, b"\x00\x00\x00\x01\x67sps\x00\x00\x00\x01\x65idr", 3000, True
    )
    delta = EncodedPacket(MessageKind.VIDEO, b"\x00\x00\x01\x41p", 6000)
    sound = EncodedPacket(MessageKind.AUDIO, b"\xfc" * 120, 960)
    opened = SourceOpened(
        video=VideoInput(codec="h264", width=640, height=360, frame_rate=30.0),
        audio=AudioInput(codec="aac", sample_rate=44_100, channels=2),
        live=False,
        duration_s=20.0,
    )
    ended = SourceEnded()
    out = io.BytesIO()

    write_event(out, opened)
    for packet in (keyframe, delta, sound):
        write_packet(out, packet)
    write_event(out, ended)

    assert await read_all(out.getvalue()) == [opened, keyframe, delta, sound, ended]


async def test_packets_carry_the_rtp_clock_of_their_kind() -> None:
    out = io.BytesIO()
    write_packet(out, EncodedPacket(MessageKind.VIDEO, b"v", 90_000))
    write_packet(out, EncodedPacket(MessageKind.AUDIO, b"a", 48_000))

    video, audio = await read_all(out.getvalue())

    assert isinstance(video, EncodedPacket) and isinstance(audio, EncodedPacket)
    assert video.pts * video.time_base == 1 == audio.pts * audio.time_base
    assert (video.time_base, audio.time_base) == (VIDEO_CLOCK, AUDIO_CLOCK)


@pytest.mark.parametrize("pts", [0, -312, 2**40, 2**63 - 1])
async def test_any_64_bit_timestamp_survives(pts: int) -> None:
    # Opus encoders report their priming as a negative first timestamp.
    out = io.BytesIO()
    write_packet(out, EncodedPacket(MessageKind.AUDIO, b"opus", pts))

    (packet,) = await read_all(out.getvalue())

    assert isinstance(packet, EncodedPacket) and packet.pts == pts


async def test_an_empty_packet_and_an_event_with_unicode_survive() -> None:
    empty = EncodedPacket(MessageKind.AUDIO, b"", 0)
    error = SourceFailed("unreachable: «connexion refusée»", retryable=True)
    out = io.BytesIO()
    write_packet(out, empty)
    write_event(out, error)

    assert await read_all(out.getvalue()) == [empty, error]


async def test_a_clean_end_of_stream_reads_as_none() -> None:
    assert await read_message(reader_of(b"")) is None


async def test_messages_split_across_reads_are_reassembled() -> None:
    out = io.BytesIO()
    packet = EncodedPacket(MessageKind.VIDEO, bytes(range(256)) * 40, 9000, True)
    write_packet(out, packet)
    data = out.getvalue()
    reader = asyncio.StreamReader()

    pending = asyncio.ensure_future(read_message(reader))
    for start in range(0, len(data), 7):  # a pipe delivers whatever it has
        reader.feed_data(data[start : start + 7])
        await asyncio.sleep(0)
    reader.feed_eof()

    assert await pending == packet


async def test_a_stream_cut_inside_a_header_is_an_error() -> None:
    out = io.BytesIO()
    write_packet(out, EncodedPacket(MessageKind.VIDEO, b"frame", 0))

    with pytest.raises(WireError, match="header"):
        await read_message(reader_of(out.getvalue()[:5]))


async def test_a_stream_cut_inside_a_payload_is_an_error() -> None:
    out = io.BytesIO()
    write_packet(out, EncodedPacket(MessageKind.VIDEO, b"a whole frame", 0))
    write_event(out, SourceEnded())
    cut = out.getvalue()[: HEADER.size + 4]

    with pytest.raises(WireError, match="payload"):
        await read_message(reader_of(cut))


async def test_an_oversized_length_is_refused_before_reading_the_payload() -> None:
    header = HEADER.pack(MessageKind.VIDEO, 0, 0, MAX_PAYLOAD_BYTES + 1)
    # No payload follows and the stream stays open: reading it would hang.
    reader = reader_of(header, eof=False)

    with pytest.raises(WireError, match="exceeds"):
        await asyncio.wait_for(read_message(reader), 1)


async def test_an_unknown_message_kind_is_an_error() -> None:
    with pytest.raises(WireError, match="kind 7"):
        await read_message(reader_of(HEADER.pack(7, 0, 0, 1) + b"x"))


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b'{"detail": "no type"}'])
async def test_a_malformed_event_is_an_error(payload: bytes) -> None:
    message = HEADER.pack(MessageKind.EVENT, 0, 0, len(payload)) + payload

    with pytest.raises(WireError):
        await read_message(reader_of(message))
