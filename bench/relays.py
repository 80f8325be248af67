"""A real node running relays, as figures 3 to 6 measure it: the server, a live RTMP
source, Starts through the official SDK, and the CPU of the server's process tree.

Also the light clip those figures use where the 720p reference would only add load,
and how a figure module runs on its own (``python -m bench.<module> [--quick]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.rtmp import nginx_rtmp_server, rtmp_publisher
from tests.support.sdk import RtcService
from tests.support.server import (
    ACCESS_KEY_ID,
    APP_ID,
    SECRET_ACCESS_KEY,
    RelayServer,
    start_server,
)
from tests.support.tasks import call, get_task, task_key
from tests.support.viewer import WhepRefused, WhepViewer

from bench.common import CACHE_DIR, cpu_seconds
from relaystream.media.testsrc import ClipSpec, make_test_clip

# 640x360 at 30 fps, a keyframe every second, AAC: what the end-to-end tests relay.
LIGHT_CLIP = ClipSpec(duration_s=20.0, width=640, height=360, frame_rate=30)
LIGHT_CLIP_NAME = "clip-360p30-20s.flv"
WHEP_RETRY_S = 0.03


def light_clip() -> Path:
    """The 360p clip as FLV (ready to publish over RTMP), made once and cached."""
    clip = CACHE_DIR / LIGHT_CLIP_NAME
    if not clip.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE_DIR) as work:
            made = make_test_clip(Path(work) / LIGHT_CLIP_NAME, LIGHT_CLIP)
            made.replace(clip)
    return clip


@contextmanager
def live_rtmp_source(workdir: Path, clip: Path, name: str = "camera") -> Iterator[str]:
    """nginx-rtmp on 127.0.0.1 with ``clip`` published to it in real time, looping, by the
    ffmpeg CLI (``-c copy``); yields the stream's URL. Any number of relays can pull it:
    nginx fans it out, so one publisher feeds them all."""
    with nginx_rtmp_server(workdir / "nginx") as base:
        url = f"{base}/{name}"
        with rtmp_publisher(clip, url):
            yield url


@dataclass
class Node:
    """A relaystream server and an SDK client signed in to it."""

    server: RelayServer
    rtc: RtcService

    def whep_url(self, room_id: str, user_id: str) -> str:
        return f"{self.server.base_url}/whep/{APP_ID}/{room_id}/{user_id}"

    def subscribe_token(self, room_id: str, user_id: str = "viewer") -> str:
        return self.server.subscribe_token(room_id, user_id)

    async def start(
        self, room_id: str, task_id: str, url: str, control: dict[str, Any] | None = None
    ) -> None:
        """StartRelayStream through the SDK; the relay publishes as user ``task_id``."""
        body = {
            **task_key(room_id, task_id),
            "UserId": task_id,
            "Token": self.server.publish_token(room_id, task_id),
            "Control": {"StreamUrl": url, "StreamMode": 1, **(control or {})},
        }
        result = await call(self.rtc, "StartRelayStream", body)
        if result != "ok":
            raise RuntimeError(f"{task_id} not started: {result}")

    async def stop(self, room_id: str, task_id: str) -> None:
        await call(self.rtc, "StopRelayStream", task_key(room_id, task_id))

    async def watch(
        self,
        room_id: str,
        task_id: str,
        deadline: float,
        viewer: Callable[[str, str], WhepViewer] = WhepViewer,
    ) -> WhepViewer:
        """A viewer of relay ``task_id``, connected as soon as its publication exists
        (WHEP is offered every 30 ms until it stops answering 404, up to the monotonic
        ``deadline``). ``viewer(url, token)`` makes each attempt's viewer."""
        token = self.subscribe_token(room_id)
        while True:
            attempt = viewer(self.whep_url(room_id, task_id), token)
            try:
                await attempt.connect()
                return attempt
            except WhepRefused as refused:
                if refused.status != 404 or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(WHEP_RETRY_S)

    async def not_running(self, room_id: str, task_ids: list[str]) -> list[str]:
        """Each of ``task_ids`` that is not running (status 2), with its status and why."""
        found = []
        for task_id in task_ids:
            task = await get_task(self.rtc, room_id, task_id)
            if task["Status"] != 2:
                why = f"{task['StopReason']} {task['StopDetail']}".strip()
                found.append(f"{task_id}: status {task['Status']} {why}".strip())
        return found

    def tree_cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.server.process.pid)


@contextmanager
def running_node(workdir: Path, *, app_qps_limit: int | None = None) -> Iterator[Node]:
    """A real server (the tests' config: private sources allowed, SQLite) and the SDK."""
    app_toml = {APP_ID: f"qps_limit = {app_qps_limit}"} if app_qps_limit else None
    tasks = "max_running_per_node = 128\nmax_running_per_app = 128"
    server = start_server(workdir / "server", app_toml=app_toml, tasks_toml=tasks)
    try:
        yield Node(server, RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY))
    finally:
        server.stop()


def relay_ids(count: int) -> list[str]:
    """The task ids (and publisher user ids) of a figure's ``count`` relays."""
    return [f"relay-{n}" for n in range(count)]


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (workers, the ffmpeg bridges they start)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                parent = int(stat.read().rpartition(b")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
        children.setdefault(parent, []).append(int(entry))
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children.get(current, []))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (a child that exited is left out:
    take a window's difference while the same processes run)."""
    total = 0.0
    for member in descendants(pid):
        with contextlib.suppress(OSError):  # exited meanwhile
            total += cpu_seconds(member)
    return total


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
