"""Stories for why a source fails and whether the run should try again (SPEC §3):
real servers on 127.0.0.1 that refuse, answer 404 or 503, stall, or end a live body."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaystream.media.events import SourceOpened, WorkerEvent
from relaystream.media.failures import SourceError
from relaystream.media.pipeline import RelayPipeline
from relaystream.media.spec import PipelineSpec, StreamMode
from relaystream.media.testsrc import ClipSpec, make_test_clip
from tests.support.bridged import make_dash_vod
from tests.support.clips import remux
from tests.support.hls import segment
from tests.support.net import connection_recorder, free_port, static_http_server
from tests.support.sources import scripted_http_server, silent_tcp_server


def failure_of(url: str, **settings: object) -> tuple[SourceError, list[WorkerEvent]]:
    events: list[WorkerEvent] = []
    spec = PipelineSpec(
        url=url,
        stream_mode=StreamMode.REMUX,
        allow_private_sources=True,
        open_timeout_s=2,
        **settings,  # type: ignore[arg-type]
    )
    with pytest.raises(SourceError) as failed:
        RelayPipeline(spec, lambda _: None, events.append).run()
    return failed.value, events


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("failing")
    mp4 = make_test_clip(root / "clip.mp4", ClipSpec(duration_s=2.0, width=160, height=90))
    with scripted_http_server({"clip.ts": remux(mp4, root / "clip.ts", "mpegts")}) as base:
        yield base


def test_a_refused_connection_is_retried() -> None:
    failure, _ = failure_of(f"http://127.0.0.1:{free_port()}/live.flv")

    assert failure.retryable
    assert failure.detail == "unreachable: the source server refused the connection"


def test_a_404_fails_for_good(server: str) -> None:
    failure, _ = failure_of(f"{server}/status/404")

    assert not failure.retryable
    assert failure.detail.startswith("HTTP 404")


def test_a_403_fails_for_good_and_says_so(server: str) -> None:
    failure, _ = failure_of(f"{server}/status/403")

    assert not failure.retryable
    assert failure.detail == "HTTP 403: access denied by the source server"


def test_a_503_is_retried(server: str) -> None:
    failure, _ = failure_of(f"{server}/status/503")

    assert failure.retryable
    assert failure.detail.startswith("HTTP 5xx")


def test_a_server_that_never_answers_times_out_in_the_users_words() -> None:
    with silent_tcp_server() as port:
        started = time.monotonic()
        failure, _ = failure_of(f"http://127.0.0.1:{port}/live.ts")

    assert failure.retryable
    assert failure.detail == "timed out after 2 s"
    assert time.monotonic() - started < 6


def test_a_live_source_that_ends_is_retried_not_ended(server: str) -> None:
    failure, events = failure_of(f"{server}/live/clip.ts?seconds=1.5")

    opened = events[0]
    assert isinstance(opened, SourceOpened)
    assert opened.live is True and opened.duration_s is None
    assert failure.retryable
    assert failure.detail == "the live source ended"


def test_garbage_before_any_media_is_corrupt_data_for_good(tmp_path: Path) -> None:
    (tmp_path / "notes.ts").write_bytes(b"meeting notes, not a video\n" * 500)
    with scripted_http_server({"notes.ts": tmp_path / "notes.ts"}) as base:
        failure, _ = failure_of(f"{base}/live/notes.ts?seconds=0.2")

    assert not failure.retryable
    assert failure.detail.startswith("corrupt data")
    assert "Invalid data" not in failure.detail  # FFmpeg's words stay inside


def test_a_missing_dash_manifest_is_a_404(server: str) -> None:
    failure, _ = failure_of(f"{server}/status/404/manifest.mpd")

    assert not failure.retryable
    assert failure.detail.startswith("HTTP 404")


def test_a_dash_manifest_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    (tmp_path / "huge.mpd").write_bytes(b"<MPD>" + b" " * 1_100_000 + b"</MPD>")
    with scripted_http_server({"huge.mpd": tmp_path / "huge.mpd"}) as base:
        failure, _ = failure_of(f"{base}/live/huge.mpd?seconds=0.1")

    assert not failure.retryable
    assert failure.detail == "the DASH manifest is larger than 1000 kB"


def test_a_dash_manifest_naming_a_private_host_is_refused_before_any_fetch(
    tmp_path: Path,
) -> None:
    # The manifest itself is on a trusted prefix; its segments would come from a
    # private address, which the policy refuses (a literal: nothing is resolved).
    (tmp_path / "ssrf.mpd").write_text(
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static">'
        "<BaseURL>http://10.1.2.3/segments/</BaseURL></MPD>"
    )
    with scripted_http_server({"ssrf.mpd": tmp_path / "ssrf.mpd"}) as base:
        url = f"{base}/live/ssrf.mpd?seconds=0.1"
        spec = PipelineSpec(url=url, trusted_url_prefixes=(base,), open_timeout_s=2)
        with pytest.raises(SourceError) as refused:
            RelayPipeline(spec, lambda _: None, lambda _: None).run()

    assert refused.value.detail.startswith("address not allowed: 10.1.2.3")
    assert not refused.value.retryable


@pytest.fixture(scope="module")
def dash_vod(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dash")
    clip = make_test_clip(root / "clip.mp4", ClipSpec(duration_s=3.0, width=160, height=90))
    return make_dash_vod(clip, root / "dash")


def refusal_of_trusted(url: str, trusted: str) -> SourceError:
    """The failure of a source on a trusted prefix, with private addresses refused."""
    spec = PipelineSpec(
        url=url, stream_mode=StreamMode.REMUX, trusted_url_prefixes=(trusted,), open_timeout_s=2
    )
    with pytest.raises(SourceError) as refused:
        RelayPipeline(spec, lambda _: None, lambda _: None).run()
    return refused.value


def test_dash_segments_from_a_template_pass_the_address_policy(dash_vod: Path) -> None:
    # The manifest's segment templates name another port: no BaseURL to check before
    # the ffmpeg CLI runs, so only its proxy stands between it and that port.
    with connection_recorder() as forbidden:
        templated = dash_vod.read_text().replace('media="', f'media="{forbidden.base_url}/')
        (dash_vod.parent / "templated.mpd").write_text(templated)
        with static_http_server(dash_vod.parent) as base:
            failure = refusal_of_trusted(f"{base}/templated.mpd", trusted=f"{base}/")

        assert failure.detail.startswith("address not allowed: 127.0.0.1")
        assert not failure.retryable
        assert forbidden.connections == 0


def test_a_dash_segment_redirected_to_a_private_address_is_refused(dash_vod: Path) -> None:
    first_segment = next(dash_vod.parent.glob("chunk-stream0-*.m4s")).name
    redirects = {f"/{first_segment}": "http://10.1.2.3/segment.m4s"}
    with static_http_server(dash_vod.parent, redirects=redirects) as base:
        failure = refusal_of_trusted(f"{base}/manifest.mpd", trusted=f"{base}/")

    assert failure.detail.startswith("address not allowed: 10.1.2.3")


def test_a_dash_source_on_a_trusted_prefix_still_plays_through_the_proxy(
    dash_vod: Path,
) -> None:
    events: list[WorkerEvent] = []
    with static_http_server(dash_vod.parent) as base:
        spec = PipelineSpec(
            url=f"{base}/manifest.mpd",
            stream_mode=StreamMode.REMUX,
            trusted_url_prefixes=(f"{base}/",),
        )
        RelayPipeline(spec, lambda _: None, events.append).run()

    assert any(isinstance(event, SourceOpened) for event in events)


@pytest.mark.parametrize("suffix", ["mp4", "flv"])
def test_a_vod_cut_short_is_corrupt_data_at_the_position_it_stopped(
    tmp_path: Path, suffix: str
) -> None:
    clip = make_test_clip(tmp_path / "clip.mp4", ClipSpec(duration_s=4.0, width=160, height=90))
    whole = tmp_path / f"whole.{suffix}"
    # The index (MP4 moov up front, FLV metadata) announces 4 s; half the bytes follow.
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-i",
            str(clip),
            "-c",
            "copy",
            "-movflags",
            "+faststart",
            str(whole),
        ],
        check=True,
    )
    data = whole.read_bytes()
    (tmp_path / f"cut.{suffix}").write_bytes(data[: len(data) // 2])
    with static_http_server(tmp_path) as base:
        failure, events = failure_of(f"{base}/cut.{suffix}")

    assert isinstance(events[0], SourceOpened)
    # Where it broke, in the source's time: "corrupt data at 2.0 s ...".
    assert failure.detail.startswith("corrupt data at ")
    position_s = float(failure.detail.split()[3])
    assert 1.0 < position_s < 3.0
    assert not failure.retryable


def test_an_hls_vod_whose_last_segments_are_gone_says_where_it_stopped(tmp_path: Path) -> None:
    clip = make_test_clip(tmp_path / "clip.ts", ClipSpec(duration_s=6.0, width=160, height=90))
    playlist = segment(clip, tmp_path / "hls")
    for gone in sorted(playlist.parent.glob("seg*.ts"))[3:]:
        gone.unlink()
    with static_http_server(tmp_path) as base:
        failure, _ = failure_of(f"{base}/hls/index.m3u8")

    assert failure.detail.startswith("corrupt data at ")
    assert failure.detail.endswith("the source ended before its announced 6.0 s")
    assert 2.0 < float(failure.detail.split()[3]) < 4.0
