"""A patch of aiortc 1.16.0's RTCRtpSender: RTP payloads made once per publication.

Why it exists: aiortc's sender packetizes whatever its track returns, per sender. For
the room's viewers that means every viewer of a publication splits the same H.264
frame into the same NAL units and FU-A fragments, and builds an ``RtpPacket`` object
and its header extensions for every packet (with a ``datetime`` → NTP conversion each
time for abs-send-time). Everything but the header (SSRC, sequence number, timestamp
offset, marker, extensions) and SRTP is the same for every viewer.

What it changes, and only for the senders given to ``send_shared_payloads`` (a room
viewer's): the frames come from ``ForwardedTrack.next_frame()`` as ``OutgoingFrame``s,
whose RTP payloads are made once, by whichever viewer needs them first, with aiortc's
own packetizer; each viewer's loop then writes its header into a preallocated template
and sends header + payload. Sequence numbers, timestamps, RTCP sender reports, NACK →
retransmission (RTX when negotiated) and PLI/FIR behave as in aiortc. Every other
sender in the process (Janus and WHIP publishers) keeps aiortc's own loop.

It reaches into the sender's name-mangled state (``_RTCRtpSender__...``), which is
why it is pinned to the aiortc version in pyproject.toml: check it against
``RTCRtpSender._run_rtp``, ``_retransmit`` and ``send`` when aiortc is upgraded.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av
from aiortc import clock
from aiortc.codecs.h264 import H264Encoder
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RTP_HISTORY_SIZE, RtpPacket

if TYPE_CHECKING:
    from relaystream.rtc.room import ForwardedTrack

__all__ = ["OutgoingFrame", "send_shared_payloads"]

logger = logging.getLogger(__name__)

_PRIVATE = "_RTCRtpSender__"


class OutgoingFrame:
    """One encoded frame on its way to the viewers of a track; its RTP payloads are made
    at most once, however many viewers send it."""

    __slots__ = ("_payloads", "_timestamp", "is_keyframe", "is_video", "packet")

    def __init__(self, packet: av.Packet[Any], *, is_video: bool) -> None:
        self.packet = packet
        self.is_keyframe = packet.is_keyframe
        self.is_video = is_video
        self._payloads: Sequence[bytes] | None = None
        self._timestamp: tuple[int, int] | None = None

    def payloads(self) -> Sequence[bytes]:
        """RTP payloads: H.264 split into NAL units, FU-A/STAP-A as aiortc does; audio
        (Opus) as it is."""
        if self._payloads is None:
            data = bytes(self.packet)
            if self.is_video:
                # aiortc's packetizer, so that viewers get what they got before.
                self._payloads = H264Encoder._packetize(H264Encoder._split_bitstream(data))
            else:
                self._payloads = (data,)
        return self._payloads

    def timestamp(self, clock_rate: int) -> int:
        """The frame's pts on the codec's RTP clock (before the sender's random offset)."""
        cached = self._timestamp
        if cached is None or cached[0] != clock_rate:
            packet = self.packet
            time_base = packet.time_base or Fraction(1, clock_rate)
            ticks = int((packet.pts or 0) * time_base * clock_rate)
            cached = self._timestamp = (clock_rate, ticks)
        return cached[1]


def send_shared_payloads(sender: RTCRtpSender, track: ForwardedTrack) -> None:
    """Make ``sender`` (whose track is ``track``) send ``track``'s shared payloads;
    call before the connection starts (before the answer is applied)."""
    loop = _SharedPayloadLoop(sender, track)
    # Instance attributes, never the class: aiortc's ``send`` starts ``self._run_rtp``
    # and RTCP handling calls ``self._retransmit``.
    sender._run_rtp = loop.run  # type: ignore[method-assign]


class _SharedPayloadLoop:
    """What replaces one sender's ``_run_rtp``: aiortc's loop, less the packetization."""

    def __init__(self, sender: RTCRtpSender, track: ForwardedTrack) -> None:
        self._sender = sender
        self._track = track

    def _private(self, name: str) -> Any:
        return getattr(self._sender, _PRIVATE + name)

    def _set_private(self, name: str, value: Any) -> None:
        setattr(self._sender, _PRIVATE + name, value)

    async def run(self, codec: RTCRtpCodecParameters) -> None:
        sender = self._sender
        self._private("rtp_started").set()
        transport = sender.transport
        history: dict[int, RtpPacket] = self._private("rtp_history")
        extensions_map = self._private("rtp_header_extensions_map")
        mid = self._private("mid")
        payload_type = codec.payloadType
        assert payload_type is not None  # set by negotiation before send() starts this
        clock_rate = codec.clockRate
        sequence_number = random.getrandbits(15)  # aiortc: lower half, no early wrap
        timestamp_origin = random.getrandbits(32)
        octets = packets = 0
        try:
            while True:
                frame = await self._track.next_frame()
                if not sender._enabled:
                    continue
                payloads = frame.payloads()
                timestamp = (timestamp_origin + frame.timestamp(clock_rate)) & 0xFFFFFFFF
                last = len(payloads) - 1
                # One send time per frame: its packets leave in one burst, without
                # yielding to the event loop, so they would all read the same time.
                ntp_time = clock.current_ntp_time()
                abs_send_time = (ntp_time >> 14) & 0xFFFFFF
                for i, payload in enumerate(payloads):
                    packet = RtpPacket(
                        payload_type=payload_type,
                        marker=1 if i == last else 0,
                        sequence_number=sequence_number,
                        timestamp=timestamp,
                        ssrc=sender._ssrc,
                        payload=payload,
                    )
                    packet.extensions.abs_send_time = abs_send_time
                    packet.extensions.mid = mid
                    history[sequence_number % RTP_HISTORY_SIZE] = packet
                    await transport._send_rtp(packet.serialize(extensions_map))
                    octets += len(payload)
                    packets += 1
                    sequence_number = (sequence_number + 1) & 0xFFFF
                # What RTCP sender reports tell the viewer.
                self._set_private("ntp_timestamp", ntp_time)
                self._set_private("rtp_timestamp", timestamp)
                self._set_private("octet_count", octets)
                self._set_private("packet_count", packets)
        except (asyncio.CancelledError, ConnectionError, MediaStreamError):
            pass
        except Exception:
            # rtp_exited must be set whatever happens, or the sender's stop() hangs.
            logger.exception("a viewer's RTP loop failed")
        self._track.stop()
        self._set_private("track", None)
        self._private("rtp_exited").set()
