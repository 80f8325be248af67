"""A task's run outlives its workers: it loops, reconnects, idles out, expires, survives
a crashed worker and a crashed server, and always stops promptly.

Every story drives a real server through the official SDK and watches the room with a
real WebRTC viewer that decodes frames.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaystream.media.testsrc import ClipSpec, make_test_clip
from tests.support.net import free_port, static_http_server
from tests.support.processes import blocked_writing, media_worker_pids
from tests.support.rtmp import nginx_rtmp_server, rtmp_publisher
from tests.support.sdk import RtcService
from tests.support.server import (
    ACCESS_KEY_ID,
    APP_ID,
    SECRET_ACCESS_KEY,
    RelayServer,
    start_server,
)
from tests.support.tasks import call, get_task, task_key, wait_for_status
from tests.support.viewer import WhepViewer

ROOM = "room-life"
FPS = 25


@pytest.fixture(scope="module")
def life_media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL, directory) of an HTTP server with a 5 s and a 40 s clip."""
    root: Path = tmp_path_factory.mktemp("life-media")
    small = ClipSpec(width=320, height=180, frame_rate=FPS, keyframe_interval_s=1.0)
    make_test_clip(root / "five.mp4", ClipSpec(**{**small.__dict__, "duration_s": 5.0}))
    make_test_clip(root / "long.mp4", ClipSpec(**{**small.__dict__, "duration_s": 40.0}))
    make_test_clip(root / "live.flv", ClipSpec(**{**small.__dict__, "duration_s": 4.0}))
    # Every frame a keyframe: a worker whose output is not read fills its pipe at once.
    bulky = ClipSpec(**{**small.__dict__, "duration_s": 30.0, "keyframe_interval_s": 0.0})
    make_test_clip(root / "keyframes.mp4", bulky)
    with static_http_server(root) as base_url:
        yield base_url, root


async def start(
    server: RelayServer,
    rtc: RtcService,
    task: str,
    url: str,
    *,
    user: str | None = None,
    max_idle_s: int = 300,
    **control: object,
) -> None:
    """A remux relay of ``url`` as ``user`` (default: the task id)."""
    user = user or task
    body = {
        **task_key(ROOM, task),
        "UserId": user,
        "Token": server.publish_token(ROOM, user),
        "MaxIdleTime": max_idle_s,
        "Control": {"StreamUrl": url, "StreamMode": 1, **control},
    }
    assert await call(rtc, "StartRelayStream", body) == "ok"


def viewer_of(server: RelayServer, user: str) -> WhepViewer:
    return WhepViewer(
        f"{server.base_url}/whep/{APP_ID}/{ROOM}/{user}", server.subscribe_token(ROOM, "watcher")
    )


async def frames_grow(viewer: WhepViewer, kind: str, count: int, timeout_s: float) -> None:
    """Wait until ``count`` more frames of ``kind`` have been decoded."""
    before = len(viewer.tracks[kind].frames)
    deadline = time.monotonic() + timeout_s
    while len(viewer.tracks[kind].frames) < before + count:
        assert time.monotonic() < deadline, f"fewer than {count} new {kind} frames"
        await asyncio.sleep(0.1)


async def test_a_looped_clip_plays_past_its_end_without_a_gap(
    relay_server: RelayServer, rtc: RtcService, life_media: tuple[str, Path]
) -> None:
    base_url, _ = life_media
    await start(relay_server, rtc, "looped", f"{base_url}/five.mp4", Loop=True)
    await wait_for_status(rtc, ROOM, "looped", 2)
    viewer = viewer_of(relay_server, "looped")
    await viewer.connect()
    try:
        track = await viewer.wait_for_media("video", 12.0, timeout_s=30)
        steps = [b.media_time_s - a.media_time_s for a, b in itertools.pairwise(track.frames)]
        assert min(steps) > 0, "pts must keep rising across the loop"
        assert max(steps) <= 0.1, f"a gap of {max(steps):.3f} s in the video"
        task = await get_task(rtc, ROOM, "looped")
        assert task["Status"] == 2 and task["Stats"]["Loops"] >= 2
    finally:
        await viewer.close()
        await call(rtc, "StopRelayStream", task_key(ROOM, "looped"))


