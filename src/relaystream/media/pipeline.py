"""The relay pipeline: demux a source, turn it into H.264 + Opus packets, pace them.

Video is either forwarded untouched (remux: the source's H.264 with only its framing
changed to Annex B) or decoded, scaled, padded, frame-rate converted and encoded once
with libx264 (transcode). Audio is always decoded and encoded once to Opus 48 kHz, since
WebRTC has no AAC. Output is paced in real time against the source's timestamps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import av.container
import av.filter
import av.stream
from av.audio.resampler import AudioResampler
from av.bitstream import BitStreamFilterContext
from av.video.frame import PictureType

from relaystream.media.events import (
    AudioInput,
    SourceOpened,
    SourceProgress,
    TrackCounters,
    VideoInput,
    VideoOutput,
    WorkerEvent,
)
from relaystream.media.source import SourceError, describe_ffmpeg_error, open_source
from relaystream.media.spec import MediaType, PipelineSpec, StreamMode
from relaystream.media.wire import EncodedPacket, MessageKind

OPUS_FRAME_SAMPLES = 960  # 20 ms at 48 kHz, what WebRTC endpoints expect
OPUS_BITRATE_BPS = 64_000
STATS_INTERVAL_S = 2.0

PacketSink = Callable[[EncodedPacket], None]
EventSink = Callable[[WorkerEvent], None]


class RealtimePacer:
    """Sleeps so that media time advances with wall-clock time.

    A source that falls behind (a live stream that stalled) or jumps ahead (a
    timestamp discontinuity) is re-anchored instead of being played in a burst or
    waited for.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_lag_s: float = 1.0,
        max_wait_s: float = 5.0,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._max_lag_s = max_lag_s
        self._max_wait_s = max_wait_s
        self._origin: float | None = None

    def wait_for(self, media_time_s: float) -> None:
        now = self._clock()
        if self._origin is None:
            self._origin = now - media_time_s
        delay = self._origin + media_time_s - now
        if delay > self._max_wait_s or delay < -self._max_lag_s:
            self._origin = now - media_time_s
        elif delay > 0:
            self._sleep(delay)


@dataclass
class TrackStats:
    """Input statistics of one selected source track."""

    packets: int = 0
    bytes: int = 0
    keyframes: int = 0
    last_keyframe_s: float | None = None
    max_keyframe_interval_s: float = 0.0

    def count(self, packet: av.Packet[Any], media_time_s: float) -> None:
        self.packets += 1
        self.bytes += packet.size
        if packet.is_keyframe:
            self.keyframes += 1
            if self.last_keyframe_s is not None:
                interval = media_time_s - self.last_keyframe_s
                self.max_keyframe_interval_s = max(self.max_keyframe_interval_s, interval)
            self.last_keyframe_s = media_time_s


def _video_packet(packet: av.Packet[Any], media_time_s: float) -> EncodedPacket:
    """An H.264 access unit stamped on the 90 kHz RTP video clock."""
    return EncodedPacket(
        kind=MessageKind.VIDEO,
        data=bytes(packet),
        pts=round(media_time_s * 90_000),
        keyframe=packet.is_keyframe,
    )


class VideoRemuxer:
    """Forwards H.264 packets untouched but for Annex B framing (SPS/PPS before IDR)."""

    def __init__(self, stream: av.VideoStream) -> None:
        codec_name = stream.codec_context.name
        if codec_name != "h264":
            raise SourceError(
                f"unsupported codec: remux mode needs H.264 video, the source has {codec_name}"
            )
        self._annexb = BitStreamFilterContext("h264_mp4toannexb", in_stream=stream)

    def process(self, packet: av.Packet[Any] | None, origin_s: float) -> Iterator[EncodedPacket]:
        for out in self._annexb.filter(packet):
            timestamp = out.pts if out.pts is not None else out.dts
            if timestamp is None or out.time_base is None:
                continue
            yield _video_packet(out, float(timestamp * out.time_base) - origin_s)


