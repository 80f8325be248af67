"""Stories for https sources: certificates are checked unless the app says not to."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaystream.config import AppConfig
from relaystream.media.control import PipelineControl
from relaystream.media.events import SourceOpened, WorkerEvent
from relaystream.media.failures import SourceError
from relaystream.media.pipeline import PipelineEnd, RelayPipeline
from relaystream.media.spec import MediaType, PipelineSpec, StreamMode
from relaystream.media.testsrc import ClipSpec, make_test_clip
from tests.support.net import static_http_server
from tests.support.rtmp import nginx_rtmp_server, rtmp_publisher
from tests.support.self_signed import self_signed_certificate
from tests.support.tls_proxy import tls_proxy


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    cert, key = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("https")
    make_test_clip(root / "clip.mp4", ClipSpec(duration_s=0.5, width=160, height=90))
    make_test_clip(root / "clip.flv", ClipSpec(duration_s=2.0, width=160, height=90))
    return root


@pytest.fixture(scope="module")
def https_url(clip_dir: Path, tls_context: ssl.SSLContext) -> Iterator[str]:
    with static_http_server(clip_dir, ssl_context=tls_context) as base_url:
        yield f"{base_url}/clip.mp4"


@pytest.fixture(scope="module")
def rtmps_url(
    clip_dir: Path, tls_context: ssl.SSLContext, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An RTMP server behind TLS, with a live publisher."""
    with nginx_rtmp_server(tmp_path_factory.mktemp("nginx")) as rtmp_base:
        rtmp_port = int(rtmp_base.rsplit(":", 1)[1].split("/")[0])
        with (
            rtmp_publisher(clip_dir / "clip.flv", f"{rtmp_base}/camera"),
            tls_proxy(rtmp_port, tls_context) as port,
        ):
            yield f"rtmps://127.0.0.1:{port}/live/camera"


def spec_for(url: str, *, tls_verify: bool) -> PipelineSpec:
    return PipelineSpec(
        url=url,
        stream_mode=StreamMode.REMUX,
        media_type=MediaType.VIDEO_ONLY,
        allow_private_sources=True,
        tls_verify=tls_verify,
        open_timeout_s=3,
    )


def test_apps_verify_certificates_unless_configured_not_to() -> None:
    app = {"app_id": "a" * 24, "app_key": "k"}

    assert AppConfig.model_validate(app).tls_verify is True
    assert AppConfig.model_validate({**app, "tls_verify": False}).tls_verify is False
    assert PipelineSpec(url="https://example.com/live.flv").tls_verify is True


def test_an_untrusted_certificate_is_refused_for_good(https_url: str) -> None:
    with pytest.raises(SourceError) as refused:
        RelayPipeline(spec_for(https_url, tls_verify=True), lambda _: None, lambda _: None).run()

    assert refused.value.detail == "TLS: the source's certificate could not be verified"
    assert not refused.value.retryable


def test_with_verification_off_the_same_source_plays(https_url: str) -> None:
    events: list[WorkerEvent] = []
    packets: list[object] = []

    end = RelayPipeline(spec_for(https_url, tls_verify=False), packets.append, events.append).run()

    assert end is PipelineEnd.ENDED
    assert isinstance(events[0], SourceOpened)
    assert len(packets) == 15  # 0.5 s at 30 fps


def test_rtmps_checks_certificates_too(rtmps_url: str) -> None:
    with pytest.raises(SourceError) as refused:
        RelayPipeline(spec_for(rtmps_url, tls_verify=True), lambda _: None, lambda _: None).run()

    assert refused.value.detail == "TLS: the source's certificate could not be verified"


def test_rtmps_plays_with_verification_off(rtmps_url: str) -> None:
    control = PipelineControl()
    packets: list[object] = []

    def take(packet: object) -> None:
        packets.append(packet)
        if len(packets) >= 30:
            control.stop()

    deadline = time.monotonic() + 10
    while not packets:  # the publisher needs a moment to reach the server
        try:
            spec = spec_for(rtmps_url, tls_verify=False)
            end = RelayPipeline(spec, take, lambda _: None, control).run()
        except SourceError:
            assert time.monotonic() < deadline
            time.sleep(0.3)

    assert end is PipelineEnd.STOPPED
    assert len(packets) >= 30