async def test_a_live_source_that_drops_is_reconnected_for_the_same_viewer(
    relay_server: RelayServer, rtc: RtcService, life_media: tuple[str, Path], tmp_path: Path
) -> None:
    _, root = life_media
    with nginx_rtmp_server(tmp_path / "nginx") as rtmp_base:
        url = f"{rtmp_base}/blip"
        with rtmp_publisher(root / "live.flv", url):
            await start(relay_server, rtc, "blip", url, max_idle_s=60)
            await wait_for_status(rtc, ROOM, "blip", 2)
            viewer = viewer_of(relay_server, "blip")
            await viewer.connect()
            await viewer.wait_for_media("video", 1.0)
        try:
            # The encoder is gone: the task says it is reconnecting...
            await wait_for_status(rtc, ROOM, "blip", 1, timeout_s=20)
            await asyncio.sleep(3)  # ...for the length of the outage this story is about.
            with rtmp_publisher(root / "live.flv", url):
                await frames_grow(viewer, "video", FPS, timeout_s=30)
                task = await wait_for_status(rtc, ROOM, "blip", 2)
            assert task["Stats"]["ReconnectCount"] == 1
            frames = viewer.tracks["video"].frames
            assert all(b.media_time_s > a.media_time_s for a, b in itertools.pairwise(frames))
        finally:
            await viewer.close()
            await call(rtc, "StopRelayStream", task_key(ROOM, "blip"))


async def test_a_source_that_stays_down_ends_idle_after_max_idle_time(
    relay_server: RelayServer, rtc: RtcService
) -> None:
    refused = f"http://127.0.0.1:{free_port()}/nothing-listens.flv"
    started_at = time.monotonic()
    await start(relay_server, rtc, "down", refused, max_idle_s=5)

    task = await wait_for_status(rtc, ROOM, "down", 3, timeout_s=20)
    assert task["StopReason"] == "IdleTimeout"
    assert "no media for 5 s" in task["StopDetail"]
    assert 5 <= time.monotonic() - started_at < 12


async def test_a_missing_source_fails_at_once(
    relay_server: RelayServer, rtc: RtcService, life_media: tuple[str, Path]
) -> None:
    base_url, _ = life_media
    started_at = time.monotonic()
    await start(relay_server, rtc, "missing", f"{base_url}/no-such-clip.flv", max_idle_s=60)

    task = await wait_for_status(rtc, ROOM, "missing", 3, timeout_s=10)
    assert (task["StopReason"], task["StopDetail"]) == (
        "SourceError",
        "HTTP 404: the source server has no such stream",
    )
    assert time.monotonic() - started_at < 5


async def test_a_killed_worker_is_relaunched_and_the_viewer_keeps_watching(
    relay_server: RelayServer, rtc: RtcService, life_media: tuple[str, Path]
) -> None:
    base_url, _ = life_media
    before = media_worker_pids(relay_server.process.pid)
    await start(relay_server, rtc, "phoenix", f"{base_url}/long.mp4")
    await wait_for_status(rtc, ROOM, "phoenix", 2)
    (worker,) = media_worker_pids(relay_server.process.pid) - before
    viewer = viewer_of(relay_server, "phoenix")
    await viewer.connect()
    try:
        await viewer.wait_for_media("video", 1.0)
        os.kill(worker, signal.SIGKILL)  # as a segfault in a demuxer would

        await frames_grow(viewer, "video", 2 * FPS, timeout_s=20)
        task = await wait_for_status(rtc, ROOM, "phoenix", 2)
        assert task["Stats"]["ReconnectCount"] == 1
        assert worker not in media_worker_pids(relay_server.process.pid)
    finally:
        await viewer.close()
        await call(rtc, "StopRelayStream", task_key(ROOM, "phoenix"))