class VideoTranscoder:
    """Decodes, fits into the target size (aspect kept, padded), converts the frame rate
    and encodes once with libx264 tuned for real time."""

    def __init__(self, stream: av.VideoStream, spec: PipelineSpec) -> None:
        codec_name = stream.codec_context.name
        if codec_name not in {"h264", "hevc"}:
            raise SourceError(
                "unsupported codec: transcode needs H.264 or HEVC video, "
                f"the source has {codec_name}"
            )
        if spec.video_width is None or spec.video_height is None:
            raise SourceError("transcoding video needs VideoWidth and VideoHeight")
        self._stream = stream
        self._width = spec.video_width
        self._height = spec.video_height
        self._frame_rate = spec.frame_rate
        self._graph: av.filter.Graph | None = None
        self._encoder = av.CodecContext.create("libx264", "w")
        self._encoder.width = self._width
        self._encoder.height = self._height
        self._encoder.pix_fmt = "yuv420p"
        self._encoder.time_base = Fraction(1, self._frame_rate)
        self._encoder.framerate = Fraction(self._frame_rate, 1)
        self._encoder.gop_size = self._frame_rate * 2
        # Constrained baseline with in-band SPS/PPS: what every WebRTC H.264 decoder takes.
        x264_params = "repeat-headers=1:bframes=0"
        if spec.bitrate_kbps:
            self._encoder.bit_rate = spec.bitrate_kbps * 1000
            x264_params += f":vbv-maxrate={spec.bitrate_kbps}:vbv-bufsize={spec.bitrate_kbps}"
        self._encoder.options = {
            "preset": "veryfast",
            "tune": "zerolatency",
            "profile": "baseline",
            "x264-params": x264_params,
        }

    def _build_graph(self, frame: av.VideoFrame) -> av.filter.Graph:
        graph = av.filter.Graph()
        source = graph.add_buffer(
            width=frame.width,
            height=frame.height,
            format=frame.format,
            time_base=self._stream.time_base,
        )
        w, h = self._width, self._height
        chain = [
            graph.add("scale", f"{w}:{h}:force_original_aspect_ratio=decrease"),
            graph.add("pad", f"{w}:{h}:(ow-iw)/2:(oh-ih)/2"),
            graph.add("fps", str(self._frame_rate)),
            graph.add("format", "yuv420p"),
            graph.add("buffersink"),
        ]
        node = source
        for following in chain:
            node.link_to(following)
            node = following
        graph.configure()
        return graph

    def process(self, packet: av.Packet[Any] | None, origin_s: float) -> Iterator[EncodedPacket]:
        for frame in self._stream.codec_context.decode(packet):
            if self._graph is None:
                self._graph = self._build_graph(frame)
            self._graph.push(frame)
            yield from self._drain_graph(origin_s)
        if packet is None:
            yield from self._encode(None, origin_s)

    def _drain_graph(self, origin_s: float) -> Iterator[EncodedPacket]:
        assert self._graph is not None
        while True:
            try:
                frame = self._graph.pull()
            except (BlockingIOError, EOFError):
                return
            assert isinstance(frame, av.VideoFrame)
            yield from self._encode(frame, origin_s)

    def _encode(self, frame: av.VideoFrame | None, origin_s: float) -> Iterator[EncodedPacket]:
        if frame is not None:
            if frame.pts is None or frame.time_base is None:
                return
            frame.pict_type = PictureType.NONE  # let the encoder place keyframes
            frame.pts = round(float(frame.pts * frame.time_base) * self._frame_rate)
            frame.time_base = self._encoder.time_base
        for out in self._encoder.encode(frame):
            if out.pts is None:
                continue
            yield _video_packet(out, out.pts / self._frame_rate - origin_s)


