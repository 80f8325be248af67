"""The room viewers' packet path: payloads made once per publication, a header rewrite
per viewer, and what aiortc's receiving side makes of the result.

The sender is aiortc's own ``RTCRtpSender`` with the room's adaptation installed; only
its DTLS transport is a stand-in (a real one needs a handshake with a peer, which the
WHEP stories in test_whep.py do) with real SRTP sessions and ICE pair, and a socket
that records. What it records is read back with aiortc's receiving code: SRTP
unprotect, ``RtpPacket.parse``, the H.264 depayloader, the video jitter buffer and
decoder.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import pytest
from aioice.candidate import Candidate
from aioice.ice import CandidatePair, StunProtocol
from aiortc.codecs import depayload
from aiortc.codecs.h264 import H264Decoder
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpparameters import (
    RTCRtcpParameters,
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpSendParameters,
)
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import (
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    HeaderExtensionsMap,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtpPacket,
    is_rtcp,
    unwrap_rtx,
)
from pylibsrtp import Policy, Session

from relaystream.rtc.keyframe_requests import forward_keyframe_requests
from relaystream.rtc.room import ForwardedTrack, RoomRegistry, TrackKind
from relaystream.rtc.rtp_header import HeaderExtensionIds, RtpHeaderTemplate
from relaystream.rtc.shared_packetization import send_shared_payloads
from tests.support.sfu import annexb_packets, as_room_packet

H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90_000, payloadType=102)
RTX = RTCRtpCodecParameters(
    mimeType="video/rtx", clockRate=90_000, payloadType=103, parameters={"apt": 102}
)
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
FRAMES = 40  # of the 30 fps clip: over a second, with its first keyframe


def srtp_policy(ssrc_type: int) -> Policy:
    """As aiortc's DTLS transport sets up its sessions, with a fixed key."""
    policy = Policy(key=bytes(range(30)), ssrc_type=ssrc_type)  # 128-bit key, 112-bit salt
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    return policy


class RecordingTransport:
    """Stands where the sender's DTLS transport is, connected, with a real SRTP session
    and ICE candidate pair whose socket records the datagrams it is given; what it
    records is read back through SRTP, as the viewer's end would."""

    _state = DtlsState.CONNECTED
    state = "connected"
    _stats_id = "transport"
    _RTCDtlsTransport__tx_bytes = 0
    _RTCDtlsTransport__tx_packets = 0

    def __init__(self) -> None:
        self._tx_srtp = Session(srtp_policy(Policy.SSRC_ANY_OUTBOUND))
        protocol = StunProtocol(receiver=None)
        protocol.transport = self
        viewer = Candidate("1", 1, "udp", 1, "127.0.0.1", 9, "host")
        self.transport = SimpleNamespace(_connection=SimpleNamespace(_nominated={1: None}))
        self.transport._connection._nominated[1] = CandidatePair(protocol, viewer)
        self.sent: list[bytes] = []
        self.arrived = asyncio.Event()

    def _register_rtp_sender(self, sender: Any, parameters: Any) -> None:
        pass

    def _unregister_rtp_sender(self, sender: Any) -> None:
        pass

    async def _send_rtp(self, data: bytes) -> None:
        """aiortc's own path (RTCP, retransmissions)."""
        if not is_rtcp(data):
            self.sendto(self._tx_srtp.protect(data), ("127.0.0.1", 9))

    def sendto(self, datagram: bytes, addr: tuple[str, int]) -> None:
        assert addr == ("127.0.0.1", 9)
        # Each datagram read on its own: a retransmission without RTX repeats a packet,
        # which one receiving session would refuse as a replay.
        self.sent.append(Session(srtp_policy(Policy.SSRC_ANY_INBOUND)).unprotect(datagram))
        self.arrived.set()

    async def wait_for_packets(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.sent) < count:
                self.arrived.clear()
                await self.arrived.wait()