async def test_a_worker_killed_in_the_middle_of_a_message_is_relaunched(
    relay_server: RelayServer, rtc: RtcService, life_media: tuple[str, Path]
) -> None:
    base_url, _ = life_media
    killed = media_worker_pids(relay_server.process.pid)  # any left by earlier stories
    await start(relay_server, rtc, "halfway", f"{base_url}/keyframes.mp4")
    await wait_for_status(rtc, ROOM, "halfway", 2)
    viewer = viewer_of(relay_server, "halfway")
    await viewer.connect()
    try:
        await viewer.wait_for_media("video", 1.0)
        cut_off = False
        for kills in range(1, 4):  # bounded: a kill lands mid-message nearly every time
            (worker,) = media_worker_pids(relay_server.process.pid) - killed
            killed.add(worker)
            # The server stops reading for a moment: its worker blocks writing a
            # message, most often halfway through, and is killed there.
            os.kill(relay_server.process.pid, signal.SIGSTOP)
            try:
                blocked = await blocked_writing(worker, within_s=5)
                os.kill(worker, signal.SIGKILL)
            finally:
                os.kill(relay_server.process.pid, signal.SIGCONT)
            assert blocked

            await frames_grow(viewer, "video", 2 * FPS, timeout_s=20)
            task = await wait_for_status(rtc, ROOM, "halfway", 2)
            assert task["Stats"]["ReconnectCount"] == kills
            assert "killed by SIGKILL" in task["Stats"]["LastError"]
            if "in the middle of a message" in task["Stats"]["LastError"]:
                cut_off = True
                break
        assert cut_off
    finally:
        await viewer.close()
        await call(rtc, "StopRelayStream", task_key(ROOM, "halfway"))


async def test_stopping_a_task_whose_worker_is_frozen_answers_promptly(
    relay_server: RelayServer, rtc: RtcService, life_media: tuple[str, Path]
) -> None:
    base_url, _ = life_media
    before = media_worker_pids(relay_server.process.pid)
    await start(relay_server, rtc, "frozen", f"{base_url}/long.mp4", user="stuck-user")
    await wait_for_status(rtc, ROOM, "frozen", 2)
    (worker,) = media_worker_pids(relay_server.process.pid) - before
    os.kill(worker, signal.SIGSTOP)
    try:
        stop_began = time.monotonic()
        assert await call(rtc, "StopRelayStream", task_key(ROOM, "frozen")) == "ok"
        assert time.monotonic() - stop_began < 5

        # The virtual user has left: the same UserId publishes again at once.
        await start(relay_server, rtc, "thawed", f"{base_url}/long.mp4", user="stuck-user")
        await wait_for_status(rtc, ROOM, "thawed", 2)
        assert worker not in media_worker_pids(relay_server.process.pid)
    finally:
        if worker in media_worker_pids(relay_server.process.pid):
            os.kill(worker, signal.SIGKILL)
        await call(rtc, "StopRelayStream", task_key(ROOM, "thawed"))


async def test_a_task_expires_after_its_lifetime(
    tmp_path: Path, life_media: tuple[str, Path]
) -> None:
    base_url, _ = life_media
    server = start_server(tmp_path / "short-lived", tasks_toml="lifetime_s = 4")
    try:
        rtc = RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        await start(server, rtc, "mayfly", f"{base_url}/five.mp4", Loop=True)
        await wait_for_status(rtc, ROOM, "mayfly", 2)

        task = await wait_for_status(rtc, ROOM, "mayfly", 3, timeout_s=15)
        assert task["StopReason"] == "Expired"
        lived_s = (task["EndTime"] - task["CreateTime"]) / 1000
        assert 4 <= lived_s < 7
    finally:
        server.stop()


async def test_a_server_crash_resumes_a_vod_where_it_was_with_its_start_time(
    tmp_path: Path, life_media: tuple[str, Path]
) -> None:
    base_url, _ = life_media
    server = start_server(tmp_path / "crashy")
    rtc = RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    try:
        await start(server, rtc, "survivor", f"{base_url}/long.mp4")
        first = await wait_for_status(rtc, ROOM, "survivor", 2)
        position_s = await _position_after(rtc, "survivor", 8.0)

        server.kill()
        server = server.restart()

        resumed = await wait_for_status(rtc, ROOM, "survivor", 2, timeout_s=20)
        assert resumed["StartTime"] == first["StartTime"]
        resumed_at_s = resumed["Stats"].get("SourcePositionSeconds", 0.0)
        deadline = time.monotonic() + 10
        while "SourcePositionSeconds" not in resumed["Stats"] and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            resumed = await get_task(rtc, ROOM, "survivor")
            resumed_at_s = resumed["Stats"].get("SourcePositionSeconds", 0.0)
        assert position_s - 5 <= resumed_at_s <= position_s + 10
    finally:
        server.stop()