class AudioToOpus:
    """Decodes any audio and encodes it once to Opus 48 kHz stereo, 20 ms frames."""

    def __init__(self, stream: av.AudioStream) -> None:
        self._stream = stream
        self._resampler = AudioResampler(
            format="s16", layout="stereo", rate=48_000, frame_size=OPUS_FRAME_SAMPLES
        )
        self._encoder = av.CodecContext.create("libopus", "w")
        self._encoder.sample_rate = 48_000
        self._encoder.layout = "stereo"
        self._encoder.format = "s16"
        self._encoder.time_base = Fraction(1, 48_000)
        self._encoder.bit_rate = OPUS_BITRATE_BPS
        self._next_pts: int | None = None

    def process(self, packet: av.Packet[Any] | None, origin_s: float) -> Iterator[EncodedPacket]:
        for frame in self._stream.codec_context.decode(packet):
            if self._next_pts is None and frame.pts is not None and frame.time_base is not None:
                self._next_pts = round((float(frame.pts * frame.time_base) - origin_s) * 48_000)
            for resampled in self._resampler.resample(frame):
                yield from self._encode(resampled)
        if packet is None:  # end of stream: flush the resampler, then the encoder
            for resampled in self._resampler.resample(None):
                yield from self._encode(resampled)
            yield from self._encode(None)

    def _encode(self, frame: av.AudioFrame | None) -> Iterator[EncodedPacket]:
        if frame is not None:
            # Count samples ourselves: continuous timestamps, immune to source jitter.
            frame.pts = self._next_pts or 0
            frame.time_base = self._encoder.time_base
            self._next_pts = frame.pts + frame.samples
        for out in self._encoder.encode(frame):
            yield EncodedPacket(kind=MessageKind.AUDIO, data=bytes(out), pts=out.pts or 0)


@dataclass
class SelectedTracks:
    video: av.VideoStream | None
    audio: av.AudioStream | None
    stats: dict[int, TrackStats] = field(default_factory=dict)

    @property
    def streams(self) -> list[av.VideoStream | av.AudioStream]:
        return [s for s in (self.video, self.audio) if s is not None]


def select_tracks(container: av.container.InputContainer, media_type: MediaType) -> SelectedTracks:
    video = container.streams.video[0] if container.streams.video else None
    audio = container.streams.audio[0] if container.streams.audio else None
    if media_type is MediaType.AUDIO_ONLY:
        if audio is None:
            raise SourceError("MediaType 1 (audio only) but the source has no audio")
        if audio.codec_context.name not in {"aac", "opus"}:
            raise SourceError(
                f"unsupported codec: audio-only relay needs AAC or Opus, the source has "
                f"{audio.codec_context.name}"
            )
        video = None
    elif media_type is MediaType.VIDEO_ONLY:
        if video is None:
            raise SourceError("MediaType 2 (video only) but the source has no video")
        audio = None
    elif video is None and audio is None:
        raise SourceError("the source has neither audio nor video")
    tracks = SelectedTracks(video=video, audio=audio)
    tracks.stats = {s.index: TrackStats() for s in tracks.streams}
    return tracks


def describe_tracks(tracks: SelectedTracks) -> tuple[VideoInput | None, AudioInput | None]:
    """Input codec, resolution, frame rate and bitrate of the selected tracks."""
    video_input = audio_input = None
    if tracks.video is not None:
        video = tracks.video.codec_context
        rate = tracks.video.average_rate or tracks.video.guessed_rate
        video_input = VideoInput(
            codec=video.name,
            width=video.width,
            height=video.height,
            frame_rate=float(rate) if rate else None,
            bitrate_kbps=(video.bit_rate or 0) // 1000 or None,
            # WebRTC receivers do not reorder frames: a remuxed stream with B-frames
            # plays jerkily or not at all, so say so where the user looks.
            b_frames=bool(video.has_b_frames),
        )
    if tracks.audio is not None:
        audio = tracks.audio.codec_context
        audio_input = AudioInput(
            codec=audio.name,
            sample_rate=audio.sample_rate,
            channels=audio.layout.nb_channels,
            bitrate_kbps=(audio.bit_rate or 0) // 1000 or None,
        )
    return video_input, audio_input


