"""Stories for the relay pipeline: real clips over real HTTP in, H.264 and Opus out.

The pipeline paces itself in real time, so the clips are a second or two long.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import pytest

from relaystream.media.events import SourceOpened, SourceProgress, VideoOutput, WorkerEvent
from relaystream.media.pipeline import RelayPipeline
from relaystream.media.source import SourceError
from relaystream.media.spec import MediaType, PipelineSpec, StreamMode
from relaystream.media.testsrc import ClipSpec, make_test_clip
from relaystream.media.wire import EncodedPacket, MessageKind
from tests.support.net import static_http_server

NAL_IDR, NAL_SPS, NAL_PPS = 5, 7, 8
SOURCE_FPS = 30
SOURCE_SIZE = (320, 180)
BLACK_LUMA_MAX = 24  # black is 16 in limited-range video; a little slack for the codec


# -- the pipeline, on real clips served over HTTP -------------------------------------


@dataclass
class Relayed:
    """Everything one pipeline run emitted."""

    packets: list[EncodedPacket] = field(default_factory=list)
    events: list[WorkerEvent] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def video(self) -> list[EncodedPacket]:
        return [p for p in self.packets if p.kind is MessageKind.VIDEO]

    @property
    def audio(self) -> list[EncodedPacket]:
        return [p for p in self.packets if p.kind is MessageKind.AUDIO]


def relay(url: str, **settings: object) -> Relayed:
    spec = PipelineSpec(url=url, allow_private_sources=True, **settings)  # type: ignore[arg-type]
    relayed = Relayed()
    started = time.monotonic()
    RelayPipeline(spec, relayed.packets.append, relayed.events.append).run()
    relayed.elapsed_s = time.monotonic() - started
    return relayed


def nal_types(access_unit: bytes) -> list[int]:
    return [access_unit[m.end()] & 0x1F for m in re.finditer(b"\x00\x00\x01", access_unit)]


def decode_video(packets: list[EncodedPacket]) -> list[av.VideoFrame]:
    decoder = av.CodecContext.create("h264", "r")
    frames: list[av.VideoFrame] = []
    for packet in packets:
        frames += decoder.decode(av.Packet(packet.data))
    return frames + decoder.decode(None)


def luma_row(frame: av.VideoFrame, y: int) -> bytes:
    plane = frame.planes[0]
    start = y * plane.line_size
    return bytes(plane)[start : start + frame.width]


def steps(values: list[int]) -> set[int]:
    return {b - a for a, b in itertools.pairwise(values)}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of an HTTP server holding the test clips."""
    root: Path = tmp_path_factory.mktemp("sources")
    width, height = SOURCE_SIZE
    make_test_clip(
        root / "clip.mp4",
        ClipSpec(duration_s=2.0, width=width, height=height, frame_rate=SOURCE_FPS),
    )
    make_test_clip(root / "short.mp4", ClipSpec(duration_s=1.0, width=width, height=height))
    make_test_clip(root / "square.mp4", ClipSpec(duration_s=1.0, width=240, height=240))
    make_test_clip(
        root / "silent.mp4", ClipSpec(duration_s=1.0, width=width, height=height, audio_codec=None)
    )
    make_test_clip(
        root / "hevc.mkv",
        ClipSpec(duration_s=1.0, width=width, height=height, video_codec="libx265"),
    )
    with static_http_server(root) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def remuxed(sources: str) -> Relayed:
    """The 2 s clip relayed once in remux mode, audio and video."""
    return relay(f"{sources}/clip.mp4", stream_mode=StreamMode.REMUX)


def test_remux_sends_annex_b_h264_that_starts_with_a_decodable_keyframe(
    remuxed: Relayed,
) -> None:
    video = remuxed.video

    assert all(p.data[:4] == b"\x00\x00\x00\x01" or p.data[:3] == b"\x00\x00\x01" for p in video)
    first = video[0]
    assert first.keyframe
    assert {NAL_SPS, NAL_PPS, NAL_IDR} <= set(nal_types(first.data))


def test_remux_puts_sps_and_pps_before_every_keyframe(remuxed: Relayed) -> None:
    keyframes = [p for p in remuxed.video if p.keyframe]

    assert len(keyframes) == 2  # one per second of the 2 s clip
    for keyframe in keyframes:
        types = nal_types(keyframe.data)
        assert types.index(NAL_SPS) < types.index(NAL_PPS) < types.index(NAL_IDR)
    # The keyframe flag tells the room the truth.
    assert all(p.keyframe == (NAL_IDR in nal_types(p.data)) for p in remuxed.video)


