"""Stories for opening a source: which URLs a relay may pull, and why one cannot be read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from relaystream.media.source import SourceError, check_scheme, open_source
from relaystream.media.spec import PipelineSpec
from relaystream.media.testsrc import ClipSpec, make_test_clip
from tests.support.net import free_port, static_http_server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An HTTP server with one short clip and one file that only looks like one."""
    root = tmp_path_factory.mktemp("served")
    make_test_clip(root / "clip.mp4", ClipSpec(duration_s=1.0, width=160, height=90))
    (root / "notes.mp4").write_bytes(b"These are meeting notes, not a video.\n" * 200)
    with static_http_server(root) as base_url:
        yield base_url


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("rtmp://live.example.com/app/stream", "rtmp"),
        ("rtmps://live.example.com/app/stream", "rtmps"),
        ("http://cdn.example.com/live.flv", "http"),
        ("https://cdn.example.com/live/index.m3u8", "https"),
        ("rtsp://camera.example.com/main", "rtsp"),
        ("srt://ingest.example.com:9000?streamid=x", "srt"),  # through the ffmpeg CLI
        ("HTTP://CDN.EXAMPLE.COM/LIVE.FLV", "http"),
        ("Rtmp://live.example.com/app/stream", "rtmp"),
    ],
)
def test_streaming_schemes_are_accepted(url: str, scheme: str) -> None:
    assert check_scheme(url) == scheme


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("file:///etc/passwd", "'file'"),
        ("ftp://files.example.com/video.mp4", "'ftp'"),
        ("data:video/mp4;base64,AAAA", "'data'"),
        ("concat:http://a.example.com/1.ts|http://a.example.com/2.ts", "'concat'"),
        ("/var/lib/relaystream/secret.mp4", "'(none)'"),
        ("", "'(none)'"),
    ],
)
def test_other_schemes_are_refused_and_named(url: str, named: str) -> None:
    with pytest.raises(SourceError, match="not allowed") as refused:
        check_scheme(url)
    assert named in refused.value.detail
    assert "rtmp" in refused.value.detail  # says what would have worked


@pytest.mark.parametrize("allow_private", [False, True])
def test_a_malformed_url_is_a_source_error(allow_private: bool) -> None:
    url = "http://[::1/live.flv"  # the IPv6 bracket is never closed

    with pytest.raises(SourceError, match="not a valid URL"):
        check_scheme(url)
    with pytest.raises(SourceError, match="not a valid URL"):
        open_source(PipelineSpec(url=url, allow_private_sources=allow_private))


def test_a_host_that_does_not_resolve_is_unreachable() -> None:
    with pytest.raises(SourceError, match=r"^unreachable: cannot resolve"):
        open_source(PipelineSpec(url="http://no-such-host.invalid/live.flv"))


def test_a_dns_label_over_63_characters_is_one_clear_line() -> None:
    url = f"http://{'a' * 64}.example.com/live.flv"

    with pytest.raises(SourceError) as refused:
        open_source(PipelineSpec(url=url))

    assert refused.value.detail.startswith("unreachable: cannot resolve host")


def test_a_source_on_a_closed_port_is_unreachable() -> None:
    spec = PipelineSpec(
        url=f"http://127.0.0.1:{free_port()}/live.flv",
        allow_private_sources=True,
        open_timeout_s=5,
    )

    with pytest.raises(SourceError, match=r"^unreachable"):
        open_source(spec)


def test_a_missing_file_on_the_server_says_404(served: str) -> None:
    with pytest.raises(SourceError, match="404"):
        open_source(PipelineSpec(url=f"{served}/gone.mp4", allow_private_sources=True))


def test_a_file_that_is_not_media_is_corrupt_data(served: str) -> None:
    with pytest.raises(SourceError, match="corrupt data"):
        open_source(PipelineSpec(url=f"{served}/notes.mp4", allow_private_sources=True))


def test_a_private_source_is_refused_before_anything_is_fetched(served: str) -> None:
    with pytest.raises(SourceError, match=r"^address not allowed: 127\.0\.0\.1 is not a public"):
        open_source(PipelineSpec(url=f"{served}/clip.mp4"))


def test_a_served_clip_opens_with_its_streams(served: str) -> None:
    container = open_source(PipelineSpec(url=f"{served}/clip.mp4", allow_private_sources=True))
    with container:
        video = container.streams.video[0]
        assert (video.codec_context.name, video.width, video.height) == ("h264", 160, 90)
        assert container.streams.audio[0].codec_context.name == "aac"


def test_a_local_path_cannot_be_opened(tmp_path: Path) -> None:
    clip = make_test_clip(tmp_path / "clip.mp4", ClipSpec(duration_s=0.5, width=160, height=90))

    with pytest.raises(SourceError, match="not allowed"):
        open_source(PipelineSpec(url=str(clip), allow_private_sources=True))