def _is_live(container: av.container.InputContainer) -> tuple[bool, float | None]:
    """(live, duration in s): a source with a known duration is VOD."""
    if container.duration is None or container.duration <= 0:
        return True, None
    return False, container.duration / 1_000_000


class RelayPipeline:
    """Runs one source to the end: emits packets and events through the given sinks."""

    def __init__(self, spec: PipelineSpec, emit_packet: PacketSink, emit_event: EventSink) -> None:
        self._spec = spec
        self._emit_packet = emit_packet
        self._emit_event = emit_event
        self._pacer = RealtimePacer()
        self._last_stats_at = time.monotonic()
        self._position_s = 0.0

    def run(self) -> None:
        """Relay until the source ends; raises SourceError when it cannot be relayed."""
        container = open_source(self._spec)
        try:
            tracks = select_tracks(container, self._spec.media_type)
            video = self._video_processor(tracks.video)
            audio = AudioToOpus(tracks.audio) if tracks.audio is not None else None
            video_input, audio_input = describe_tracks(tracks)
            live, duration_s = _is_live(container)
            self._emit_event(
                SourceOpened(
                    video=video_input,
                    audio=audio_input,
                    video_output=self._video_output(video),
                    live=live,
                    duration_s=duration_s,
                )
            )
            origin_s: float | None = None
            try:
                for packet in container.demux(tracks.streams):
                    if packet.size == 0:  # demuxer's end-of-stream marker
                        continue
                    timestamp = packet.dts if packet.dts is not None else packet.pts
                    if timestamp is None or packet.time_base is None:
                        continue
                    packet_time_s = float(timestamp * packet.time_base)
                    if origin_s is None:
                        origin_s = packet_time_s
                    media_time_s = packet_time_s - origin_s
                    self._position_s = media_time_s
                    tracks.stats[packet.stream.index].count(packet, media_time_s)
                    self._pacer.wait_for(media_time_s)
                    processor = video if packet.stream is tracks.video else audio
                    if processor is not None:
                        for encoded in processor.process(packet, origin_s):
                            self._emit_packet(encoded)
                    self._maybe_emit_stats(tracks)
            except av.error.EOFError:
                pass
            except (av.error.FFmpegError, OSError) as exc:
                raise SourceError(describe_ffmpeg_error(exc)) from exc
            for processor in (video, audio):
                if processor is not None and origin_s is not None:
                    for encoded in processor.process(None, origin_s):
                        self._emit_packet(encoded)
            self._emit_stats(tracks)
        finally:
            container.close()

    def _video_processor(
        self, stream: av.VideoStream | None
    ) -> VideoRemuxer | VideoTranscoder | None:
        if stream is None:
            return None
        if self._spec.stream_mode is StreamMode.REMUX:
            return VideoRemuxer(stream)
        return VideoTranscoder(stream, self._spec)

    def _maybe_emit_stats(self, tracks: SelectedTracks) -> None:
        if time.monotonic() - self._last_stats_at >= STATS_INTERVAL_S:
            self._emit_stats(tracks)

    def _video_output(self, video: VideoRemuxer | VideoTranscoder | None) -> VideoOutput | None:
        if video is None:
            return None
        if isinstance(video, VideoTranscoder):
            return VideoOutput(transcoded=True, reason="StreamMode")
        return VideoOutput(transcoded=False)

    def _emit_stats(self, tracks: SelectedTracks) -> None:
        self._last_stats_at = time.monotonic()
        counters: dict[str, TrackCounters] = {}
        max_keyframe_interval_s = 0.0
        for name, stream in (("video", tracks.video), ("audio", tracks.audio)):
            if stream is None:
                continue
            stats = tracks.stats[stream.index]
            counters[name] = TrackCounters(packets=stats.packets, bytes=stats.bytes)
            if name == "video":
                max_keyframe_interval_s = round(stats.max_keyframe_interval_s, 3)
        self._emit_event(
            SourceProgress(
                position_s=round(self._position_s, 3),
                video=counters.get("video"),
                audio=counters.get("audio"),
                max_keyframe_interval_s=max_keyframe_interval_s,
            )
        )