def parameters(*, rtx: bool = True, extension_ids: tuple[int, int] = (1, 3)) -> Any:
    mid_id, abs_id = extension_ids
    return RTCRtpSendParameters(
        codecs=[H264, RTX] if rtx else [H264],
        headerExtensions=[
            RTCRtpHeaderExtensionParameters(id=mid_id, uri=MID),
            RTCRtpHeaderExtensionParameters(id=abs_id, uri=ABS_SEND_TIME),
        ],
        muxId="0",
        rtcp=RTCRtcpParameters(cname="viewer", ssrc=1),
    )


def extensions_map(sent_with: Any) -> HeaderExtensionsMap:
    extensions = HeaderExtensionsMap()
    extensions.configure(sent_with)
    return extensions


@pytest.fixture
def h264_frames(clips: dict[str, Path]) -> Iterator[list[Any]]:
    """The clip's first frames as the room gets them (Annex B, 90 kHz pts)."""
    packets, _ = annexb_packets(clips["mp4"])
    assert packets[0].keyframe
    yield [as_room_packet(p, p.pts - packets[0].pts) for p in packets[:FRAMES]]


class Viewer:
    """A room subscription sent by an aiortc sender with the room's adaptation."""

    def __init__(self, track: ForwardedTrack, sent_with: Any) -> None:
        self.transport = RecordingTransport()
        self.sender = RTCRtpSender(track, self.transport)  # type: ignore[arg-type]
        send_shared_payloads(self.sender, track)
        self.sent_with = sent_with
        self.keyframe_requests = 0

    async def start(self) -> None:
        def count() -> None:
            self.keyframe_requests += 1

        forward_keyframe_requests(self.sender, count)
        await self.sender.send(self.sent_with)

    def packets(self) -> list[RtpPacket]:
        extensions = extensions_map(self.sent_with)
        return [RtpPacket.parse(data, extensions) for data in self.transport.sent]


@pytest.fixture
async def viewers() -> AsyncIterator[list[Viewer]]:
    started: list[Viewer] = []
    yield started
    for viewer in started:
        await viewer.sender.stop()


def decode(packets: list[RtpPacket]) -> int:
    """Frames aiortc's receiving side decodes from ``packets`` (in order)."""
    jitter_buffer = JitterBuffer(capacity=512, is_video=True)
    decoder = H264Decoder()
    decoded = 0
    for packet in packets:
        packet._data = depayload(H264, packet.payload)  # type: ignore[attr-defined]
        _, frame = jitter_buffer.add(packet)
        if frame is not None:
            decoded += len(decoder.decode(frame))
    return decoded


def consecutive(numbers: list[int]) -> bool:
    return all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(numbers))


@pytest.mark.parametrize("ids", [(1, 3), (15, 2)], ids=["one-byte", "two-byte"])
def test_a_templated_header_reads_back_as_aiortc_reads_a_header(
    ids: tuple[int, int],
) -> None:
    mid_id, abs_id = ids
    template = RtpHeaderTemplate(
        payload_type=102,
        ssrc=0xDEADBEEF,
        ids=HeaderExtensionIds(mid=mid_id, abs_send_time=abs_id),
        mid="video0",
    )
    template.start_frame(0x1_2345_6789, abs_send_time=0xABCDEF12)
    first = RtpPacket.parse(
        template.packet(65535, False, b"payload"), extensions_map(parameters(extension_ids=ids))
    )
    last = RtpPacket.parse(
        template.packet(0, True, b"end"), extensions_map(parameters(extension_ids=ids))
    )

    assert (first.version, first.payload_type, first.ssrc) == (2, 102, 0xDEADBEEF)
    assert (first.sequence_number, first.marker, first.payload) == (65535, 0, b"payload")
    assert first.timestamp == 0x2345_6789  # wraps at 32 bits
    assert first.extensions.abs_send_time == 0xCDEF12  # 24 bits
    assert first.extensions.mid == "video0"
    assert (last.sequence_number, last.marker, last.payload) == (0, 1, b"end")
    assert last.timestamp == first.timestamp


