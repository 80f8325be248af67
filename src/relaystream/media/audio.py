"""Audio out of a pipeline: Opus 48 kHz, the only audio WebRTC rooms take.

Opus is forwarded untouched; anything else (AAC, MP3...) is decoded and encoded once.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import av
from av.audio.resampler import AudioResampler

from relaystream.media.wire import EncodedPacket, MessageKind

OPUS_FRAME_SAMPLES = 960  # 20 ms at 48 kHz, what WebRTC endpoints expect
OPUS_BITRATE_BPS = 64_000
OPUS_RATE = 48_000


class OpusPassthrough:
    """Forwards an Opus source's packets as they are, restamped on the 48 kHz clock."""

    def __init__(self, stream: av.AudioStream) -> None:
        self.attach(stream)

    def attach(self, stream: av.AudioStream) -> None:
        self._stream = stream

    def process(
        self, packet: av.Packet[Any] | None, media_time_s: float
    ) -> Iterator[EncodedPacket]:
        if packet is None:
            return
        yield EncodedPacket(
            kind=MessageKind.AUDIO, data=bytes(packet), pts=max(0, round(media_time_s * OPUS_RATE))
        )

    def end_of_pass(self) -> Iterator[EncodedPacket]:
        return iter(())

    def finish(self) -> Iterator[EncodedPacket]:
        return iter(())


class AudioToOpus:
    """Decodes any audio and encodes it once to Opus 48 kHz stereo, 20 ms frames.

    Output time counts samples, immune to source jitter; it only moves to the timeline's
    time where the source starts over (a loop, a reopen), and never backwards.
    """

    def __init__(self, stream: av.AudioStream) -> None:
        self._resampler = AudioResampler(
            format="s16", layout="stereo", rate=OPUS_RATE, frame_size=OPUS_FRAME_SAMPLES
        )
        self._encoder = av.CodecContext.create("libopus", "w")
        self._encoder.sample_rate = OPUS_RATE
        self._encoder.layout = "stereo"
        self._encoder.format = "s16"
        self._encoder.time_base = Fraction(1, OPUS_RATE)
        self._encoder.bit_rate = OPUS_BITRATE_BPS
        self._next_pts: int | None = None
        self._resync = True
        self.attach(stream)

    def attach(self, stream: av.AudioStream) -> None:
        self._stream = stream

    def process(
        self, packet: av.Packet[Any] | None, media_time_s: float
    ) -> Iterator[EncodedPacket]:
        if packet is not None and self._resync:
            wanted = max(0, round(media_time_s * OPUS_RATE))
            self._next_pts = max(self._next_pts or 0, wanted)
            self._resync = False
        try:
            frames = self._stream.codec_context.decode(packet)
        except av.error.InvalidDataError:
            frames = []  # a damaged packet is a moment of silence, not the end
        for frame in frames:
            for resampled in self._resampler.resample(frame):
                yield from self._encode(resampled)
        if packet is None:  # end of stream: flush the resampler, then the encoder
            for resampled in self._resampler.resample(None):
                yield from self._encode(resampled)
            yield from self._encode(None)

    def finish(self) -> Iterator[EncodedPacket]:
        return self.process(None, 0.0)

    def end_of_pass(self) -> Iterator[EncodedPacket]:
        """Decode what is buffered; the next pass resynchronises with the timeline."""
        for frame in self._stream.codec_context.decode(None):
            for resampled in self._resampler.resample(frame):
                yield from self._encode(resampled)
        self._stream.codec_context.flush_buffers()
        self._resync = True

    def _encode(self, frame: av.AudioFrame | None) -> Iterator[EncodedPacket]:
        if frame is not None:
            frame.pts = self._next_pts or 0
            frame.time_base = self._encoder.time_base
            self._next_pts = frame.pts + frame.samples
        for out in self._encoder.encode(frame):
            yield EncodedPacket(kind=MessageKind.AUDIO, data=bytes(out), pts=out.pts or 0)
