"""The product's promise, end to end: a signed StartRelayStream puts a stream into a
room, a WebRTC viewer decodes it, StopRelayStream ends it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.support.rtmp import nginx_rtmp_server, rtmp_publisher
from tests.support.sdk import RtcService
from tests.support.server import APP_ID, RelayServer
from tests.support.tasks import call, get_task, task_key, wait_for_status
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


async def test_rtmp_source_plays_in_the_room(
    relay_server: RelayServer, rtc: RtcService, clips: dict[str, Path], tmp_path: Path
) -> None:
    with nginx_rtmp_server(tmp_path / "nginx") as rtmp_base:
        stream_url = f"{rtmp_base}/camera"
        with rtmp_publisher(clips["flv"], stream_url):
            await relay_and_watch(relay_server, rtc, "room-rtmp", stream_url)


async def test_remux_costs_a_fraction_of_a_transcode_of_the_same_source(
    relay_server: RelayServer, rtc: RtcService, media_url: str
) -> None:
    """Remux neither decodes nor encodes video, so its worker burns far less CPU."""
    room = "room-cpu"
    # Video only: audio costs both modes the same (AAC to Opus).
    modes = {
        "remux": {"StreamMode": 1, "MediaType": 2},
        "transcode": {
            "StreamMode": 0,
            "MediaType": 2,
            "VideoWidth": 640,
            "VideoHeight": 360,
            "FrameRate": 30,
        },
    }
    for name, control in modes.items():
        start = {
            **task_key(room, name),
            "UserId": name,
            "Token": relay_server.publish_token(room, name),
            "Control": {"StreamUrl": f"{media_url}/clip.flv", **control},
        }
        assert await call(rtc, "StartRelayStream", start) == "ok"
    for name in modes:
        await wait_for_status(rtc, room, name, 2)

    async def fresh_cpu_seconds(name: str, previous: float | None) -> tuple[float, float]:
        """The task's worker CPU seconds as soon as its stats report a new value, and
        when: a worker reports every few seconds, so a reading taken at any moment could
        be seconds old, and two such readings would not span the same time."""
        deadline = time.monotonic() + 10
        while True:
            value = (await get_task(rtc, room, name))["Stats"]["WorkerCpuSeconds"]
            if value != previous:
                return value, time.monotonic()
            assert time.monotonic() < deadline, f"{name}: no new stats within 10 s"
            await asyncio.sleep(0.05)

    # Steady state only: process start-up (imports, probing) costs both the same.
    await asyncio.sleep(1)
    cpu_per_s = {}
    for name in modes:
        stale = (await get_task(rtc, room, name))["Stats"]["WorkerCpuSeconds"]
        first, first_at = await fresh_cpu_seconds(name, stale)
        await asyncio.sleep(5)
        last, last_at = await fresh_cpu_seconds(name, first)
        cpu_per_s[name] = (last - first) / (last_at - first_at)
    for name in modes:
        assert await call(rtc, "StopRelayStream", task_key(room, name)) == "ok"
    assert cpu_per_s["transcode"] > 0
    assert cpu_per_s["remux"] < cpu_per_s["transcode"] / 4, cpu_per_s
