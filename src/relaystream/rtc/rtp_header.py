"""One RTP stream's packet header, kept as bytes and rewritten in place per packet.

A sender's header (RFC 3550) differs from one packet to the next only in the marker
bit, the sequence number, the timestamp (per frame) and the abs-send-time extension
(per frame); the version, payload type, SSRC and the other header extensions (RFC 8285:
the MID) never change. Building a packet object and serializing its extensions for
every packet is most of what a Python sender spends outside the syscall and SRTP; this
template writes the fixed part once and patches the few bytes that move.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_FIXED_HEADER = 12
_ONE_BYTE_PROFILE = 0xBEDE  # RFC 8285 §4.2
_TWO_BYTE_PROFILE = 0x1000  # RFC 8285 §4.3, appbits 0
_ABS_SEND_TIME_BYTES = 3
_FIRST_BYTE = 0x80  # version 2, no padding, no CSRC
_EXTENSION_BIT = 0x10
_MARKER = 0x80

_marker_and_sequence = struct.Struct("!BH")
_timestamp = struct.Struct("!I")


@dataclass(frozen=True)
class HeaderExtensionIds:
    """The ids the session negotiated for the extensions a forwarding sender writes
    (``None``: not negotiated, not written)."""

    mid: int | None = None
    abs_send_time: int | None = None


class RtpHeaderTemplate:
    """The header of one RTP stream: ``start_frame`` per frame, ``packet`` per packet."""

    def __init__(
        self, *, payload_type: int, ssrc: int, ids: HeaderExtensionIds, mid: str | None
    ) -> None:
        if not 0 <= payload_type < 128:
            raise ValueError(f"payload type {payload_type} is not 0..127")
        self.payload_type = payload_type
        extensions: list[tuple[int, bytes]] = []
        # abs-send-time first, so that its value sits at a known offset.
        if ids.abs_send_time is not None:
            extensions.append((ids.abs_send_time, bytes(_ABS_SEND_TIME_BYTES)))
        if ids.mid is not None and mid:
            extensions.append((ids.mid, mid.encode()))
        block, value_offset = _extension_block(extensions)
        first_byte = _FIRST_BYTE | (_EXTENSION_BIT if block else 0)
        self._header = bytearray(struct.pack("!BBHII", first_byte, payload_type, 0, 0, ssrc))
        self._header += block
        self._abs_send_time_at = (
            _FIXED_HEADER + value_offset if ids.abs_send_time is not None else None
        )

    def __len__(self) -> int:
        return len(self._header)

    def start_frame(self, timestamp: int, abs_send_time: int) -> None:
        """Set the RTP timestamp and the 24-bit abs-send-time (6.18 fixed-point seconds)
        of the packets that follow."""
        _timestamp.pack_into(self._header, 4, timestamp & 0xFFFFFFFF)
        at = self._abs_send_time_at
        if at is not None:
            self._header[at : at + _ABS_SEND_TIME_BYTES] = (abs_send_time & 0xFFFFFF).to_bytes(
                _ABS_SEND_TIME_BYTES, "big"
            )

    def packet(self, sequence_number: int, marker: bool, payload: bytes) -> bytes:
        """A whole RTP packet: this header, then ``payload``."""
        header = self._header
        _marker_and_sequence.pack_into(
            header,
            1,
            self.payload_type | _MARKER if marker else self.payload_type,
            sequence_number,
        )
        return b"".join((header, payload))


def _extension_block(extensions: list[tuple[int, bytes]]) -> tuple[bytes, int]:
    """The header extension block (profile, length, elements, padding) and where the
    first element's value starts in it; one-byte elements when every id and length
    allows them."""
    if not extensions:
        return b"", 0
    one_byte = all(0 < x_id < 15 and 0 < len(value) <= 16 for x_id, value in extensions)
    if one_byte:
        profile, value_offset = _ONE_BYTE_PROFILE, 4 + 1
        elements = b"".join(bytes([x_id << 4 | len(v) - 1]) + v for x_id, v in extensions)
    else:
        profile, value_offset = _TWO_BYTE_PROFILE, 4 + 2
        elements = b"".join(bytes([x_id, len(v)]) + v for x_id, v in extensions)
    elements += bytes(-len(elements) % 4)
    return struct.pack("!HH", profile, len(elements) // 4) + elements, value_offset