def test_remux_forwards_every_frame_decodable_at_the_source_size(remuxed: Relayed) -> None:
    frames = decode_video(remuxed.video)

    assert len(frames) == 2 * SOURCE_FPS
    assert {(f.width, f.height) for f in frames} == {SOURCE_SIZE}


def test_remux_video_timestamps_advance_at_the_source_rate_on_a_90_khz_clock(
    remuxed: Relayed,
) -> None:
    pts = [p.pts for p in remuxed.video]

    assert steps(pts) == {90_000 // SOURCE_FPS}
    assert 0 <= pts[0] < 90_000 // SOURCE_FPS  # starts near zero, whatever the source's origin


def test_audio_is_opus_at_48_khz_in_20_ms_frames(remuxed: Relayed) -> None:
    audio = remuxed.audio
    decoder = av.CodecContext.create("opus", "r")

    frames = [frame for p in audio[:5] for frame in decoder.decode(av.Packet(p.data))]

    assert {f.sample_rate for f in frames} == {48_000}
    assert {f.samples for f in frames} == {960}
    assert steps([p.pts for p in audio]) == {960}
    assert len(audio) == pytest.approx(2.0 / 0.020, abs=3)


def test_the_opened_event_describes_the_input(remuxed: Relayed) -> None:
    opened = remuxed.events[0]

    assert isinstance(opened, SourceOpened)
    video, audio = opened.video, opened.audio
    assert video is not None and audio is not None
    assert (video.codec, video.width, video.height) == ("h264", *SOURCE_SIZE)
    assert video.frame_rate == SOURCE_FPS
    assert video.b_frames is False
    assert (audio.codec, audio.sample_rate, audio.channels) == ("aac", 44_100, 2)
    assert opened.live is False
    assert opened.duration_s == pytest.approx(2.0, abs=0.1)


def test_remux_of_a_b_frame_source_transcodes_at_its_size_and_says_why(tmp_path: Path) -> None:
    make_test_clip(
        tmp_path / "vod.mp4", ClipSpec(duration_s=1.0, width=320, height=180, b_frames=2)
    )
    with static_http_server(tmp_path) as base_url:
        relayed = relay(f"{base_url}/vod.mp4", stream_mode=StreamMode.REMUX)

    opened = relayed.events[0]
    assert isinstance(opened, SourceOpened) and opened.video is not None
    assert opened.video.b_frames is True
    assert opened.video_output == VideoOutput(
        transcoded=True, reason="BFrames", width=320, height=180, frame_rate=SOURCE_FPS
    )
    # WebRTC players show frames in the order they arrive: it must be display order.
    pts = [p.pts for p in relayed.video]
    assert all(b > a for a, b in itertools.pairwise(pts))
    frames = decode_video(relayed.video)
    assert len(frames) == SOURCE_FPS
    assert {(f.width, f.height) for f in frames} == {(320, 180)}


def test_remux_without_b_frames_is_not_transcoded(remuxed: Relayed) -> None:
    opened = remuxed.events[0]

    assert isinstance(opened, SourceOpened)
    assert opened.video_output == VideoOutput(transcoded=False)


def test_an_opus_source_passes_through_untouched(tmp_path: Path) -> None:
    clip = make_test_clip(
        tmp_path / "opus.mkv",
        ClipSpec(duration_s=1.0, width=160, height=90, audio_codec="libopus", audio_rate=48_000),
    )
    with av.open(str(clip)) as source:
        source_audio = [bytes(p) for p in source.demux(audio=0) if p.size]
    with static_http_server(tmp_path) as base_url:
        relayed = relay(f"{base_url}/opus.mkv", media_type=MediaType.AUDIO_ONLY)

    assert [p.data for p in relayed.audio] == source_audio
    # The source's own timing, 20 ms apart (its first packet starts before 0).
    assert steps([p.pts for p in relayed.audio][1:]) == {960}


def test_the_last_event_counts_what_was_read(remuxed: Relayed) -> None:
    stats = remuxed.events[-1]

    assert isinstance(stats, SourceProgress)
    assert stats.video is not None and stats.audio is not None
    assert stats.video.packets == 2 * SOURCE_FPS
    assert stats.max_keyframe_interval_s == pytest.approx(1.0)
    assert stats.audio.packets > 0
    assert stats.position_s == pytest.approx(2.0, abs=0.1)


def test_a_file_is_relayed_at_its_own_speed_not_as_fast_as_it_downloads(
    remuxed: Relayed,
) -> None:
    assert remuxed.elapsed_s >= 1.8


def test_audio_only_sends_no_video(sources: str) -> None:
    relayed = relay(
        f"{sources}/short.mp4", media_type=MediaType.AUDIO_ONLY, stream_mode=StreamMode.REMUX
    )

    assert relayed.video == []
    assert len(relayed.audio) >= 40
    opened = relayed.events[0]
    assert isinstance(opened, SourceOpened)
    assert opened.video is None and opened.audio is not None


def test_video_only_sends_no_audio(sources: str) -> None:
    relayed = relay(
        f"{sources}/short.mp4", media_type=MediaType.VIDEO_ONLY, stream_mode=StreamMode.REMUX
    )

    assert relayed.audio == []
    assert len(relayed.video) == SOURCE_FPS
    opened = relayed.events[0]
    assert isinstance(opened, SourceOpened)
    assert opened.audio is None and opened.video is not None


def test_audio_only_relays_the_sound_of_a_source_remux_could_not_carry(sources: str) -> None:
    relayed = relay(
        f"{sources}/hevc.mkv", media_type=MediaType.AUDIO_ONLY, stream_mode=StreamMode.REMUX
    )

    assert relayed.video == []
    assert len(relayed.audio) >= 40


def test_audio_only_from_a_silent_source_is_a_source_error(sources: str) -> None:
    with pytest.raises(SourceError, match="no audio"):
        relay(f"{sources}/silent.mp4", media_type=MediaType.AUDIO_ONLY)


def test_remux_of_hevc_is_refused_naming_the_codec(sources: str) -> None:
    events: list[WorkerEvent] = []

    with pytest.raises(SourceError, match="hevc") as refused:
        RelayPipeline(
            PipelineSpec(
                url=f"{sources}/hevc.mkv", stream_mode=StreamMode.REMUX, allow_private_sources=True
            ),
            lambda _: None,
            events.append,
        ).run()

    assert "unsupported codec" in refused.value.detail
    assert events == []  # refused before announcing anything


def test_transcode_fits_the_picture_into_the_asked_size_and_rate(sources: str) -> None:
    relayed = relay(
        f"{sources}/clip.mp4",
        stream_mode=StreamMode.TRANSCODE,
        video_width=160,
        video_height=120,
        frame_rate=10,
    )

    frames = decode_video(relayed.video)
    assert {(f.width, f.height) for f in frames} == {(160, 120)}
    assert len(frames) == pytest.approx(2 * 10, abs=1)
    assert steps([p.pts for p in relayed.video]) == {9_000}  # 10 fps on the 90 kHz clock
    assert relayed.video[0].keyframe
    assert {NAL_SPS, NAL_PPS} <= set(nal_types(relayed.video[0].data))
    # 16:9 into 4:3: the picture is 160x90, with black bars above and below.
    picture = frames[len(frames) // 2]
    for y in (*range(0, 13), *range(107, 120)):
        assert max(luma_row(picture, y)) <= BLACK_LUMA_MAX, f"row {y} is not black"
    assert max(luma_row(picture, 60)) > 64
    assert len(relayed.audio) > 0


def test_transcode_pads_a_square_picture_at_the_sides(sources: str) -> None:
    relayed = relay(
        f"{sources}/square.mp4",
        stream_mode=StreamMode.TRANSCODE,
        video_width=160,
        video_height=120,
        frame_rate=10,
    )

    frames = decode_video(relayed.video)
    assert {(f.width, f.height) for f in frames} == {(160, 120)}
    # 240x240 into 160x120: a 120x120 picture with 20-pixel bars left and right.
    row = luma_row(frames[len(frames) // 2], 60)
    assert max(row[:18]) <= BLACK_LUMA_MAX
    assert max(row[142:]) <= BLACK_LUMA_MAX
    assert max(row[22:138]) > 64


def test_transcode_takes_hevc_in_and_sends_h264(sources: str) -> None:
    relayed = relay(
        f"{sources}/hevc.mkv",
        stream_mode=StreamMode.TRANSCODE,
        video_width=160,
        video_height=120,
        frame_rate=10,
    )

    opened = relayed.events[0]
    assert isinstance(opened, SourceOpened) and opened.video is not None
    assert opened.video.codec == "hevc"
    frames = decode_video(relayed.video)
    assert len(frames) == pytest.approx(10, abs=1)
    assert {(f.width, f.height) for f in frames} == {(160, 120)}


def test_transcode_without_a_size_is_a_source_error(sources: str) -> None:
    with pytest.raises(SourceError, match="VideoWidth"):
        relay(f"{sources}/short.mp4", stream_mode=StreamMode.TRANSCODE)
