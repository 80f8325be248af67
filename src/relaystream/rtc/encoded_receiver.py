"""A patch of aiortc 1.16: chosen receivers hand out encoded frames instead of decoding.

Why it exists: aiortc's ``RTCRtpReceiver`` always decodes. Its jitter buffer reassembles
each RTP frame (H.264 as Annex B, Opus as is) and a decoder thread turns it into a
picture or samples, which ``track.recv()`` returns. A WHIP publisher's media only has to
be forwarded to the room, so decoding it would cost a full decode per frame for nothing
(and the room would have to encode it again). aiortc has no option for this; the
decoder thread looks up ``get_decoder`` in the ``aiortc.rtcrtpreceiver`` module, so that
is where we hook in: for the receivers given to ``forward_encoded`` only, the "decoder"
wraps each reassembled frame in an ``av.Packet`` (pts = the RTP timestamp, unwrapped
from 0 by aiortc) and ``recv()`` returns packets. Every other receiver in the process
(WHEP viewers in tests, anything else) keeps aiortc's own decoder.

It can go when aiortc lets a receiver skip decoding.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from fractions import Fraction
from typing import Any

import aiortc.rtcrtpreceiver as aiortc_receiver
import av
from aiortc import RTCRtpReceiver

__all__ = ["forward_encoded", "request_keyframe"]

_H264_IDR = 5
_H264_SPS = 7

# The decoder threads of receivers that forward: the patched lookup is asked from them.
_forwarding_threads: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
_aiortc_get_decoder = aiortc_receiver.get_decoder  # type: ignore[attr-defined]
_keep_alive: set[asyncio.Future[None]] = set()


class _EncodedFramePassthrough:
    """Stands where aiortc puts a decoder; returns the encoded frame as one packet."""

    def __init__(self, mime_type: str, clock_rate: int) -> None:
        self._is_h264 = mime_type.lower() == "video/h264"
        self._time_base = Fraction(1, clock_rate)

    def decode(self, encoded_frame: Any) -> list[av.Packet[Any]]:
        data: bytes = encoded_frame.data
        if not data:
            return []
        packet = av.Packet(data)
        packet.pts = packet.dts = encoded_frame.timestamp
        packet.time_base = self._time_base
        packet.is_keyframe = _starts_a_picture(data) if self._is_h264 else True
        return [packet]


def _starts_a_picture(annexb: bytes) -> bool:
    """Whether an H.264 access unit decodes on its own: it has an IDR slice or an SPS."""
    start = annexb.find(b"\x00\x00\x01")
    while start != -1 and start + 3 < len(annexb):
        if annexb[start + 3] & 0x1F in (_H264_IDR, _H264_SPS):
            return True
        start = annexb.find(b"\x00\x00\x01", start + 3)
    return False


def _get_decoder(codec: Any) -> Any:
    if threading.current_thread() in _forwarding_threads:
        return _EncodedFramePassthrough(codec.mimeType, codec.clockRate)
    return _aiortc_get_decoder(codec)


def forward_encoded(receiver: RTCRtpReceiver) -> None:
    """Make ``receiver.track.recv()`` return encoded ``av.Packet``s; call before the
    connection starts (before the answer is applied)."""
    aiortc_receiver.get_decoder = _get_decoder  # type: ignore[attr-defined]
    start_receiving = receiver.receive

    async def receive(parameters: Any) -> None:
        await start_receiving(parameters)
        # The decoder thread exists now, and asks for its decoder only with the first
        # frame, which the event loop can deliver no sooner than after this returns.
        thread = receiver._RTCRtpReceiver__decoder_thread  # type: ignore[attr-defined]
        if thread is not None:
            _forwarding_threads.add(thread)

    receiver.receive = receive  # type: ignore[method-assign]


def request_keyframe(receiver: RTCRtpReceiver) -> None:
    """Ask the remote sender for a keyframe (RTCP PLI) on every stream it sends."""
    for source in receiver.getSynchronizationSources():
        sending = asyncio.ensure_future(receiver._send_rtcp_pli(source.source))
        _keep_alive.add(sending)
        sending.add_done_callback(_keep_alive.discard)
