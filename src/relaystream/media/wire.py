"""The byte stream from a media worker to the server: encoded packets and events.

Each message is a fixed header ``kind u8, flags u8, pts i64, length u32`` (network
order) followed by ``length`` bytes. Video pts count a 90 kHz clock and audio pts a
48 kHz clock, the RTP clocks of H.264 and Opus, so the server forwards them unchanged.
Events (events.py) carry a JSON object with a ``"type"`` key.
"""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import dataclass
from enum import IntEnum
from fractions import Fraction
from typing import IO

from relaystream.media.events import EventFormatError, WorkerEvent, event_from_json, event_to_json

_HEADER = struct.Struct("!BBqI")
_FLAG_KEYFRAME = 0x01
# A generous bound: a 1080p keyframe is well under this; anything larger is corruption.
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024


class MessageKind(IntEnum):
    EVENT = 0
    VIDEO = 1
    AUDIO = 2


VIDEO_CLOCK = Fraction(1, 90_000)
AUDIO_CLOCK = Fraction(1, 48_000)


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One encoded access unit (H.264 Annex B) or Opus frame, ready for RTP."""

    kind: MessageKind
    data: bytes
    pts: int
    keyframe: bool = False

    @property
    def time_base(self) -> Fraction:
        return VIDEO_CLOCK if self.kind is MessageKind.VIDEO else AUDIO_CLOCK


class WireError(Exception):
    """The worker's output is not a valid message stream."""


class TruncatedMessage(WireError):
    """The stream ended inside a message: its writer stopped (or died) mid-write."""


def write_packet(out: IO[bytes], packet: EncodedPacket) -> None:
    flags = _FLAG_KEYFRAME if packet.keyframe else 0
    out.write(_HEADER.pack(packet.kind, flags, packet.pts, len(packet.data)))
    out.write(packet.data)


def write_event(out: IO[bytes], event: WorkerEvent) -> None:
    payload = json.dumps(event_to_json(event)).encode()
    out.write(_HEADER.pack(MessageKind.EVENT, 0, 0, len(payload)))
    out.write(payload)
    out.flush()


async def read_message(reader: asyncio.StreamReader) -> EncodedPacket | WorkerEvent | None:
    """The next message, or None at a clean end of stream."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise TruncatedMessage("truncated message header") from exc
        return None
    kind_value, flags, pts, length = _HEADER.unpack(header)
    if length > MAX_PAYLOAD_BYTES:
        raise WireError(f"message of {length} bytes exceeds the limit")
    try:
        kind = MessageKind(kind_value)
        payload = await reader.readexactly(length)
    except ValueError as exc:
        raise WireError(f"unknown message kind {kind_value}") from exc
    except asyncio.IncompleteReadError as exc:
        raise TruncatedMessage("truncated message payload") from exc
    if kind is MessageKind.EVENT:
        try:
            fields = json.loads(payload)
        except ValueError as exc:
            raise WireError("event payload is not JSON") from exc
        if not isinstance(fields, dict):
            raise WireError("event payload is not a JSON object")
        try:
            return event_from_json(fields)
        except EventFormatError as exc:
            raise WireError(str(exc)) from exc
    return EncodedPacket(kind=kind, data=payload, pts=pts, keyframe=bool(flags & _FLAG_KEYFRAME))