async def _position_after(rtc: RtcService, task_id: str, at_least_s: float) -> float:
    """Poll the task's source position until it has passed ``at_least_s``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = (await get_task(rtc, ROOM, task_id)).get("Stats", {})
        if stats.get("SourcePositionSeconds", 0.0) >= at_least_s:
            return float(stats["SourcePositionSeconds"])
        await asyncio.sleep(0.25)
    raise AssertionError(f"{task_id} never got past {at_least_s} s")


async def test_an_update_switches_the_source_while_the_viewer_stays(
    relay_server: RelayServer, rtc: RtcService, life_media: tuple[str, Path]
) -> None:
    base_url, root = life_media
    if not (root / "wide.mp4").exists():
        make_test_clip(
            root / "wide.mp4",
            ClipSpec(width=640, height=360, frame_rate=FPS, keyframe_interval_s=1.0, duration_s=20),
        )
    await start(relay_server, rtc, "switched", f"{base_url}/long.mp4")
    await wait_for_status(rtc, ROOM, "switched", 2)
    viewer = viewer_of(relay_server, "switched")
    await viewer.connect()
    try:
        await viewer.wait_for_media("video", 1.0)
        update = {**task_key(ROOM, "switched"), "Control": {"StreamUrl": f"{base_url}/wide.mp4"}}
        assert await call(rtc, "UpdateRelayStream", update) == "ok"

        deadline = time.monotonic() + 20
        frames = viewer.tracks["video"].frames
        while not any(f.width == 640 for f in frames):
            assert time.monotonic() < deadline, "the viewer never saw the new source"
            await asyncio.sleep(0.1)
        await frames_grow(viewer, "video", FPS, timeout_s=10)

        sizes = [(f.width, f.height) for f in frames]
        switch = sizes.index((640, 360))
        assert set(sizes[:switch]) == {(320, 180)} and set(sizes[switch:]) == {(640, 360)}
        assert all(b.media_time_s > a.media_time_s for a, b in itertools.pairwise(frames))
        task = await get_task(rtc, ROOM, "switched")
        assert (task["Status"], task["StreamUrl"]) == (2, f"{base_url}/wide.mp4")
        assert task["Stats"]["ReconnectCount"] == 0  # a switch, not a recovery
    finally:
        await viewer.close()
        await call(rtc, "StopRelayStream", task_key(ROOM, "switched"))


async def test_a_viewers_picture_loss_makes_a_transcode_relay_send_a_keyframe(
    relay_server: RelayServer, rtc: RtcService, life_media: tuple[str, Path]
) -> None:
    base_url, _ = life_media
    # Transcoding at 15 fps puts a keyframe every 2 s: one within 1 s of a PLI sent just
    # after a scheduled one can only be the answer to that PLI.
    await start(
        relay_server,
        rtc,
        "on-demand",
        f"{base_url}/long.mp4",
        StreamMode=0,
        VideoWidth=320,
        VideoHeight=180,
        FrameRate=15,
    )
    await wait_for_status(rtc, ROOM, "on-demand", 2)
    viewer = viewer_of(relay_server, "on-demand")
    await viewer.connect()
    try:
        await viewer.wait_for_media("video", 1.0)
        frames = viewer.tracks["video"].frames
        for _ in range(2):
            seen = len(frames)
            deadline = time.monotonic() + 5
            while not any(f.keyframe for f in frames[seen:]):
                assert time.monotonic() < deadline, "no scheduled keyframe in 5 s"
                await asyncio.sleep(0.02)
            after_scheduled = len(frames)
            await viewer.send_picture_loss()
            asked_at = time.monotonic()

            deadline = asked_at + 1.0
            while not any(f.keyframe for f in frames[after_scheduled:]):
                assert time.monotonic() < deadline, "no keyframe within 1 s of the PLI"
                await asyncio.sleep(0.02)
            await asyncio.sleep(1.1)  # past the room's one-request-a-second limit
    finally:
        await viewer.close()
        await call(rtc, "StopRelayStream", task_key(ROOM, "on-demand"))
