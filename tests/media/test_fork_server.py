"""Stories for workers forked by the fork server: they play like spawned ones, a crash
or a kill hurts one worker only, a dead fork server is replaced, and a fork server never
outlives its server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from relaystream.media.events import SourceEnded, SourceOpened
from relaystream.media.launcher import ForkLauncher
from relaystream.media.process import MediaWorker, WorkerCrashed, WorkerOutput
from relaystream.media.spec import MediaType, PipelineSpec, StreamMode
from relaystream.media.testsrc import ClipSpec, make_test_clip
from relaystream.media.wire import EncodedPacket, MessageKind
from relaystream.media.worker import WORKER_PROCESS_NAME
from tests.support.net import static_http_server
from tests.support.processes import blocked_writing

pytestmark = pytest.mark.media

CLIP_S = 3.0
FRAME_RATE = 30


@pytest.fixture(scope="module")
def clip_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("forked")
    clip = ClipSpec(duration_s=CLIP_S, width=320, height=180, frame_rate=FRAME_RATE)
    make_test_clip(root / "clip.mp4", clip)
    with static_http_server(root) as base_url:
        yield f"{base_url}/clip.mp4"


@pytest.fixture
async def launcher() -> AsyncIterator[ForkLauncher]:
    launcher = ForkLauncher()
    await launcher.prepare()
    assert launcher.fork_server_pid is not None
    yield launcher
    await launcher.close()


def remux(url: str) -> PipelineSpec:
    return PipelineSpec(
        url=url,
        stream_mode=StreamMode.REMUX,
        media_type=MediaType.VIDEO_ONLY,
        allow_private_sources=True,
    )


def proc_stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name: state, ppid, pgrp, session..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


async def play(worker: MediaWorker) -> tuple[int, WorkerOutput]:
    """Video frames until the end, and the last message."""
    frames = 0
    last: WorkerOutput | None = None
    async for message in worker.messages():
        if isinstance(message, EncodedPacket) and message.kind is MessageKind.VIDEO:
            frames += 1
        last = message
    assert last is not None
    return frames, last


async def test_a_forked_worker_plays_a_clip_in_a_session_of_its_own(
    clip_url: str, launcher: ForkLauncher
) -> None:
    worker = MediaWorker(remux(clip_url), launcher=launcher)
    await worker.start()
    try:
        assert worker.pid is not None
        _state, parent, group, session = proc_stat(worker.pid)[:4]
        assert int(parent) == launcher.fork_server_pid
        assert int(group) == int(session) == worker.pid  # killpg reaches it and only it
        assert Path(f"/proc/{worker.pid}/comm").read_text().strip() in {
            WORKER_PROCESS_NAME,
            Path(f"/proc/{launcher.fork_server_pid}/comm").read_text().strip(),
        }
        frames, last = await play(worker)
    finally:
        await worker.stop()
    assert isinstance(last, SourceEnded)
    assert frames == CLIP_S * FRAME_RATE


async def test_a_crashed_forked_worker_ends_alone_and_the_fork_server_forks_on(
    clip_url: str, launcher: ForkLauncher
) -> None:
    victim = MediaWorker(remux(clip_url), launcher=launcher)
    bystander = MediaWorker(remux(clip_url), launcher=launcher)
    await victim.start()
    await bystander.start()
    try:

        async def crash_after_first_packet() -> WorkerOutput:
            last: WorkerOutput | None = None
            async for message in victim.messages():
                if isinstance(message, EncodedPacket) and not isinstance(last, EncodedPacket):
                    assert victim.pid is not None
                    os.kill(victim.pid, signal.SIGSEGV)
                last = message
            assert last is not None
            return last

        crashed, (frames, ended) = await asyncio.gather(crash_after_first_packet(), play(bystander))
    finally:
        await victim.stop()
        await bystander.stop()
    assert isinstance(crashed, WorkerCrashed)
    assert f"exited with code {-signal.SIGSEGV}" in crashed.detail
    assert isinstance(ended, SourceEnded)
    assert frames == CLIP_S * FRAME_RATE

    after = MediaWorker(remux(clip_url), launcher=launcher)
    await after.start()
    try:
        first = await anext(aiter(after.messages()))
    finally:
        await after.stop()
    assert isinstance(first, SourceOpened)


async def test_a_killed_fork_server_is_replaced_and_its_workers_play_on(
    clip_url: str, launcher: ForkLauncher
) -> None:
    first_server = launcher.fork_server_pid
    assert first_server is not None
    running = MediaWorker(remux(clip_url), launcher=launcher)
    await running.start()
    try:
        os.kill(first_server, signal.SIGKILL)
        frames, last = await play(running)
    finally:
        await running.stop()
    assert isinstance(last, SourceEnded)
    assert frames == CLIP_S * FRAME_RATE

    fresh = MediaWorker(remux(clip_url), launcher=launcher)
    await fresh.start()
    try:
        assert fresh.pid is not None
        assert int(proc_stat(fresh.pid)[1]) == launcher.fork_server_pid != first_server
        first = await anext(aiter(fresh.messages()))
    finally:
        await fresh.stop()
    assert isinstance(first, SourceOpened)


HOLDER = """
import asyncio
from relaystream.media.launcher import ForkLauncher

async def main():
    launcher = ForkLauncher()
    await launcher.prepare()
    print(launcher.fork_server_pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def is_fork_server(pid: int) -> bool:
    try:
        if proc_stat(pid)[0] == "Z":
            return False
        return b"relaystream.media.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_a_fork_server_does_not_outlive_its_server() -> None:
    server = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        fork_server = int(server.stdout.readline())
        assert is_fork_server(fork_server)
    finally:
        server.kill()
        server.wait()
    deadline = time.monotonic() + 10
    while is_fork_server(fork_server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_fork_server(fork_server)


@pytest.fixture(scope="module")
def heavy_clip_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every frame a 720p keyframe: a worker fills its stdout pipe within seconds."""
    root = tmp_path_factory.mktemp("heavy")
    clip = ClipSpec(
        duration_s=6.0, width=1280, height=720, keyframe_interval_s=0.0, audio_codec=None
    )
    make_test_clip(root / "clip.mp4", clip)
    with static_http_server(root) as base_url:
        yield f"{base_url}/clip.mp4"


async def killed_while_writing(url: str, launcher: ForkLauncher) -> list[WorkerOutput]:
    """What a worker yields when SIGKILLed while blocked writing to its stdout."""
    worker = MediaWorker(remux(url), launcher=launcher)
    await worker.start()
    try:
        messages = worker.messages()
        first = await anext(messages)
        assert not isinstance(first, WorkerCrashed)
        # Nobody reads on: the worker blocks in a write, most often halfway through a
        # message (unless the pipe filled up exactly at the end of one).
        assert worker.pid is not None
        assert await blocked_writing(worker.pid, within_s=30)
        os.kill(worker.pid, signal.SIGKILL)
        return [first, *[message async for message in messages]]
    finally:
        await worker.stop()


async def test_a_worker_killed_in_the_middle_of_a_message_is_a_crash_to_relaunch(
    heavy_clip_url: str, launcher: ForkLauncher
) -> None:
    cut_off = 0
    for _ in range(5):  # bounded: a kill lands mid-message nearly every time
        outputs = await killed_while_writing(heavy_clip_url, launcher)
        last = outputs[-1]
        assert isinstance(last, WorkerCrashed), last
        assert "killed by SIGKILL" in last.detail
        assert any(isinstance(m, EncodedPacket) for m in outputs)  # what it wrote whole
        if "in the middle of a message" in last.detail:
            cut_off += 1
            break
    assert cut_off == 1
