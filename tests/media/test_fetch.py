"""Stories for reading a source through the checked client: HLS playlists, segments and
keys, redirects, DASH manifests and seeking, with "media.test" playing a public host on
127.0.0.1 and a listener on another port catching any fetch that must not happen."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import pytest

from relaystream.media.fetch import CheckedOpener, SourceRefused
from relaystream.media.source import SourceError, open_source, pin_stream_url, rtmp_app
from relaystream.media.spec import PipelineSpec
from relaystream.netpolicy import (
    AddressPolicy,
    AddressRefused,
    CheckedHttpClient,
    HostsTable,
    ResolvedAddress,
    SystemResolver,
    literal_address,
)
from tests.support.clips import make_clips
from tests.support.net import connection_recorder
from tests.support.playlists import PUBLIC_HOSTS, SEGMENT_CLIP, Origin, serve_origin
from tests.support.rtmp import nginx_rtmp_server, rtmp_publisher


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    with serve_origin(tmp_path_factory.mktemp("origin")) as served:
        yield served


def spec(origin: Origin, path: str) -> PipelineSpec:
    return PipelineSpec(url=f"{origin.url}/{path}", hosts=PUBLIC_HOSTS, open_timeout_s=5)


def count_packets(container: av.container.InputContainer) -> int:
    with container:
        return sum(1 for packet in container.demux() if packet.size)


def test_an_hls_playlist_and_its_segments_play_through_the_checked_client(
    origin: Origin,
) -> None:
    container = open_source(spec(origin, "clean.m3u8"))

    assert container.format.name == "hls"
    assert count_packets(container) > 100


def test_relative_segments_of_a_redirected_playlist_follow_the_redirect(
    origin: Origin,
) -> None:
    # Resolved against the URL asked for, "segment.ts" would be /moved/segment.ts: a 404.
    assert count_packets(open_source(spec(origin, "moved/clean.m3u8"))) > 100


def test_an_aes_128_playlist_is_decrypted(origin: Origin) -> None:
    assert count_packets(open_source(spec(origin, "encrypted.m3u8"))) > 50


@pytest.mark.parametrize(
    "path", ["segments-elsewhere.m3u8", "key-elsewhere.m3u8", "redirect.flv", "elsewhere.mpd"]
)
def test_nothing_is_fetched_from_a_private_address_the_source_leads_to(
    origin: Origin, path: str
) -> None:
    before = origin.forbidden.connections

    with pytest.raises(SourceError) as failed:
        count_packets(open_source(spec(origin, path)))

    assert origin.forbidden.connections == before == 0
    if path != "elsewhere.mpd":  # FFmpeg's DASH demuxer is not in the PyAV build
        assert failed.value.detail.startswith("address not allowed: 127.0.0.1")
        assert "sources.allow_private" in failed.value.detail


def test_file_and_data_segments_play_nothing(origin: Origin) -> None:
    segment = origin.root / "segment.ts"
    opened: list[str] = []
    opener = CheckedOpener(CheckedHttpClient(AddressPolicy(allow_private=True)))

    def recording(url: str, flags: int, options: dict[str, str]) -> object:
        opened.append(url)
        return opener(url, flags, options)

    # FFmpeg's HLS demuxer already skips them in a playlist served over HTTP...
    with pytest.raises(av.error.InvalidDataError):
        av.open(
            f"{origin.url.replace('media.test', '127.0.0.1')}/local-segments.m3u8",
            io_open=recording,
            options={"http_persistent": "0", "protocol_whitelist": "none"},
        )
    assert opened == [f"http://127.0.0.1:{origin.port}/local-segments.m3u8"]
    with pytest.raises(SourceError, match="corrupt data"):
        open_source(spec(origin, "local-segments.m3u8"))

    # ...and our opener refuses them whatever asks.
    data_url = "data:video/mp2t;base64," + base64.b64encode(segment.read_bytes()).decode()
    for url in [segment.as_uri(), str(segment), data_url, f"crypto+{segment.as_uri()}"]:
        fresh = CheckedOpener(CheckedHttpClient(AddressPolicy(allow_private=True)))
        with pytest.raises(SourceRefused, match="never opened"):
            fresh(url, 1, {"key": "00" * 16, "iv": "00" * 16})


def test_a_second_different_dns_answer_is_never_used_for_segments(origin: Origin) -> None:
    resolver = _TurnsResolver(["127.0.0.1", "127.0.0.2"])
    client = CheckedHttpClient(AddressPolicy(allow_private=False, resolver=resolver))
    with connection_recorder("127.0.0.2", origin.port) as second_answer:
        container = av.open(
            f"http://rebind.test:{origin.port}/clean.m3u8",
            io_open=CheckedOpener(client),
            options={"http_persistent": "0", "protocol_whitelist": "none"},
        )
        assert count_packets(container) > 100
    assert second_answer.connections == 0
    assert resolver.lookups == 1


def test_an_mp4_with_its_index_at_the_end_seeks_through_the_client(origin: Origin) -> None:
    clip = (origin.root / "vod.mp4").read_bytes()
    assert clip.index(b"moov") > clip.index(b"mdat")  # the index really is at the end
    with av.open(str(origin.root / "vod.mp4")) as local:
        expected = sum(1 for packet in local.demux() if packet.size)

    assert count_packets(open_source(spec(origin, "vod.mp4"))) == expected


def test_stream_urls_are_pinned_to_the_checked_address() -> None:
    policy = AddressPolicy(allow_private=False, resolver=HostsTable(PUBLIC_HOSTS, SystemResolver()))

    url, options = pin_stream_url("rtmp://media.test/live/stream?key=1", policy)
    assert url == "rtmp://127.0.0.1:1935/live/stream?key=1"
    assert options == {"rtmp_tcurl": "rtmp://media.test:1935/live"}

    url, options = pin_stream_url("rtsp://user:p%40ss@media.test:8554/cam", policy)
    assert (url, options) == ("rtsp://user:p%40ss@127.0.0.1:8554/cam", {"rtsp_transport": "tcp"})

    url, _ = pin_stream_url("srt://media.test:9000?streamid=abc", policy)
    assert url == "srt://127.0.0.1:9000?streamid=abc"

    with pytest.raises(AddressRefused):
        pin_stream_url("rtmp://localhost/live/stream", policy)


@pytest.mark.parametrize(
    ("path", "app"),
    [
        ("/live/stream", "live"),
        ("/live", "live"),
        ("/app/instance/stream", "app/instance"),
        ("/vod/mp4:dir/file.mp4", "vod"),
        ("/ondemand/file", "ondemand"),
    ],
)
def test_the_rtmp_app_is_derived_as_ffmpeg_does(path: str, app: str) -> None:
    assert rtmp_app(path) == app


class _TurnsResolver:
    """DNS whose answer changes on each lookup; each answer vouched for, so only
    pinning keeps the fetcher on the first."""

    def __init__(self, answers: list[str]) -> None:
        self._answers = answers
        self.lookups = 0

    def resolve(self, host: str) -> Sequence[ResolvedAddress]:
        address = literal_address(self._answers[min(self.lookups, len(self._answers) - 1)])
        self.lookups += 1
        assert address is not None
        return [ResolvedAddress(address, vouched=True)]


def test_an_rtmp_source_named_by_host_plays_from_the_pinned_address(tmp_path: Path) -> None:
    clip = make_clips(tmp_path / "clips", SEGMENT_CLIP)["flv"]
    with nginx_rtmp_server(tmp_path / "nginx") as base_url:
        published = f"{base_url}/stream"
        named = published.replace("127.0.0.1", "media.test")
        with rtmp_publisher(clip, published):
            container = _open_when_published(PipelineSpec(url=named, hosts=PUBLIC_HOSTS))
            with container:
                video = container.streams.video[0]
                first = next(container.demux(video))
                assert video.codec_context.name == "h264"
                assert first.size > 0


def _open_when_published(source: PipelineSpec) -> av.container.InputContainer:
    deadline = time.monotonic() + 15
    while True:
        try:
            return open_source(source)
        except SourceError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
