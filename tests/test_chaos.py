"""Chaos: relays with viewers while workers and the server are SIGKILLed at random.

A seeded random.Random picks a bounded number of events (a worker or the whole server
killed) at random moments. After each one the relays must come back on their own (a
worker is relaunched; a restarted server resumes its tasks), viewers must see frames
again within 10 s of a restart, and no worker may outlive its server. At the end every
task is running, none is duplicated (one worker each) and none is lost (List shows
exactly the tasks started). Set RELAYSTREAM_CHAOS_SEED to replay a failing run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaystream.media.testsrc import ClipSpec, make_test_clip
from tests.support.net import static_http_server
from tests.support.processes import media_worker_pids, process_group_members
from tests.support.sdk import RtcService
from tests.support.server import (
    ACCESS_KEY_ID,
    APP_ID,
    SECRET_ACCESS_KEY,
    RelayServer,
    start_server,
)
from tests.support.tasks import call, task_key, wait_for_status
from tests.support.viewer import WhepRefused, WhepViewer

pytestmark = pytest.mark.media

ROOM = "chaos"
SEED = int(os.environ.get("RELAYSTREAM_CHAOS_SEED", str(random.SystemRandom().randrange(10**6))))
EVENTS = 8
SERVER_KILL_SHARE = 0.35
# StreamMode of each relay: remux forwards packets, transcode decodes and encodes.
RELAYS = {"remux-a": 1, "remux-b": 1, "transcode-a": 0, "transcode-b": 0}
TRANSCODE = {"VideoWidth": 160, "VideoHeight": 90, "FrameRate": 15}
RESTART_FRAMES_S = 10.0  # the acceptance line: frames again within 10 s of a restart
RELAUNCH_FRAMES_S = 20.0  # a crashed worker is relaunched after a backoff
WORKERS_GONE_S = 10.0  # a worker whose server died sees EOF on stdin and exits


@pytest.fixture(scope="module")
def loop_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("chaos-media")
    make_test_clip(
        root / "loop.mp4",
        ClipSpec(duration_s=2.0, width=160, height=90, frame_rate=15, keyframe_interval_s=1.0),
    )
    with static_http_server(root) as base_url:
        yield f"{base_url}/loop.mp4"


def video_frames(viewer: WhepViewer) -> int:
    track = viewer.tracks.get("video")
    return len(track.frames) if track else 0


async def frames_again(viewers: dict[str, WhepViewer], deadline: float, what: str) -> None:
    """Wait until every viewer decodes new video frames (counted from now)."""
    before = {task_id: video_frames(v) for task_id, v in viewers.items()}
    while stalled := [t for t, v in viewers.items() if video_frames(v) <= before[t] + 2]:
        assert time.monotonic() < deadline, f"no frames for {stalled} {what}"
        await asyncio.sleep(0.1)


async def watch(server: RelayServer, task_id: str, deadline: float) -> WhepViewer:
    """A viewer of ``task_id``'s relay, retried until the relay publishes again."""
    while True:
        viewer = WhepViewer(
            f"{server.base_url}/whep/{APP_ID}/{ROOM}/{task_id}",
            server.subscribe_token(ROOM, f"viewer-{task_id}"),
        )
        try:
            await viewer.connect()
            return viewer
        except (WhepRefused, OSError):
            assert time.monotonic() < deadline, f"no WHEP session for {task_id}"
            await asyncio.sleep(0.2)


async def drop(viewer: WhepViewer) -> None:
    """Close a viewer whose server is gone (there is no session left to DELETE)."""
    viewer.session_url = None
    await viewer.close()


async def relaunched(server: RelayServer, victim: int, deadline: float) -> None:
    """Wait until the server runs one worker per relay again, none of them ``victim``."""
    while True:
        workers = media_worker_pids(server.process.pid)
        if victim not in workers and len(workers) == len(RELAYS):
            return
        assert time.monotonic() < deadline, f"worker {victim} not replaced: {sorted(workers)}"
        await asyncio.sleep(0.1)


async def workers_gone(pgids: set[int], deadline: float) -> None:
    while left := process_group_members(pgids):
        assert time.monotonic() < deadline, f"workers outlived their server: {left}"
        await asyncio.sleep(0.1)


async def test_relays_survive_killed_workers_and_servers(tmp_path: Path, loop_url: str) -> None:
    print(f"chaos seed {SEED}")
    rng = random.Random(SEED)
    history: list[str] = []
    server = start_server(tmp_path / "chaos")
    rtc = RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    viewers: dict[str, WhepViewer] = {}
    every_worker: set[int] = set()
    try:
        for task_id, mode in RELAYS.items():
            body = {
                **task_key(ROOM, task_id),
                "UserId": task_id,
                "Token": server.publish_token(ROOM, task_id),
                "Control": {
                    "StreamUrl": loop_url,
                    "StreamMode": mode,
                    "Loop": True,
                    **(TRANSCODE if mode == 0 else {}),
                },
            }
            assert await call(rtc, "StartRelayStream", body) == "ok"
        for task_id in RELAYS:
            await wait_for_status(rtc, ROOM, task_id, 2)
            viewers[task_id] = await watch(server, task_id, time.monotonic() + 20)
        await frames_again(viewers, time.monotonic() + 20, "at the start")

        for _ in range(EVENTS):
            await asyncio.sleep(rng.uniform(0.2, 2.0))
            workers = media_worker_pids(server.process.pid)
            every_worker |= workers
            if rng.random() < SERVER_KILL_SHARE:
                history.append(f"server killed (its workers {sorted(workers)})")
                server.kill()
                await workers_gone(workers, time.monotonic() + WORKERS_GONE_S)
                for viewer in viewers.values():
                    await drop(viewer)
                server = server.restart()
                restarted_at = time.monotonic()
                deadline = restarted_at + RESTART_FRAMES_S
                rtc = RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
                for task_id in RELAYS:
                    viewers[task_id] = await watch(server, task_id, deadline)
                await frames_again(viewers, deadline, "after the restart")
                history[-1] += f", frames {time.monotonic() - restarted_at:.1f} s after restart"
            else:
                victim = rng.choice(sorted(workers))
                history.append(f"worker {victim} killed")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
                deadline = time.monotonic() + RELAUNCH_FRAMES_S
                await relaunched(server, victim, deadline)
                await frames_again(viewers, deadline, "after a worker crash")

        # None lost, none duplicated: exactly the tasks started, each running with one
        # worker, and no worker of an earlier server (or an earlier crash) still alive.
        listed = await call(rtc, "ListRelayStream", {"AppId": APP_ID, "RoomId": ROOM, "Limit": 100})
        assert listed["Total"] == len(RELAYS)
        assert sorted(t["TaskId"] for t in listed["Tasks"]) == sorted(RELAYS)
        assert {t["Status"] for t in listed["Tasks"]} == {2}
        current = media_worker_pids(server.process.pid)
        assert len(current) == len(RELAYS)
        await workers_gone(every_worker - current, time.monotonic() + WORKERS_GONE_S)
        assert "Traceback" not in server.log()
    except BaseException as failure:
        failure.add_note(
            f"chaos seed {SEED} (replay with RELAYSTREAM_CHAOS_SEED={SEED}); "
            f"events: {'; '.join(history)}"
        )
        raise
    finally:
        for viewer in viewers.values():
            with contextlib.suppress(Exception):
                await viewer.close()
        server.stop()