def test_a_header_without_negotiated_extensions_is_the_fixed_twelve_bytes() -> None:
    template = RtpHeaderTemplate(payload_type=111, ssrc=7, ids=HeaderExtensionIds(), mid="0")
    template.start_frame(960, abs_send_time=1)
    packet = RtpPacket.parse(template.packet(1, True, b"opus"))

    assert len(template) == 12
    assert (packet.payload_type, packet.timestamp, packet.payload) == (111, 960, b"opus")


async def test_every_frame_a_viewer_is_sent_decodes_in_aiortc(
    h264_frames: list[Any], viewers: list[Viewer]
) -> None:
    publication = RoomRegistry().publish("app", "room", "relay", frozenset({TrackKind.VIDEO}))
    viewer = Viewer(publication.tracks[TrackKind.VIDEO].subscribe(), parameters())
    viewers.append(viewer)
    await viewer.start()
    for packet in h264_frames:
        publication.send(TrackKind.VIDEO, packet)
    await viewer.transport.wait_for_packets(FRAMES)
    await asyncio.sleep(0.05)  # the loop sends whole frames; let the last one out

    packets = viewer.packets()
    marked = [p for p in packets if p.marker]
    assert len(marked) == FRAMES  # one marker per frame, on its last packet
    assert consecutive([p.sequence_number for p in packets])
    assert {p.ssrc for p in packets} == {viewer.sender._ssrc}
    steps = {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(marked)}
    assert steps == {3000}  # 30 fps on the 90 kHz clock
    assert all(p.extensions.mid == "0" for p in packets)
    assert all(p.extensions.abs_send_time is not None for p in packets)
    # The jitter buffer hands a frame over when the next one starts: all but the last.
    assert decode(packets) == FRAMES - 1
    # Sent straight to the pair's socket, and counted in the transport's stats.
    assert viewer.transport._RTCDtlsTransport__tx_packets == len(packets)


async def test_a_viewer_who_joins_later_gets_its_own_unbroken_sequence_from_a_keyframe(
    h264_frames: list[Any], viewers: list[Viewer]
) -> None:
    publication = RoomRegistry().publish("app", "room", "relay", frozenset({TrackKind.VIDEO}))
    video = publication.tracks[TrackKind.VIDEO]
    first = Viewer(video.subscribe(), parameters())
    viewers.append(first)
    await first.start()
    half = FRAMES // 2
    for packet in h264_frames[:half]:
        publication.send(TrackKind.VIDEO, packet)
    await first.transport.wait_for_packets(half)
    late = Viewer(video.subscribe(), parameters())  # starts from the cached GOP
    viewers.append(late)
    await late.start()
    for packet in h264_frames[half:]:
        publication.send(TrackKind.VIDEO, packet)
    for viewer in viewers:
        await viewer.transport.wait_for_packets(FRAMES)
    await asyncio.sleep(0.05)

    early_packets, late_packets = first.packets(), late.packets()
    # The same payloads, each viewer under its own SSRC, numbering and timestamps.
    assert [p.payload for p in late_packets] == [p.payload for p in early_packets]
    assert consecutive([p.sequence_number for p in early_packets])
    assert consecutive([p.sequence_number for p in late_packets])
    assert late.sender._ssrc != first.sender._ssrc
    assert decode(late_packets) == FRAMES - 1


async def test_a_lost_packet_is_sent_again_in_rtx_when_a_viewer_asks(
    h264_frames: list[Any], viewers: list[Viewer]
) -> None:
    track = RoomRegistry().publish("app", "room", "relay", frozenset({TrackKind.VIDEO}))
    viewer = Viewer(track.tracks[TrackKind.VIDEO].subscribe(), parameters())
    viewers.append(viewer)
    await viewer.start()
    for packet in h264_frames[:3]:
        track.send(TrackKind.VIDEO, packet)
    await viewer.transport.wait_for_packets(3)
    lost = viewer.packets()[1]
    sent_before = len(viewer.transport.sent)

    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=viewer.sender._ssrc)
    nack.lost = [lost.sequence_number, (lost.sequence_number - 1000) & 0xFFFF]
    await viewer.sender._handle_rtcp_packet(nack)

    # One retransmission: the other number is no longer (never was) kept.
    assert len(viewer.transport.sent) == sent_before + 1
    rtx = RtpPacket.parse(viewer.transport.sent[-1], extensions_map(viewer.sent_with))
    assert (rtx.payload_type, rtx.ssrc) == (RTX.payloadType, viewer.sender._rtx_ssrc)
    recovered = unwrap_rtx(rtx, payload_type=H264.payloadType, ssrc=viewer.sender._ssrc)
    assert recovered.sequence_number == lost.sequence_number
    assert (recovered.timestamp, recovered.payload) == (lost.timestamp, lost.payload)


