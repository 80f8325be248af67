"""One task can never hurt another: a worker that crashes, or a source that is garbage,
touches only its own task."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import urllib.request
from pathlib import Path

from tests.support.processes import media_worker_pids
from tests.support.sdk import RtcService
from tests.support.server import APP_ID, RelayServer
from tests.support.tasks import call, get_task, task_key, wait_for_status
from tests.support.viewer import WhepViewer

ROOM = "room-isolation"


async def start_relay(relay_server: RelayServer, rtc: RtcService, task: str, url: str) -> None:
    start = {
        **task_key(ROOM, task),
        "UserId": task,
        "Token": relay_server.publish_token(ROOM, task),
        "Control": {"StreamUrl": url, "StreamMode": 1},
    }
    assert await call(rtc, "StartRelayStream", start) == "ok"


async def test_a_crashed_worker_ends_only_its_own_task(
    relay_server: RelayServer, rtc: RtcService, media_url: str
) -> None:
    await start_relay(relay_server, rtc, "bystander", f"{media_url}/clip.ts")
    await wait_for_status(rtc, ROOM, "bystander", 2)
    bystander_workers = media_worker_pids(relay_server.process.pid)
    viewer = WhepViewer(
        f"{relay_server.base_url}/whep/{APP_ID}/{ROOM}/bystander",
        relay_server.subscribe_token(ROOM),
    )
    await viewer.connect()
    try:
        await viewer.wait_for_media("video", 1.0)

        await start_relay(relay_server, rtc, "victim", f"{media_url}/clip.flv")
        await wait_for_status(rtc, ROOM, "victim", 2)
        (victim_worker,) = media_worker_pids(relay_server.process.pid) - bystander_workers
        os.kill(victim_worker, signal.SIGKILL)  # as a segfault in a demuxer would

        # Only the victim notices: it is relaunched, and says so.
        await wait_for_status(rtc, ROOM, "victim", 1, timeout_s=10)
        victim = await wait_for_status(rtc, ROOM, "victim", 2, timeout_s=20)
        assert "exited" in victim["Stats"]["LastError"]

        frames_before = len(viewer.tracks["video"].frames)
        await asyncio.sleep(2)
        assert len(viewer.tracks["video"].frames) > frames_before + 30  # still ~30 fps
        assert (await get_task(rtc, ROOM, "bystander"))["Status"] == 2
    finally:
        await viewer.close()
        await call(rtc, "StopRelayStream", task_key(ROOM, "bystander"))
        await call(rtc, "StopRelayStream", task_key(ROOM, "victim"))


async def test_a_garbage_source_fails_with_a_clear_reason(
    relay_server: RelayServer, rtc: RtcService, media_url: str, clips: dict[str, Path]
) -> None:
    garbage = clips["mp4"].parent / "garbage.flv"
    garbage.write_bytes(random.Random(7).randbytes(256 * 1024))  # the same bytes every run
    await start_relay(relay_server, rtc, "garbage", f"{media_url}/garbage.flv")
    task = await wait_for_status(rtc, ROOM, "garbage", 3, timeout_s=20)
    assert task["StopReason"] == "SourceError"
    assert "corrupt" in task["StopDetail"] or "recognisable" in task["StopDetail"]
    assert await asyncio.to_thread(health_status, relay_server) == 200


def health_status(relay_server: RelayServer) -> int:
    with urllib.request.urlopen(f"{relay_server.base_url}/healthz", timeout=5) as response:
        return int(response.status)
