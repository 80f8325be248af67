"""SIGTERM to a server with many relays: it answers within 10 s, stops every worker and
leaves the tasks to resume on the next start."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaystream.media.testsrc import ClipSpec, make_test_clip
from tests.support.net import static_http_server
from tests.support.processes import media_worker_pids, process_group_members
from tests.support.sdk import RtcService
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, start_server
from tests.support.tasks import call, task_key, wait_for_status

pytestmark = pytest.mark.media

ROOM = "sigterm"
RELAYS = 6


@pytest.fixture(scope="module")
def loop_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A short clip the relays loop, so they run for as long as the test needs."""
    root: Path = tmp_path_factory.mktemp("sigterm-media")
    make_test_clip(
        root / "loop.mp4",
        ClipSpec(duration_s=2.0, width=160, height=90, frame_rate=15, keyframe_interval_s=1.0),
    )
    with static_http_server(root) as base_url:
        yield f"{base_url}/loop.mp4"


async def test_sigterm_stops_every_worker_in_time_and_the_tasks_resume(
    tmp_path: Path, loop_url: str
) -> None:
    server = start_server(tmp_path / "terminated")
    rtc = RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    task_ids = [f"relay-{n}" for n in range(RELAYS)]
    try:
        for task_id in task_ids:
            body = {
                **task_key(ROOM, task_id),
                "UserId": task_id,
                "Token": server.publish_token(ROOM, task_id),
                "Control": {"StreamUrl": loop_url, "StreamMode": 1, "Loop": True},
            }
            assert await call(rtc, "StartRelayStream", body) == "ok"
        for task_id in task_ids:
            await wait_for_status(rtc, ROOM, task_id, 2)
        workers = media_worker_pids(server.process.pid)
        assert len(workers) == RELAYS

        terminated_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(server.process.wait, 10)
        took_s = time.monotonic() - terminated_at
        assert returncode == 0
        assert took_s < 10, f"SIGTERM took {took_s:.1f} s"
        # Every worker (and anything it started) is gone: none was left to the init
        # process. They are given a moment to be reaped, not to finish their work.
        deadline = time.monotonic() + 5
        while (left := process_group_members(workers)) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not left, f"workers outlived the server: {left}"
        log = server.log()
        assert "Traceback" not in log
        assert "Exception ignored" not in log

        server = server.restart()
        rtc = RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        for task_id in task_ids:
            task = await wait_for_status(rtc, ROOM, task_id, 2)
            assert task["Stats"]["VideoFramesSent"] > 0
        assert len(media_worker_pids(server.process.pid)) == RELAYS
    finally:
        server.stop()
