"""A real relaystream server relaying a live RTMP source, as the per-task figures see it.

Everything on 127.0.0.1: nginx-rtmp fed the reference clip by ``ffmpeg -re -stream_loop
-1 -c copy`` (a live 720p30 H.264 + AAC source that never ends), a real server
(``tests.support.server.start_server``, its data in a temporary directory), tasks
started and stopped through the official SDK as a user would, and WHEP viewers in this
process that count the frames they receive without decoding them
(``bench.counting_viewers``), so that they do not compete with what is measured.

A task's processes are the server's descendants that appeared while it started: its
media worker, however the server starts workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
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
from tests.support.tasks import call, task_key, wait_for_status
from tests.support.viewer import WhepViewer

from bench.common import CACHE_DIR, cpu_seconds, descendants, reference_clip
from bench.counting_viewers import CountingDecoder, counting_decoders
from relaystream.server import ensure_demo_clip

RECEIVE_TIMEOUT_S = 20.0
# The server's tree counts as idle once it uses less than this over a slice.
QUIET_PCT = 3.0
QUIET_SLICE_S = 0.5
QUIET_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class TaskMode:
    """What a task does with the source: remux, or transcode to a size, rate and bitrate."""

    name: str
    stream_mode: int  # the API's StreamMode: 1 remux, 0 transcode
    width: int | None = None
    height: int | None = None
    frame_rate: int | None = None
    bitrate_kbps: int | None = None

    @property
    def transcodes(self) -> bool:
        return self.stream_mode == 0

    def control(self, stream_url: str) -> dict[str, Any]:
        """The Start call's ``Control``."""
        control: dict[str, Any] = {"StreamUrl": stream_url, "StreamMode": self.stream_mode}
        optional = {
            "VideoWidth": self.width,
            "VideoHeight": self.height,
            "FrameRate": self.frame_rate,
            "Bitrate": self.bitrate_kbps,
        }
        control.update({name: value for name, value in optional.items() if value is not None})
        return control


REMUX = TaskMode("remux", stream_mode=1)
# What a relay of a 720p camera to small players asks for.
TRANSCODE = TaskMode(
    "transcode", stream_mode=0, width=640, height=480, frame_rate=15, bitrate_kbps=800
)


@dataclass(frozen=True)
class RunningTask:
    room_id: str
    task_id: str
    whep_url: str
    # The processes the server started while it started: its own, if no other task was
    # starting at the same time.
    pids: frozenset[int]


