"""Viewers coming and going leave nothing behind in the server: memory and descriptors."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest

from tests.support.sdk import RtcService
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, RelayServer, start_server
from tests.support.tasks import running_relay
from tests.support.viewer import WhepViewer

ROOM = "room-churn"
SESSIONS, AT_ONCE, WARM_UP = 100, 5, 10


def resident_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayServer]:
    relay_server = start_server(tmp_path_factory.mktemp("churn"))
    yield relay_server
    relay_server.stop()


async def watch_briefly(whep_url: str, token: str) -> None:
    """Join, see the first video frame, leave."""
    viewer = WhepViewer(whep_url, token, kinds=("video",))
    await viewer.connect()
    try:
        deadline = time.monotonic() + 20
        while not viewer.tracks.get("video") or not viewer.tracks["video"].frames:
            assert time.monotonic() < deadline, "no video frame in 20 s"
            await asyncio.sleep(0.02)
    finally:
        await viewer.close()


async def settled(pid: int, fds_target: int, timeout_s: float = 20.0) -> int:
    """The server's open fds once they are back to ``fds_target`` (or the deadline)."""
    deadline = time.monotonic() + timeout_s
    while open_fds(pid) > fds_target and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return open_fds(pid)


async def test_a_hundred_viewer_sessions_leave_nothing_behind(
    server: RelayServer, long_clip_url: str
) -> None:
    pid = server.process.pid
    rtc = RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    token = server.subscribe_token(ROOM)
    async with running_relay(rtc, server, long_clip_url, ROOM) as whep_url:
        fds_baseline = open_fds(pid)
        done = 0
        rss_after_warm_up = 0.0
        while done < SESSIONS:
            await asyncio.gather(*(watch_briefly(whep_url, token) for _ in range(AT_ONCE)))
            done += AT_ONCE
            if done == WARM_UP:
                assert await settled(pid, fds_baseline) <= fds_baseline
                rss_after_warm_up = resident_mib(pid)
        fds_at_end = await settled(pid, fds_baseline)
        rss_at_end = resident_mib(pid)
    assert fds_at_end <= fds_baseline, f"{fds_at_end} fds open, {fds_baseline} before"
    assert rss_at_end - rss_after_warm_up < 10, (
        f"RSS {rss_after_warm_up:.1f} MiB after {WARM_UP} sessions, "
        f"{rss_at_end:.1f} MiB after {SESSIONS}"
    )