async def test_without_rtx_a_lost_packet_is_sent_again_as_it_was(
    h264_frames: list[Any], viewers: list[Viewer]
) -> None:
    track = RoomRegistry().publish("app", "room", "relay", frozenset({TrackKind.VIDEO}))
    viewer = Viewer(track.tracks[TrackKind.VIDEO].subscribe(), parameters(rtx=False))
    viewers.append(viewer)
    await viewer.start()
    for packet in h264_frames[:3]:
        track.send(TrackKind.VIDEO, packet)
    await viewer.transport.wait_for_packets(3)
    lost = viewer.transport.sent[2]

    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=viewer.sender._ssrc)
    nack.lost = [int.from_bytes(lost[2:4], "big")]
    await viewer.sender._handle_rtcp_packet(nack)

    assert viewer.transport.sent[-1] == lost


async def test_a_picture_loss_still_reaches_the_publication(
    h264_frames: list[Any], viewers: list[Viewer]
) -> None:
    track = RoomRegistry().publish("app", "room", "relay", frozenset({TrackKind.VIDEO}))
    viewer = Viewer(track.tracks[TrackKind.VIDEO].subscribe(), parameters())
    viewers.append(viewer)
    await viewer.start()
    assert viewer.keyframe_requests == 0

    pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=viewer.sender._ssrc)
    await viewer.sender._handle_rtcp_packet(pli)

    assert viewer.keyframe_requests == 1


async def test_a_viewer_that_leaves_stops_its_subscription(
    h264_frames: list[Any],
) -> None:
    publication = RoomRegistry().publish("app", "room", "relay", frozenset({TrackKind.VIDEO}))
    video = publication.tracks[TrackKind.VIDEO]
    viewer = Viewer(video.subscribe(), parameters())
    await viewer.start()
    publication.send(TrackKind.VIDEO, h264_frames[0])
    await viewer.transport.wait_for_packets(1)
    assert video.subscriber_count == 1

    await viewer.sender.stop()

    assert video.subscriber_count == 0


async def test_an_opus_frame_reaches_a_viewer_as_it_was_published(
    viewers: list[Viewer],
) -> None:
    opus = RTCRtpCodecParameters(
        mimeType="audio/opus", clockRate=48_000, channels=2, payloadType=111
    )
    audio = RoomRegistry().publish("app", "room", "relay", frozenset({TrackKind.AUDIO}))
    sent_with = parameters()
    sent_with.codecs = [opus]
    viewer = Viewer(audio.tracks[TrackKind.AUDIO].subscribe(), sent_with)
    viewers.append(viewer)
    await viewer.start()
    frames = [bytes([index]) * (60 + index) for index in range(5)]
    for index, data in enumerate(frames):
        packet = av.Packet(data)
        packet.pts = packet.dts = index * 960
        packet.time_base = Fraction(1, 48_000)
        packet.is_keyframe = True
        audio.send(TrackKind.AUDIO, packet)
    await viewer.transport.wait_for_packets(len(frames))

    packets = viewer.packets()
    # One RTP packet per Opus frame, its bytes untouched, 20 ms apart on the 48 kHz clock.
    assert [p.payload for p in packets] == frames
    assert all(p.payload_type == 111 and p.marker for p in packets)
    steps = {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(packets)}
    assert steps == {960}
