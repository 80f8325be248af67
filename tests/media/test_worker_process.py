"""Stories for a real worker process driven over its stdin, as the server drives it:
commands, stop, a server that dies, signals."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from relaystream.media.events import (
    CommandName,
    SourceEnded,
    SourceFailed,
    SourceOpened,
    WorkerCommand,
)
from relaystream.media.spec import MediaType, PipelineSpec, StreamMode
from relaystream.media.testsrc import ClipSpec, make_test_clip
from relaystream.media.wire import EncodedPacket, MessageKind, read_message
from tests.support.net import static_http_server
from tests.support.sources import silent_tcp_server

EXIT_WITHIN_S = 1.5  # "about a second", with room for a busy machine
TRANSCODE_FPS = 15


@pytest.fixture(scope="module")
def clip_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("worker")
    make_test_clip(root / "clip.mp4", ClipSpec(duration_s=6.0, width=160, height=90))
    with static_http_server(root) as base_url:
        yield f"{base_url}/clip.mp4"


@asynccontextmanager
async def worker(spec: PipelineSpec) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relaystream.media.worker",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(spec.to_json_dict()).encode() + b"\n")
    await process.stdin.drain()
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def first_video(process: asyncio.subprocess.Process) -> EncodedPacket:
    assert process.stdout is not None
    while True:
        message = await asyncio.wait_for(read_message(process.stdout), 30)
        if isinstance(message, EncodedPacket) and message.kind is MessageKind.VIDEO:
            return message
        assert not isinstance(message, SourceFailed | SourceEnded), message


async def exit_time(process: asyncio.subprocess.Process) -> tuple[int, float]:
    """(exit code, seconds it took), draining stdout meanwhile as the server would."""
    assert process.stdout is not None
    started = time.monotonic()
    await asyncio.wait_for(process.stdout.read(), 10)
    code = await asyncio.wait_for(process.wait(), 10)
    return code, time.monotonic() - started


def spec_for(url: str, **settings: object) -> PipelineSpec:
    return PipelineSpec(
        url=url,
        allow_private_sources=True,
        media_type=MediaType.VIDEO_ONLY,
        **settings,  # type: ignore[arg-type]
    )


async def test_stop_ends_a_playing_worker_within_a_second(clip_url: str) -> None:
    async with worker(spec_for(clip_url, stream_mode=StreamMode.REMUX)) as process:
        await first_video(process)
        assert process.stdin is not None
        process.stdin.write(WorkerCommand(CommandName.STOP).to_line())
        await process.stdin.drain()

        code, took_s = await exit_time(process)

    assert code == 0
    assert took_s < EXIT_WITHIN_S


async def test_stop_ends_a_worker_stuck_on_a_silent_source() -> None:
    with silent_tcp_server() as port:
        spec = spec_for(f"http://127.0.0.1:{port}/live.ts", open_timeout_s=30)
        async with worker(spec) as process:
            await asyncio.sleep(0.5)  # let it connect and block on the read
            assert process.stdin is not None
            process.stdin.write(WorkerCommand(CommandName.STOP).to_line())
            await process.stdin.drain()

            code, took_s = await exit_time(process)

    assert code == 0
    assert took_s < EXIT_WITHIN_S


async def test_a_worker_whose_server_died_exits_on_its_own(clip_url: str) -> None:
    async with worker(spec_for(clip_url, stream_mode=StreamMode.REMUX)) as process:
        await first_video(process)
        assert process.stdin is not None
        process.stdin.close()  # what the kernel does when the server dies

        code, took_s = await exit_time(process)

    assert code == 0
    assert took_s < EXIT_WITHIN_S


async def test_sigterm_ends_a_worker_quietly(clip_url: str) -> None:
    async with worker(spec_for(clip_url, stream_mode=StreamMode.REMUX)) as process:
        await first_video(process)
        process.send_signal(signal.SIGTERM)

        code, took_s = await exit_time(process)
        assert process.stderr is not None
        stderr = await process.stderr.read()

    assert code == 0
    assert took_s < EXIT_WITHIN_S
    assert stderr == b""  # no KeyboardInterrupt, no threading._shutdown traceback


async def test_a_keyframe_command_makes_a_transcoding_worker_send_one_at_once(
    clip_url: str,
) -> None:
    spec = spec_for(clip_url, video_width=160, video_height=90, frame_rate=TRANSCODE_FPS)
    async with worker(spec) as process:
        assert process.stdout is not None and process.stdin is not None
        first = await first_video(process)
        assert first.keyframe
        # Natural keyframes come every 2 s; ask for one half a second after the first.
        packet = first
        while packet.pts < 0.5 * 90_000:
            packet = await first_video(process)
            assert not packet.keyframe
        asked_at = time.monotonic()
        process.stdin.write(WorkerCommand(CommandName.KEYFRAME).to_line())
        await process.stdin.drain()
        while not packet.keyframe:
            packet = await first_video(process)
        answered_s = time.monotonic() - asked_at
        process.stdin.write(WorkerCommand(CommandName.STOP).to_line())
        await process.stdin.drain()
        await exit_time(process)

    assert answered_s < 1.0
    assert packet.pts < 1.5 * 90_000  # well before the natural one at 2 s


async def test_a_worker_reports_its_source_then_how_it_ended(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("short")
    make_test_clip(root / "clip.mp4", ClipSpec(duration_s=0.5, width=160, height=90))
    with static_http_server(root) as base_url:
        async with worker(
            spec_for(f"{base_url}/clip.mp4", stream_mode=StreamMode.REMUX)
        ) as process:
            assert process.stdout is not None
            events = []
            while (message := await asyncio.wait_for(read_message(process.stdout), 30)) is not None:
                if not isinstance(message, EncodedPacket):
                    events.append(message)
            code = await process.wait()

    assert isinstance(events[0], SourceOpened)
    assert isinstance(events[-1], SourceEnded)
    assert code == 0
