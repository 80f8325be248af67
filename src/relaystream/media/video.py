"""Video out of a pipeline: H.264 forwarded untouched (remux) or encoded once (transcode).

Packets arrive already rebased by timeline.py, so their timestamps are continuous: the
frame-rate filter here never sees a jump it would fill with duplicates.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.filter
from av.bitstream import BitStreamFilterContext
from av.video.frame import PictureType

from relaystream.media.control import PipelineControl
from relaystream.media.failures import SourceError
from relaystream.media.spec import PipelineSpec
from relaystream.media.wire import EncodedPacket, MessageKind

KEYFRAME_INTERVAL_S = 2  # transcode: a viewer joining mid-stream waits at most this
# A Bitrate above this is no cap at all (and would overflow x264's rate settings).
MAX_BITRATE_KBPS = 1_000_000
MAX_SOURCE_SIZE_FRAME_RATE = 30  # B-frame fallback: the room's own ceiling (SPEC FrameRate)


def video_packet(data: bytes, media_time_s: float, keyframe: bool) -> EncodedPacket:
    """An H.264 access unit stamped on the 90 kHz RTP video clock."""
    return EncodedPacket(
        kind=MessageKind.VIDEO, data=data, pts=round(media_time_s * 90_000), keyframe=keyframe
    )


class VideoRemuxer:
    """Forwards H.264 packets untouched but for Annex B framing (SPS/PPS before IDR)."""

    def __init__(self, stream: av.VideoStream) -> None:
        self.attach(stream)

    def attach(self, stream: av.VideoStream) -> None:
        """Read from ``stream`` from now on (the source was reopened)."""
        codec_name = stream.codec_context.name
        if codec_name != "h264":
            raise SourceError(
                f"unsupported codec: remux mode needs H.264 video, the source has {codec_name}"
            )
        try:
            self._annexb = BitStreamFilterContext("h264_mp4toannexb", in_stream=stream)
        except av.error.FFmpegError:
            raise SourceError(
                "corrupt data: the source's H.264 parameter sets are invalid"
            ) from None

    def process(self, packet: av.Packet[Any] | None) -> Iterator[EncodedPacket]:
        for out in self._annexb.filter(packet):
            timestamp = out.pts if out.pts is not None else out.dts
            if timestamp is None or out.time_base is None:
                continue
            yield video_packet(bytes(out), float(timestamp * out.time_base), out.is_keyframe)

    def end_of_pass(self) -> Iterator[EncodedPacket]:
        """The source is about to start over: nothing is buffered in a remux."""
        return iter(())

    def finish(self) -> Iterator[EncodedPacket]:
        return self.process(None)


@dataclass(frozen=True)
class TranscodeTarget:
    width: int
    height: int
    frame_rate: int
    bitrate_kbps: int | None = None

    @classmethod
    def from_spec(cls, spec: PipelineSpec) -> TranscodeTarget:
        if spec.video_width is None or spec.video_height is None:
            raise SourceError("transcoding video needs VideoWidth and VideoHeight")
        bitrate_kbps = spec.bitrate_kbps
        if bitrate_kbps is not None and bitrate_kbps > MAX_BITRATE_KBPS:
            bitrate_kbps = None
        return cls(spec.video_width, spec.video_height, spec.frame_rate, bitrate_kbps)

    @classmethod
    def like_source(cls, stream: av.VideoStream) -> TranscodeTarget:
        """The source's own size and frame rate (for a remux that has to re-encode)."""
        rate = stream.average_rate or stream.guessed_rate or 30
        frame_rate = max(1, min(MAX_SOURCE_SIZE_FRAME_RATE, round(float(rate))))
        context = stream.codec_context
        return cls(context.width // 2 * 2, context.height // 2 * 2, frame_rate)


def check_transcode_size(width: int, height: int, spec: PipelineSpec) -> None:
    """Refuse a picture too large to transcode; portrait is measured like landscape."""
    limit_long = max(spec.max_transcode_width, spec.max_transcode_height)
    limit_short = min(spec.max_transcode_width, spec.max_transcode_height)
    if max(width, height) > limit_long or min(width, height) > limit_short:
        raise SourceError(
            f"the source's video is {width}x{height}, over the "
            f"{spec.max_transcode_width}x{spec.max_transcode_height} limit for transcoding"
        )


class VideoTranscoder:
    """Decodes, fits into the target size (aspect kept, padded), converts the frame rate
    and encodes once with libx264 tuned for real time."""

    def __init__(
        self,
        stream: av.VideoStream,
        target: TranscodeTarget,
        spec: PipelineSpec,
        control: PipelineControl,
    ) -> None:
        self._spec = spec
        self._control = control
        self._target = target
        self.attach(stream)
        self._graph: av.filter.Graph | None = None
        self._graph_input: tuple[int, int, str] | None = None
        self._encoder = self._make_encoder(target)
        self._last_pts: int | None = None

    def attach(self, stream: av.VideoStream) -> None:
        codec_name = stream.codec_context.name
        if codec_name not in {"h264", "hevc"}:
            raise SourceError(
                "unsupported codec: transcode needs H.264 or HEVC video, "
                f"the source has {codec_name}"
            )
        check_transcode_size(stream.codec_context.width, stream.codec_context.height, self._spec)
        self._stream = stream
        # Slice threads only: frame threads hold frames back (one per thread), which
        # shows as a stall each time a looping source starts over.
        stream.codec_context.thread_type = "SLICE"

    @staticmethod
    def _make_encoder(target: TranscodeTarget) -> av.VideoCodecContext:
        encoder = av.CodecContext.create("libx264", "w")
        assert isinstance(encoder, av.VideoCodecContext)
        encoder.width = target.width
        encoder.height = target.height
        encoder.pix_fmt = "yuv420p"
        encoder.time_base = Fraction(1, target.frame_rate)
        encoder.framerate = Fraction(target.frame_rate, 1)
        encoder.gop_size = target.frame_rate * KEYFRAME_INTERVAL_S
        # Constrained baseline with in-band SPS/PPS: what every WebRTC H.264 decoder takes.
        x264_params = "repeat-headers=1:bframes=0"
        if target.bitrate_kbps:
            encoder.bit_rate = target.bitrate_kbps * 1000
            x264_params += f":vbv-maxrate={target.bitrate_kbps}:vbv-bufsize={target.bitrate_kbps}"
        encoder.options = {
            "preset": "veryfast",
            "tune": "zerolatency",
            "profile": "baseline",
            # A keyframe asked for by the server (a viewer joined) is an IDR.
            "forced-idr": "1",
            "x264-params": x264_params,
        }
        return encoder

    def _build_graph(self, frame: av.VideoFrame) -> av.filter.Graph:
        graph = av.filter.Graph()
        source = graph.add_buffer(
            width=frame.width,
            height=frame.height,
            format=frame.format,
            time_base=self._stream.time_base,
        )
        w, h, rate = self._target.width, self._target.height, self._target.frame_rate
        chain = [
            graph.add("scale", f"{w}:{h}:force_original_aspect_ratio=decrease"),
            graph.add("pad", f"{w}:{h}:(ow-iw)/2:(oh-ih)/2"),
            graph.add("fps", str(rate)),
            graph.add("format", "yuv420p"),
            graph.add("buffersink"),
        ]
        node = source
        for following in chain:
            node.link_to(following)
            node = following
        graph.configure()
        return graph

    def process(self, packet: av.Packet[Any]) -> Iterator[EncodedPacket]:
        try:
            frames = self._stream.codec_context.decode(packet)
        except av.error.InvalidDataError:
            # One damaged packet costs a frame or a few, not the relay; the decoder
            # recovers at the next keyframe.
            return
        for frame in frames:
            yield from self._filter(frame)

    def finish(self) -> Iterator[EncodedPacket]:
        """The source's end: flush decoder, filters (the frame-rate filter holds the last
        frame) and encoder."""
        for frame in self._stream.codec_context.decode(None):
            yield from self._filter(frame)
        if self._graph is not None:
            self._graph.push(None)
            yield from self._pull_filtered()
        yield from self._encode(None)

    def end_of_pass(self) -> Iterator[EncodedPacket]:
        """Decode what the decoder still holds, then make it ready for a new pass."""
        for frame in self._stream.codec_context.decode(None):
            yield from self._filter(frame)
        self._stream.codec_context.flush_buffers()

    def _filter(self, frame: av.VideoFrame) -> Iterator[EncodedPacket]:
        shape = (frame.width, frame.height, frame.format.name)
        if self._graph is None or shape != self._graph_input:
            # The source's picture changed size mid-stream: check it, and rebuild.
            check_transcode_size(frame.width, frame.height, self._spec)
            self._graph, self._graph_input = self._build_graph(frame), shape
        self._graph.push(frame)
        yield from self._pull_filtered()

    def _pull_filtered(self) -> Iterator[EncodedPacket]:
        assert self._graph is not None
        while True:
            try:
                filtered = self._graph.pull()
            except (BlockingIOError, EOFError):
                return
            assert isinstance(filtered, av.VideoFrame)
            yield from self._encode(filtered)

    def _encode(self, frame: av.VideoFrame | None) -> Iterator[EncodedPacket]:
        rate = self._target.frame_rate
        if frame is not None:
            if frame.pts is None or frame.time_base is None:
                return
            pts = round(float(frame.pts * frame.time_base) * rate)
            if self._last_pts is not None and pts <= self._last_pts:
                return  # a rebuilt filter graph may repeat the last slot: never go back
            self._last_pts = frame.pts = pts
            keyframe = self._control.take_keyframe_request()
            frame.pict_type = PictureType.I if keyframe else PictureType.NONE
            frame.time_base = self._encoder.time_base
        for out in self._encoder.encode(frame):
            if out.pts is None:
                continue
            yield video_packet(bytes(out), out.pts / rate, out.is_keyframe)
