"""Stories for each source format in the pipeline: it plays, and it is known for VOD or
live, which decides whether it can loop and how a failure is retried."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaystream.media.control import PipelineControl
from relaystream.media.events import SourceOpened, WorkerEvent
from relaystream.media.formats import SourceKind, source_kind
from relaystream.media.pipeline import RelayPipeline
from relaystream.media.spec import MediaType, PipelineSpec, StreamMode
from relaystream.media.testsrc import ClipSpec, make_test_clip
from relaystream.media.wire import EncodedPacket, MessageKind
from tests.support.bridged import dash_live_packager, make_dash_vod, srt_sender
from tests.support.clips import remux
from tests.support.hls import hls_server, segment
from tests.support.net import free_port, static_http_server
from tests.support.rtmp import nginx_rtmp_server, rtmp_publisher

CLIP_S = 6.0


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("formats")
    mp4 = make_test_clip(root / "clip.mp4", ClipSpec(duration_s=CLIP_S, width=160, height=90))
    remux(mp4, root / "clip.flv", "flv")
    remux(mp4, root / "clip.ts", "mpegts")
    segment(root / "clip.ts", root / "hls")
    make_dash_vod(mp4, root / "dash")
    return root


@pytest.fixture(scope="module")
def files(clip_dir: Path) -> Iterator[str]:
    with static_http_server(clip_dir) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def hls(clip_dir: Path) -> Iterator[str]:
    with hls_server(clip_dir / "hls" / "index.m3u8") as base_url:
        yield base_url


def opened_and_video(url: str, seconds: float) -> tuple[SourceOpened, list[EncodedPacket]]:
    """Relay ``url`` for at most ``seconds``; the opened event and the video sent."""
    events: list[WorkerEvent] = []
    packets: list[EncodedPacket] = []
    control = PipelineControl()
    spec = PipelineSpec(
        url=url,
        stream_mode=StreamMode.REMUX,
        media_type=MediaType.VIDEO_ONLY,
        allow_private_sources=True,
    )

    def collect(packet: EncodedPacket) -> None:
        packets.append(packet)
        if packet.pts / 90_000 >= seconds:
            control.stop()

    RelayPipeline(spec, collect, events.append, control).run()
    opened = events[0]
    assert isinstance(opened, SourceOpened)
    return opened, [p for p in packets if p.kind is MessageKind.VIDEO]


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("clip.mp4", SourceKind.HTTP_FILE),  # moov at the end: read with Range requests
        ("clip.flv", SourceKind.HTTP_FILE),
        ("clip.ts", SourceKind.HTTP_FILE),
        ("hls/index.m3u8", SourceKind.HLS),
        ("dash/manifest.mpd", SourceKind.DASH),  # static: read through the ffmpeg CLI
    ],
)
def test_a_file_with_a_known_duration_is_vod(files: str, path: str, kind: SourceKind) -> None:
    url = f"{files}/{path}"

    opened, video = opened_and_video(url, 1.0)

    assert source_kind(url) is kind
    assert opened.live is False
    assert opened.duration_s == pytest.approx(CLIP_S, abs=0.2)
    assert video[0].keyframe


def test_an_hls_playlist_with_an_end_tag_is_vod(hls: str) -> None:
    opened, _ = opened_and_video(f"{hls}/vod/index.m3u8", 0.5)

    assert opened.live is False


def test_a_sliding_hls_playlist_is_live_and_played_from_its_edge(hls: str) -> None:
    time.sleep(1.5)  # the packager has moved on: the first segment is gone
    opened, video = opened_and_video(f"{hls}/live/index.m3u8", 1.5)

    assert opened.live is True and opened.duration_s is None
    assert video[0].keyframe
    assert len(video) >= 30


def test_rtmp_is_live(clip_dir: Path, tmp_path: Path) -> None:
    with nginx_rtmp_server(tmp_path / "nginx") as rtmp_base:
        url = f"{rtmp_base}/camera"
        with rtmp_publisher(clip_dir / "clip.flv", url):
            deadline = time.monotonic() + 10
            while True:  # the publisher needs a moment to reach the server
                try:
                    opened, video = opened_and_video(url, 1.0)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.3)

    assert opened.live is True
    assert len(video) >= 30


def test_a_dynamic_dash_manifest_is_live(clip_dir: Path, tmp_path: Path) -> None:
    with (
        dash_live_packager(clip_dir / "clip.mp4", tmp_path / "live"),
        static_http_server(tmp_path) as base_url,
    ):
        opened, video = opened_and_video(f"{base_url}/live/manifest.mpd", 1.0)

    assert opened.live is True and opened.duration_s is None
    assert video[0].keyframe
    assert len(video) >= 30


def test_srt_is_live(clip_dir: Path) -> None:
    with srt_sender(clip_dir / "clip.ts", free_port()) as url:
        opened, video = opened_and_video(url, 1.0)

    assert opened.live is True
    assert video[0].keyframe
    assert len(video) >= 30
