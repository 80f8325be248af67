"""Source safety end to end (SPEC §3): a server with ``sources.allow_private = false``,
driven through the official SDK. The hosts table makes "media.test" a public host on
127.0.0.1; a listener on another 127.0.0.1 port records any fetch that must not happen.
No packet leaves 127.0.0.0/8: private literals are refused before any connection."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.playlists import PUBLIC_HOSTS, Origin, serve_origin
from tests.support.sdk import RtcService, VolcengineError
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, RelayServer, start_server
from tests.support.tasks import call, task_key, wait_for_status

pytestmark = pytest.mark.media

PRIVATE_STREAM_URLS = [
    "http://127.0.0.1:8080/live.flv",
    "http://2130706433/live.flv",
    "http://0x7f.1/live.flv",
    "http://0177.0.0.1/live.flv",
    "http://127.1/live.flv",
    "http://127.0.0.1./live.flv",
    "http://[::1]/live.flv",
    "http://[::ffff:127.0.0.1]/live.flv",
    "http://[::127.0.0.1]/live.flv",
    "http://0.0.0.0/live.flv",
    "http://10.1.2.3/index.m3u8",
    "https://192.168.1.20/index.m3u8",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/live.flv",
    "rtmp://172.16.0.5/live/stream",
    "rtsp://[fe80::1]/cam",
]


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    with serve_origin(tmp_path_factory.mktemp("origin")) as served:
        yield served


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayServer]:
    hosts = ", ".join(f'"{name}" = "{address}"' for name, address in PUBLIC_HOSTS.items())
    server = start_server(
        Path(tmp_path_factory.mktemp("strict")),
        allow_private=False,
        extra_config=f"hosts = {{ {hosts} }}",
    )
    yield server
    server.stop()


@pytest.fixture
def rtc(strict_server: RelayServer) -> RtcService:
    return RtcService(strict_server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)


def start_body(server: RelayServer, name: str, url: str) -> dict[str, object]:
    return {
        **task_key(f"room-{name}", f"task-{name}"),
        "UserId": f"user-{name}",
        "Token": server.publish_token(f"room-{name}", f"user-{name}"),
        "Control": {"StreamUrl": url, "StreamMode": 1},
    }


def test_each_spelling_of_a_private_literal_is_refused_at_the_api(
    rtc: RtcService, strict_server: RelayServer
) -> None:
    for index, url in enumerate(PRIVATE_STREAM_URLS):
        with pytest.raises(VolcengineError) as refused:
            rtc.action("StartRelayStream", start_body(strict_server, f"literal-{index}", url))
        assert refused.value.code == "InvalidParameter", url
        message = refused.value.message
        assert "Control.StreamUrl" in message, message
        assert "sources.allow_private" in message, message
        # Nothing was created to be refused later.
        with pytest.raises(VolcengineError) as missing:
            rtc.action("GetRelayStream", task_key(f"room-literal-{index}", f"task-literal-{index}"))
        assert missing.value.code == "InvalidParameter.ErrorActiveTaskNotFound"


async def test_a_public_host_name_is_accepted_and_plays(
    rtc: RtcService, strict_server: RelayServer, origin: Origin
) -> None:
    body = start_body(strict_server, "public", f"{origin.url}/clean.m3u8")
    try:
        assert await call(rtc, "StartRelayStream", body) == "ok"
        running = await wait_for_status(rtc, "room-public", "task-public", 2)
        assert running["StopReason"] == ""
    finally:
        await call(rtc, "StopRelayStream", task_key("room-public", "task-public"))


@pytest.mark.parametrize(
    "source", ["redirect.flv", "segments-elsewhere.m3u8", "key-elsewhere.m3u8", "elsewhere.mpd"]
)
async def test_a_source_that_leads_to_a_private_address_fetches_nothing_from_it(
    rtc: RtcService, strict_server: RelayServer, origin: Origin, source: str
) -> None:
    name = source.replace(".", "-")
    body = start_body(strict_server, name, f"{origin.url}/{source}")

    assert await call(rtc, "StartRelayStream", body) == "ok"
    ended = await wait_for_status(rtc, f"room-{name}", f"task-{name}", 3)

    assert ended["StopReason"] == "SourceError"
    assert ended["StartTime"] == 0  # no media ever flowed
    assert origin.forbidden.connections == 0
    if source != "elsewhere.mpd":  # the PyAV build has no DASH demuxer yet
        assert "address not allowed" in ended["StopDetail"]
        assert "127.0.0.1" in ended["StopDetail"]
        assert "sources.allow_private" in ended["StopDetail"]


async def test_a_playlist_of_file_and_data_segments_plays_nothing(
    rtc: RtcService, strict_server: RelayServer, origin: Origin
) -> None:
    body = start_body(strict_server, "local", f"{origin.url}/local-segments.m3u8")

    assert await call(rtc, "StartRelayStream", body) == "ok"
    ended = await wait_for_status(rtc, "room-local", "task-local", 3)

    assert ended["StopReason"] == "SourceError"
    assert ended["StartTime"] == 0


async def test_a_host_name_of_a_private_address_is_refused_by_the_worker(
    rtc: RtcService, strict_server: RelayServer, origin: Origin
) -> None:
    url = f"http://localhost:{origin.forbidden.port}/live.flv"
    body = start_body(strict_server, "name", url)

    # The API does not resolve names (it would block, and DNS may answer otherwise later).
    assert await call(rtc, "StartRelayStream", body) == "ok"
    ended = await wait_for_status(rtc, "room-name", "task-name", 3)

    assert ended["StopReason"] == "SourceError"
    assert re.search(r"localhost \((127\.0\.0\.1|::1)\) is not a public", ended["StopDetail"])
    assert origin.forbidden.connections == 0
