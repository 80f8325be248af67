"""The product's promise, end to end: a signed StartRelayStream puts a stream into a
room, a WebRTC viewer decodes it, StopRelayStream ends it."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.sdk import RtcService
from tests.support.server import APP_ID, RelayServer
from tests.support.tasks import call, task_key, wait_for_status
from tests.support.viewer import WhepViewer

SOURCE_WIDTH, SOURCE_HEIGHT, SOURCE_FPS = 640, 360, 30


async def relay_and_watch(
    relay_server: RelayServer, rtc: RtcService, room: str, stream_url: str
) -> None:
    """Start a remux relay of ``stream_url``, watch 3 s of it, stop it, see it end."""
    task, user = "task-1", "relay-user"
    start = {
        **task_key(room, task),
        "UserId": user,
        "Token": relay_server.publish_token(room, user),
        "Control": {"StreamUrl": stream_url, "StreamMode": 1},
    }
    assert await call(rtc, "StartRelayStream", start) == "ok"
    running = await wait_for_status(rtc, room, task, 2)
    assert running["StreamUrl"] == stream_url

    viewer = WhepViewer(
        f"{relay_server.base_url}/whep/{APP_ID}/{room}/{user}",
        relay_server.subscribe_token(room, "viewer-1"),
    )
    await viewer.connect()
    try:
        video = await viewer.wait_for_media("video", 3.0)
        audio = await viewer.wait_for_media("audio", 3.0)
        assert {(f.width, f.height) for f in video.frames} == {(SOURCE_WIDTH, SOURCE_HEIGHT)}
        assert video.frame_rate() == pytest.approx(SOURCE_FPS, rel=0.1)
        assert {f.sample_rate for f in audio.frames} == {48_000}

        assert await call(rtc, "StopRelayStream", task_key(room, task)) == "ok"
        stopped = await wait_for_status(rtc, room, task, 3, timeout_s=5)
        assert stopped["StopReason"] == "ApiStop"
        await asyncio.wait_for(video.ended.wait(), 10)
        await asyncio.wait_for(audio.ended.wait(), 10)
    finally:
        await viewer.close()


@pytest.mark.parametrize("container", ["mp4", "flv"])
async def test_http_source_plays_in_the_room(
    relay_server: RelayServer, rtc: RtcService, media_url: str, container: str
) -> None:
    await relay_and_watch(
        relay_server, rtc, f"room-http-{container}", f"{media_url}/clip.{container}"
    )
