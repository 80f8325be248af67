"""A patch of aiortc 1.16.0 and aioice 0.13.0: a cheaper packet path for room viewers.

Why it exists: aiortc's sender packetizes whatever its track returns, per sender. For
the room's viewers that means every viewer of a publication splits the same H.264
frame into the same NAL units and FU-A fragments, and builds an ``RtpPacket`` object
and its header extensions for every packet (with a ``datetime`` → NTP conversion each
time for abs-send-time), then hands it down three coroutines to the socket. Everything
but the header (SSRC, sequence number, timestamp offset, marker, extensions) and SRTP
is the same for every viewer.

What it changes, and only for the senders given to ``send_shared_payloads`` (a room
viewer's): the frames come from ``ForwardedTrack.next_frame()`` as ``OutgoingFrame``s,
whose RTP payloads are made once, by whichever viewer needs them first, with aiortc's
own packetizer; each viewer's loop then reads the clock once per frame, writes its
header into a preallocated template (``rtp_header``), and sends header + payload through
SRTP straight to its ICE pair's UDP socket. Sequence numbers, timestamps, RTCP sender
reports, NACK → retransmission (RTX when negotiated) and PLI/FIR behave as in aiortc.
Every other sender in the process (Janus and WHIP publishers) keeps aiortc's own loop.

It reaches into name-mangled and private state (``_RTCRtpSender__...``, the DTLS
transport's SRTP session, aioice's nominated pair), which is why it is pinned to the
versions in pyproject.toml and constraints.txt: check it against ``RTCRtpSender``'s
``_run_rtp``, ``_retransmit`` and ``send``, ``RTCDtlsTransport._send_rtp`` and
``aioice.Connection.sendto`` when aiortc or aioice is upgraded. It can go if aiortc's
sender learns to send pre-packetized payloads.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av
from aioice.ice import StunProtocol
from aiortc import clock
from aiortc.codecs.h264 import H264Encoder
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpSendParameters
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RTP_HISTORY_SIZE, RtpPacket, wrap_rtx

from relaystream.rtc.rtp_header import HeaderExtensionIds, RtpHeaderTemplate

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
    # Instance attributes, never the class: aiortc's ``send`` starts ``self._run_rtp``,
    # and its RTCP handling answers a NACK with ``self._retransmit``.
    start_sending = sender.send

    async def send(parameters: RTCRtpSendParameters) -> None:
        loop.negotiated(parameters)
        await start_sending(parameters)

    sender.send = send  # type: ignore[method-assign]
    sender._run_rtp = loop.run  # type: ignore[method-assign]
    sender._retransmit = loop.retransmit  # type: ignore[method-assign]


_ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
_MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"


class _SharedPayloadLoop:
    """What replaces one sender's ``_run_rtp`` and ``_retransmit``: aiortc's loop, less
    the packetization and the per-packet objects."""

    def __init__(self, sender: RTCRtpSender, track: ForwardedTrack) -> None:
        self._sender = sender
        self._track = track
        self._ids = HeaderExtensionIds()
        self._mid: str | None = None
        # The packets sent last, as sent before SRTP, by sequence number modulo the
        # size: what a NACK asks for again (aiortc keeps RtpPackets, as many).
        self._history: list[bytes | None] = [None] * RTP_HISTORY_SIZE
        self._rtx_sequence_number = random.getrandbits(15)

    def negotiated(self, parameters: RTCRtpSendParameters) -> None:
        ids = {ext.uri: ext.id for ext in parameters.headerExtensions}
        self._ids = HeaderExtensionIds(
            mid=ids.get(_MID_URI), abs_send_time=ids.get(_ABS_SEND_TIME_URI)
        )
        self._mid = parameters.muxId

    def _private(self, name: str) -> Any:
        return getattr(self._sender, _PRIVATE + name)

    async def run(self, codec: RTCRtpCodecParameters) -> None:
        sender = self._sender
        self._private("rtp_started").set()
        dtls = sender.transport
        send_rtp = dtls._send_rtp
        history = self._history
        assert codec.payloadType is not None  # negotiated before send() starts this
        header = RtpHeaderTemplate(
            payload_type=codec.payloadType, ssrc=sender._ssrc, ids=self._ids, mid=self._mid
        )
        clock_rate = codec.clockRate
        sequence_number = random.getrandbits(15)  # as aiortc: lower half, no early wrap
        timestamp_origin = random.getrandbits(32)
        octets = packets = 0
        try:
            while True:
                frame = await self._track.next_frame()
                if not sender._enabled:
                    continue
                payloads = frame.payloads()
                timestamp = (timestamp_origin + frame.timestamp(clock_rate)) & 0xFFFFFFFF
                # One send time per frame: its packets leave in one burst, without
                # yielding to the event loop, so they would all read the same time.
                ntp_time = clock.current_ntp_time()
                header.start_frame(timestamp, ntp_time >> 14)
                last = len(payloads) - 1
                link = _UdpLink.of(dtls)
                for i, payload in enumerate(payloads):
                    data = header.packet(sequence_number, i == last, payload)
                    history[sequence_number % RTP_HISTORY_SIZE] = data
                    if link is not None:
                        link.send(data)
                    else:
                        await send_rtp(data)
                    sequence_number = (sequence_number + 1) & 0xFFFF
                if link is not None:
                    link.count_in(dtls)
                octets += sum(map(len, payloads))
                packets += len(payloads)
                # What RTCP sender reports tell the viewer.
                setattr(sender, _NTP_TIMESTAMP, ntp_time)
                setattr(sender, _RTP_TIMESTAMP, timestamp)
                setattr(sender, _OCTET_COUNT, octets)
                setattr(sender, _PACKET_COUNT, packets)
        except (asyncio.CancelledError, ConnectionError, MediaStreamError):
            pass
        except Exception:
            # rtp_exited must be set whatever happens, or the sender's stop() hangs.
            logger.exception("a viewer's RTP loop failed")
        self._track.stop()
        setattr(sender, _PRIVATE + "track", None)
        self._private("rtp_exited").set()

    async def retransmit(self, sequence_number: int) -> None:
        """Send a packet a viewer reported lost again: in an RTX packet when RTX was
        negotiated, else as it was."""
        data = self._history[sequence_number % RTP_HISTORY_SIZE]
        if data is None or int.from_bytes(data[2:4], "big") != sequence_number:
            return  # no longer kept
        rtx_payload_type: int | None = self._private("rtx_payload_type")
        if rtx_payload_type is not None:
            extensions_map = self._private("rtp_header_extensions_map")
            data = wrap_rtx(
                RtpPacket.parse(data, extensions_map),
                payload_type=rtx_payload_type,
                sequence_number=self._rtx_sequence_number,
                ssrc=self._sender._rtx_ssrc,
            ).serialize(extensions_map)
            self._rtx_sequence_number = (self._rtx_sequence_number + 1) & 0xFFFF
        await self._sender.transport._send_rtp(data)


# The sender's state that its RTCP sender reports are made of.
_NTP_TIMESTAMP = _PRIVATE + "ntp_timestamp"
_RTP_TIMESTAMP = _PRIVATE + "rtp_timestamp"
_OCTET_COUNT = _PRIVATE + "octet_count"
_PACKET_COUNT = _PRIVATE + "packet_count"


class _UdpLink:
    """A viewer's connected ICE pair over plain UDP, sent to without aiortc's per-packet
    path: ``RTCDtlsTransport._send_rtp`` → ``Connection.send`` → ``Connection.sendto`` →
    ``StunProtocol.send_data`` are three coroutines and checks per packet around two
    calls, SRTP protect and the datagram transport's ``sendto``, made here directly.
    Looked up once per frame, so a lost connection still ends the loop
    (ConnectionError) as aiortc's path would. Any other kind of pair (TURN) keeps
    aiortc's path (``of`` returns None)."""

    __slots__ = ("_addr", "_protect", "_sendto", "bytes_sent", "packets_sent")

    def __init__(self, protect: Any, sendto: Any, addr: tuple[str, int]) -> None:
        self._protect = protect
        self._sendto = sendto
        self._addr = addr
        self.bytes_sent = 0
        self.packets_sent = 0

    @classmethod
    def of(cls, dtls: RTCDtlsTransport) -> _UdpLink | None:
        if dtls._state is not DtlsState.CONNECTED:
            raise ConnectionError("Cannot send encrypted RTP, not connected")
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None:
            raise ConnectionError("Cannot send data, not connected")
        protocol = pair.protocol
        if type(protocol) is not StunProtocol or protocol.transport is None:
            return None
        return cls(dtls._tx_srtp.protect, protocol.transport.sendto, pair.remote_addr)

    def send(self, data: bytes) -> None:
        protected = self._protect(data)
        self._sendto(protected, self._addr)
        self.bytes_sent += len(protected)
        self.packets_sent += 1

    def count_in(self, dtls: RTCDtlsTransport) -> None:
        """Add what was sent to the transport's own counters (its stats)."""
        dtls._RTCDtlsTransport__tx_bytes += self.bytes_sent  # type: ignore[attr-defined]
        dtls._RTCDtlsTransport__tx_packets += self.packets_sent  # type: ignore[attr-defined]