class LiveRelay:
    """The server, its live source, and the viewers made so far."""

    def __init__(
        self, server: RelayServer, source_url: str, decoders: list[CountingDecoder]
    ) -> None:
        self.server = server
        self.server_pid = server.process.pid
        self.source_url = source_url
        self.rtc = RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        self.decoders = decoders  # every viewer's, as aiortc makes them

    def tree_cpu_s(self) -> dict[int, float]:
        """CPU seconds so far of the server and of each of its descendants."""
        used: dict[int, float] = {}
        for pid in {self.server_pid, *descendants(self.server_pid)}:
            with contextlib.suppress(OSError):  # it has just exited
                used[pid] = cpu_seconds(pid)
        return used

    def idle_cpu_pct(self, seconds: float) -> dict[int, float]:
        """CPU % of each process of the tree over ``seconds`` while nothing is asked of it,
        once it is quiet (the quiet slice counts as part of the measurement)."""
        first, started = self.wait_until_quiet()
        time.sleep(max(0.0, started + seconds - time.monotonic()))
        last, wall_s = self.tree_cpu_s(), time.monotonic() - started
        return {pid: 100 * (last[pid] - first[pid]) / wall_s for pid in first.keys() & last}

    def wait_until_quiet(self) -> tuple[dict[int, float], float]:
        """Wait until the tree is quiet over a slice: a server answers /healthz before it
        has finished starting, and a stopped task's worker takes a moment to exit.
        Returns the tree's CPU seconds and the time at the start of the quiet slice."""
        deadline = time.monotonic() + QUIET_TIMEOUT_S
        while True:
            first, started = self.tree_cpu_s(), time.monotonic()
            time.sleep(QUIET_SLICE_S)
            sliced = self.tree_cpu_s()
            busy_s = sum(sliced[p] - first[p] for p in first.keys() & sliced)
            quiet = 100 * busy_s / (time.monotonic() - started) < QUIET_PCT
            if quiet and first.keys() == sliced.keys():
                return first, started
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server's tree is still busy after {QUIET_TIMEOUT_S} s")

    @contextlib.asynccontextmanager
    async def task(self, room_id: str, mode: TaskMode) -> AsyncIterator[RunningTask]:
        """A task relaying the live source into ``room_id``, running (status 2) until exit."""
        task_id, user_id = f"{room_id}-task", "relay"
        before = descendants(self.server_pid)
        start = {
            **task_key(room_id, task_id),
            "UserId": user_id,
            "Token": self.server.publish_token(room_id, user_id),
            "Control": mode.control(self.source_url),
        }
        if await call(self.rtc, "StartRelayStream", start) != "ok":
            raise RuntimeError(f"StartRelayStream of {room_id} was not accepted")
        try:
            await wait_for_status(self.rtc, room_id, task_id, 2, timeout_s=RECEIVE_TIMEOUT_S)
            pids = frozenset(descendants(self.server_pid) - before)
            if not pids:
                raise RuntimeError(f"no process was started for the task of {room_id}")
            whep_url = f"{self.server.base_url}/whep/{APP_ID}/{room_id}/{user_id}"
            yield RunningTask(room_id, task_id, whep_url, pids)
        finally:
            await call(self.rtc, "StopRelayStream", task_key(room_id, task_id))

    @contextlib.asynccontextmanager
    async def viewers(self, task: RunningTask, count: int) -> AsyncIterator[list[WhepViewer]]:
        """``count`` more viewers of ``task``, each receiving audio and video, until exit."""
        token = self.server.subscribe_token(task.room_id)
        viewers = [WhepViewer(task.whep_url, token) for _ in range(count)]
        wanted = self.receiving("video") + count
        try:
            await asyncio.gather(*(viewer.connect() for viewer in viewers))
            deadline = time.monotonic() + RECEIVE_TIMEOUT_S
            while self.receiving("video") < wanted or self.receiving("audio") < wanted:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{count} new viewers of {task.room_id} get no media")
                await asyncio.sleep(0.05)
            yield viewers
        finally:
            await asyncio.gather(*(viewer.close() for viewer in viewers), return_exceptions=True)

    def receiving(self, kind: str) -> int:
        """How many tracks of ``kind`` have received a frame, all viewers so far."""
        return sum(1 for d in self.decoders if d.kind == kind and d.frames)

    def frames(self, kind: str) -> int:
        """Frames of ``kind`` received so far, all viewers together."""
        return sum(d.frames for d in self.decoders if d.kind == kind)


@contextlib.contextmanager
def live_relay() -> Iterator[LiveRelay]:
    """nginx-rtmp with the reference clip published live, and a server; stopped on exit."""
    clip, _ = reference_clip()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(dir=CACHE_DIR) as workdir,
        nginx_rtmp_server(Path(workdir) / "nginx") as rtmp_base,
        rtmp_publisher(clip, f"{rtmp_base}/camera") as publisher,
        counting_decoders() as decoders,
    ):
        # The server makes its built-in test stream on first start (seconds of CPU):
        # hand it one made once and cached, so that it is idle once it answers.
        demo_clip = ensure_demo_clip(CACHE_DIR / "server-data")
        demo_dir = Path(workdir) / "server" / "data" / demo_clip.parent.name
        demo_dir.mkdir(parents=True)
        shutil.copyfile(demo_clip, demo_dir / demo_clip.name)
        server = start_server(Path(workdir) / "server")
        try:
            if publisher.poll() is not None:
                raise RuntimeError(f"the RTMP publisher exited with {publisher.returncode}")
            yield LiveRelay(server, f"{rtmp_base}/camera", decoders)
        finally:
            server.stop()
