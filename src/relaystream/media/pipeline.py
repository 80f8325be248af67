"""The relay pipeline: demux a source, turn it into H.264 + Opus packets, pace them.

Every packet is first rebased onto one continuous timeline (timeline.py), so jumps,
wraps and loops never reach a decoder or filter as gaps. Video is then forwarded
untouched (remux) or encoded once (transcode, video.py); audio becomes Opus (audio.py).
Output is paced in real time (a continuous live source catching up with its live edge,
pacing.py) and its timestamps start near 0 for every worker.

A VOD may start at a position (a relaunched worker resuming) and may loop: at its end the
pipeline seeks back to the start, or reopens the source, without a visible gap.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import av
import av.container
import av.stream

from relaystream.media.audio import AudioToOpus, OpusPassthrough
from relaystream.media.bridge import CliBridge
from relaystream.media.control import PipelineControl
from relaystream.media.dash import DashManifest, fetch_manifest
from relaystream.media.events import (
    AudioInput,
    SourceOpened,
    SourceProgress,
    TrackCounters,
    VideoInput,
    VideoOutput,
    WorkerEvent,
)
from relaystream.media.failures import SourceError, classify
from relaystream.media.formats import (
    BRIDGED_KINDS,
    CONTINUOUS_KINDS,
    SourceKind,
    duration_s,
    is_live,
    source_kind,
    unverified_tls_context,
)
from relaystream.media.pacing import LIVE_CATCH_UP_RATE, RealtimePacer
from relaystream.media.source import (
    check_scheme,
    open_source,
    pin_stream_url,
    policy_failure,
    source_policy,
)
from relaystream.media.spec import MediaType, PipelineSpec, StreamMode
from relaystream.media.timeline import Timeline
from relaystream.media.video import (
    TranscodeTarget,
    VideoRemuxer,
    VideoTranscoder,
    check_transcode_size,
)
from relaystream.media.wire import EncodedPacket
from relaystream.netpolicy import (
    AddressRefused,
    CheckedHttpClient,
    HttpLimits,
    Unresolvable,
)
from relaystream.netpolicy.proxy import CheckingProxy

STATS_INTERVAL_S = 2.0
# A VOD ending this much before its announced duration was truncated.
TRUNCATION_SLACK_S = 1.0
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")

PacketSink = Callable[[EncodedPacket], None]
EventSink = Callable[[WorkerEvent], None]
VideoProcessor = VideoRemuxer | VideoTranscoder
AudioProcessor = AudioToOpus | OpusPassthrough


@dataclass
class TrackStats:
    """Input statistics of one selected source track."""

    packets: int = 0
    bytes: int = 0
    keyframes: int = 0
    first_time_s: float | None = None
    last_time_s: float = 0.0
    last_keyframe_s: float | None = None
    max_keyframe_interval_s: float = 0.0

    def count(self, packet: av.Packet[Any], media_time_s: float) -> None:
        self.packets += 1
        self.bytes += packet.size
        if self.first_time_s is None:
            self.first_time_s = media_time_s
        self.last_time_s = media_time_s
        if packet.is_keyframe:
            self.keyframes += 1
            if self.last_keyframe_s is not None:
                interval = media_time_s - self.last_keyframe_s
                self.max_keyframe_interval_s = max(self.max_keyframe_interval_s, interval)
            self.last_keyframe_s = media_time_s

    def counters(self) -> TrackCounters:
        span_s = self.last_time_s - (self.first_time_s or 0.0)
        bitrate = round(self.bytes * 8 / 1000 / span_s) if span_s >= 1.0 else None
        return TrackCounters(packets=self.packets, bytes=self.bytes, bitrate_kbps=bitrate)


@dataclass
class SelectedTracks:
    video: av.VideoStream | None
    audio: av.AudioStream | None
    stats: dict[str, TrackStats] = field(default_factory=dict)

    @property
    def streams(self) -> list[av.VideoStream | av.AudioStream]:
        return [s for s in (self.video, self.audio) if s is not None]


def select_tracks(container: av.container.InputContainer, media_type: MediaType) -> SelectedTracks:
    # A stream whose codec FFmpeg cannot name has no codec context: not a candidate.
    videos = [s for s in container.streams.video if s.codec_context is not None]
    audios = [s for s in container.streams.audio if s.codec_context is not None]
    video = videos[0] if videos else None
    audio = audios[0] if audios else None
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
    return SelectedTracks(video=video, audio=audio)


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
            frame_rate=round(float(rate), 3) if rate else None,
            bitrate_kbps=(video.bit_rate or 0) // 1000 or None,
            # WebRTC receivers do not reorder frames: B-frames cannot be remuxed.
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


def _resident_memory_mb() -> float | None:
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(resident_pages * _PAGE_BYTES / 1_000_000, 1)


class PipelineEnd(Enum):
    ENDED = "ended"  # a VOD played to its end (without Loop)
    STOPPED = "stopped"  # the server asked to stop; nothing more is emitted


class RelayPipeline:
    """Runs one source: emits packets and events through the given sinks.

    ``run`` returns how it ended, or raises SourceError (with ``retryable``) when the
    source cannot be relayed: a live source that ends is such an error, not an end.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        emit_packet: PacketSink,
        emit_event: EventSink,
        control: PipelineControl | None = None,
    ) -> None:
        self._spec = spec
        self._emit_packet = emit_packet
        self._emit_event = emit_event
        self._control = control or PipelineControl()
        self._timeline = Timeline()
        self._last_stats_at = time.monotonic()
        self._position_s = 0.0
        self._flowed = False
        self._loops = 0
        self._kind = source_kind(spec.url)
        # Replaced once the source is open and known to be live or not.
        self._pacer = self._pacer_for(live=False)
        self._video: VideoProcessor | None = None
        self._audio: AudioProcessor | None = None
        self._bridge: CliBridge | None = None
        self._manifest: DashManifest | None = None
        self._bridge_url: str | None = None
        # The bridged CLI's http_proxy: each of its requests passes the address policy.
        self._proxy: CheckingProxy | None = None
        # Where in the source the current open started (a bridged source's own seek).
        self._position_base_s = 0.0
        self._live = True

    def run(self) -> PipelineEnd:
        try:
            return self._run()
        finally:
            if self._proxy is not None:
                self._proxy.close()

    def _run(self) -> PipelineEnd:
        self._check_bridged_source()
        bridged = self._kind in BRIDGED_KINDS
        container = self._open(self._spec.start_position_s if bridged else 0.0)
        try:
            tracks = select_tracks(container, self._spec.media_type)
            self._video, video_output = self._video_processor(tracks.video)
            self._audio = self._audio_processor(tracks.audio)
            live, total_s = self._liveness(container)
            self._live = live
            self._pacer = self._pacer_for(live)
            if self._spec.start_position_s > 0 and not live and not bridged:
                container, tracks = self._seek_or_reopen(
                    container, tracks, self._spec.start_position_s
                )
            video_input, audio_input = describe_tracks(tracks)
            self._emit_event(
                SourceOpened(
                    video=video_input,
                    audio=audio_input,
                    video_output=video_output,
                    live=live,
                    duration_s=total_s,
                )
            )
            while True:
                read_any = self._relay_pass(container, tracks)
                if self._control.stopped:
                    return PipelineEnd.STOPPED
                if self._bridge is not None and not self._bridge.ended_cleanly():
                    raise self._bridge.failure()
                if live:
                    raise SourceError("the live source ended", retryable=True)
                self._check_complete(total_s)
                if not (self._spec.loop and read_any):
                    break
                self._flush(lambda p: p.end_of_pass())
                self._loops += 1
                self._timeline.restart()
                container, tracks = self._seek_or_reopen(container, tracks, 0.0)
            self._flush(lambda p: p.finish())
            self._emit_stats(tracks)
            return PipelineEnd.ENDED
        finally:
            container.close()
            if self._bridge is not None:
                self._bridge.close()

    def _check_complete(self, total_s: float | None) -> None:
        """A VOD that ends well before its announced duration was cut short: say where.

        A source whose clock jumped cannot be measured this way, and is let be.
        """
        if total_s is None or not self._flowed or self._timeline.discontinuities:
            return
        if self._position_s < total_s - TRUNCATION_SLACK_S:
            raise SourceError(
                f"corrupt data at {self._position_s:.1f} s: the source ended before "
                f"its announced {total_s:.1f} s"
            )

    def _check_bridged_source(self) -> None:
        """What the CLI will fetch must pass the address policy before it runs."""
        if self._kind not in BRIDGED_KINDS:
            return
        check_scheme(self._spec.url)
        policy = source_policy(self._spec)

        def check_url(url: str) -> None:
            try:
                policy.destination(url)
            except (AddressRefused, Unresolvable) as exc:
                raise policy_failure(exc) from None

        check_url(self._spec.url)
        if self._kind is SourceKind.SRT:
            # The CLI connects to the address checked here: a second DNS answer is unused.
            self._bridge_url = pin_stream_url(self._spec.url, policy)[0]
        if self._kind is SourceKind.DASH:
            limits = HttpLimits(
                read_timeout_s=self._spec.open_timeout_s,
                connect_timeout_s=self._spec.open_timeout_s,
            )
            tls = None if self._spec.tls_verify else unverified_tls_context()
            client = CheckedHttpClient(policy, limits=limits, tls=tls)
            self._manifest = fetch_manifest(
                self._spec.url, client, timeout_s=self._spec.open_timeout_s, check_url=check_url
            )
            self._proxy = CheckingProxy(policy, limits)

    def _open(self, position_s: float) -> av.container.InputContainer:
        """Open the source; a bridged one starts at ``position_s`` (a pipe cannot seek)."""
        if self._kind not in BRIDGED_KINDS:
            return open_source(self._spec)
        if self._bridge is not None:
            self._bridge.close()
        manifest = self._manifest
        loops_itself = self._spec.loop and manifest is not None and not manifest.live
        self._bridge = CliBridge(
            self._spec,
            self._kind,
            position_s,
            loop=loops_itself,
            url=self._bridge_url,
            proxy=self._proxy,
        )
        self._position_base_s = position_s
        return self._bridge.open()

    def _pacer_for(self, live: bool) -> RealtimePacer:
        """A live source that delivers as it produces catches up with its live edge
        (pacing.py says why); a VOD, and segments, play at real time."""
        catch_up = live and self._kind in CONTINUOUS_KINDS
        return RealtimePacer(
            sleep=self._control.wait_stop,
            catch_up_rate=LIVE_CATCH_UP_RATE if catch_up else None,
        )

    def _liveness(self, container: av.container.InputContainer) -> tuple[bool, float | None]:
        """(live, duration in s); a bridged pipe knows neither, its manifest does."""
        if self._manifest is not None:
            return self._manifest.live, self._manifest.duration_s
        live = is_live(container, self._kind)
        return live, None if live else duration_s(container)

    def _relay_pass(self, container: av.container.InputContainer, tracks: SelectedTracks) -> bool:
        """Relay packets until the source's end or a stop; True if any packet was read."""
        read_any = False
        start_s = (container.start_time or 0) / 1_000_000
        try:
            for packet in container.demux(tracks.streams):
                if self._control.stopped:
                    return read_any
                if packet.size == 0:  # demuxer's end-of-stream marker
                    continue
                timestamp = packet.dts if packet.dts is not None else packet.pts
                if timestamp is None or packet.time_base is None:
                    continue
                read_any = True
                self._relay_packet(packet, timestamp, start_s, tracks)
        except av.error.EOFError:
            pass
        except (av.error.FFmpegError, OSError) as exc:
            if self._control.stopped:
                return read_any
            if self._bridge is not None:
                raise self._bridge.failure() from exc
            raise self._mid_stream_failure(exc) from exc
        return read_any

    def _relay_packet(
        self, packet: av.Packet[Any], timestamp: int, start_s: float, tracks: SelectedTracks
    ) -> None:
        time_base = packet.time_base
        source_s = float(timestamp * time_base)
        duration_s = float(packet.duration * time_base) if packet.duration else None
        is_video = packet.stream is tracks.video
        name = "video" if is_video else "audio"
        output_s = self._timeline.rebase(packet.stream.index, source_s, duration_s)
        # Shift the packet itself, so decoders and filters see continuous time too.
        shift = round((output_s - source_s) / time_base)
        if packet.pts is not None:
            packet.pts += shift
        if packet.dts is not None:
            packet.dts += shift
        position_s = max(0.0, self._position_base_s + source_s - start_s)
        total_s = self._manifest.duration_s if self._manifest is not None else None
        if self._bridge is not None and self._bridge.loop and total_s:
            # The CLI loops by itself: the pass and the position come from the time read.
            passes, position_s = divmod(position_s, total_s)
            self._loops = int(passes)
        self._position_s = position_s
        self._flowed = True
        tracks.stats.setdefault(name, TrackStats()).count(packet, output_s)
        self._pacer.wait_for(output_s)
        if self._control.stopped:
            return
        encoded: Iterator[EncodedPacket] = iter(())
        if is_video and self._video is not None:
            encoded = self._video.process(packet)
        elif not is_video and self._audio is not None:
            encoded = self._audio.process(packet, output_s)
        for out in encoded:
            self._emit_packet(out)
        if time.monotonic() - self._last_stats_at >= STATS_INTERVAL_S:
            self._emit_stats(tracks)

    def _mid_stream_failure(self, exc: BaseException) -> SourceError:
        failure = classify(
            exc,
            timeout_s=self._spec.open_timeout_s,
            media_flowed_s=self._position_s if self._flowed else None,
        )
        if self._live and self._flowed:
            # A live stream that breaks off after playing is a drop, worth reconnecting.
            return SourceError(failure.detail, retryable=True)
        return failure

    def _seek_or_reopen(
        self, container: av.container.InputContainer, tracks: SelectedTracks, position_s: float
    ) -> tuple[av.container.InputContainer, SelectedTracks]:
        """Move a VOD to ``position_s``: a seek if the source allows, else a new open."""
        if self._bridge is None:
            start_us = container.start_time or 0
            try:
                target_us = start_us + round(position_s * 1_000_000)
                container.seek(target_us, backward=True, any_frame=False)
                return container, tracks
            except (av.error.FFmpegError, OSError):
                pass
        container.close()
        container = self._open(position_s)
        fresh = select_tracks(container, self._spec.media_type)
        fresh.stats = tracks.stats
        if fresh.video is not None and self._video is not None:
            self._video.attach(fresh.video)
        if fresh.audio is not None and self._audio is not None:
            self._audio.attach(fresh.audio)
        if position_s > 0 and self._bridge is None:
            # A source that cannot seek is read from its start up to the position.
            self._skip_to(container, fresh, position_s)
        return container, fresh

    def _skip_to(
        self, container: av.container.InputContainer, tracks: SelectedTracks, position_s: float
    ) -> None:
        start_s = (container.start_time or 0) / 1_000_000
        for packet in container.demux(tracks.streams):
            if self._control.stopped:
                return
            if packet.dts is None or packet.time_base is None:
                continue
            if float(packet.dts * packet.time_base) - start_s >= position_s:
                return

    def _flush(self, drain: Callable[[Any], Iterator[EncodedPacket]]) -> None:
        for processor in (self._video, self._audio):
            if processor is not None:
                for encoded in drain(processor):
                    self._emit_packet(encoded)

    def _video_processor(
        self, stream: av.VideoStream | None
    ) -> tuple[VideoProcessor | None, VideoOutput | None]:
        if stream is None:
            return None, None
        spec = self._spec
        if spec.stream_mode is StreamMode.REMUX:
            remuxer = VideoRemuxer(stream)  # refuses anything but H.264
            if not stream.codec_context.has_b_frames:
                return remuxer, VideoOutput(transcoded=False)
            # WebRTC players do not reorder frames: re-encode, at the source's own size.
            check_transcode_size(stream.codec_context.width, stream.codec_context.height, spec)
            target = TranscodeTarget.like_source(stream)
            reason = "BFrames"
        else:
            target = TranscodeTarget.from_spec(spec)
            reason = "StreamMode"
        transcoder = VideoTranscoder(stream, target, spec, self._control)
        output = VideoOutput(
            transcoded=True,
            reason=reason,
            width=target.width,
            height=target.height,
            frame_rate=target.frame_rate,
        )
        return transcoder, output

    @staticmethod
    def _audio_processor(stream: av.AudioStream | None) -> AudioProcessor | None:
        if stream is None:
            return None
        if stream.codec_context.name == "opus":
            return OpusPassthrough(stream)
        return AudioToOpus(stream)

    def _emit_stats(self, tracks: SelectedTracks) -> None:
        self._last_stats_at = time.monotonic()
        video, audio = tracks.stats.get("video"), tracks.stats.get("audio")
        self._emit_event(
            SourceProgress(
                position_s=round(self._position_s, 3),
                video=video.counters() if video else None,
                audio=audio.counters() if audio else None,
                max_keyframe_interval_s=round(video.max_keyframe_interval_s, 3) if video else 0.0,
                loops=self._loops,
                discontinuities=self._timeline.discontinuities,
                memory_mb=_resident_memory_mb(),
            )
        )
