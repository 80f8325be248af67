"""Stories for worker limits: one source that needs too much ends its own task, with a
reason that says so, and the others play on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import pytest

from relaystream.media.events import SourceFailed, SourceOpened
from relaystream.media.failures import SourceError
from relaystream.media.launcher import WorkerStart, worker_launcher
from relaystream.media.pipeline import RelayPipeline
from relaystream.media.process import MediaWorker
from relaystream.media.spec import MediaType, PipelineSpec, StreamMode
from relaystream.media.testsrc import ClipSpec, make_test_clip
from relaystream.media.wire import EncodedPacket, MessageKind
from tests.support.net import static_http_server

HUGE = 8192


def make_huge_picture(path: Path) -> Path:
    """One blank 8192x8192 H.264 frame: cheap to make, too big to transcode."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        assert isinstance(stream, av.VideoStream)
        stream.width = stream.height = HUGE
        stream.pix_fmt = "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast"}
        frame = av.VideoFrame(HUGE, HUGE, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.pts, frame.time_base = 0, Fraction(1, 25)
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("limits")
    make_huge_picture(root / "huge.mp4")
    make_test_clip(root / "hd.mp4", ClipSpec(duration_s=4.0, width=1280, height=720))
    make_test_clip(root / "small.mp4", ClipSpec(duration_s=4.0, width=320, height=180))
    with static_http_server(root) as base_url:
        yield base_url


def test_a_source_over_the_resolution_cap_is_refused_in_transcode(sources: str) -> None:
    spec = PipelineSpec(
        url=f"{sources}/huge.mp4",
        video_width=640,
        video_height=360,
        allow_private_sources=True,
    )

    with pytest.raises(SourceError) as refused:
        RelayPipeline(spec, lambda _: None, lambda _: None).run()

    assert refused.value.detail == (
        "the source's video is 8192x8192, over the 4096x2160 limit for transcoding"
    )
    assert not refused.value.retryable


def test_the_resolution_cap_is_configurable_and_portrait_counts_like_landscape(
    sources: str,
) -> None:
    events: list[object] = []
    spec = PipelineSpec(
        url=f"{sources}/small.mp4",
        video_width=160,
        video_height=90,
        media_type=MediaType.VIDEO_ONLY,
        max_transcode_width=180,  # the source is 320x180: fits as 180x320, not as 320x180
        max_transcode_height=320,
        allow_private_sources=True,
        stream_mode=StreamMode.TRANSCODE,
    )
    RelayPipeline(spec, lambda _: None, events.append).run()
    assert isinstance(events[0], SourceOpened)

    smaller = PipelineSpec(**{**spec.to_json_dict(), "max_transcode_height": 240})
    with pytest.raises(SourceError, match="over the 180x240 limit"):
        RelayPipeline(smaller, lambda _: None, lambda _: None).run()


@pytest.mark.parametrize("start", list(WorkerStart))
async def test_a_worker_past_its_memory_cap_ends_alone(sources: str, start: WorkerStart) -> None:
    # An HD transcode needs ~90 MB here; a remux of a small clip ~55 MB. A forked
    # worker's resident set counts the pages it shares with its fork server, like a
    # spawned one's counts its own copies of them.
    launcher = worker_launcher(start)
    greedy = MediaWorker(
        PipelineSpec(
            url=f"{sources}/hd.mp4",
            video_width=1280,
            video_height=720,
            frame_rate=30,
            memory_limit_mb=75,
            allow_private_sources=True,
        ),
        launcher=launcher,
    )
    bystander = MediaWorker(
        PipelineSpec(
            url=f"{sources}/small.mp4",
            stream_mode=StreamMode.REMUX,
            media_type=MediaType.VIDEO_ONLY,
            allow_private_sources=True,
        ),
        launcher=launcher,
    )

    async def last_event(worker: MediaWorker) -> object:
        last: object = None
        async for message in worker.messages():
            if not isinstance(message, EncodedPacket):
                last = message
        return last

    async def frame_times(worker: MediaWorker) -> list[float]:
        times = []
        async for message in worker.messages():
            if isinstance(message, EncodedPacket) and message.kind is MessageKind.VIDEO:
                times.append(time.monotonic())
        return times

    await greedy.start()
    await bystander.start()
    try:
        ended, bystander_frames = await asyncio.gather(last_event(greedy), frame_times(bystander))
    finally:
        await greedy.stop()
        await bystander.stop()
        await launcher.close()

    assert isinstance(ended, SourceFailed)
    assert not ended.retryable
    assert "over its 75 MB memory limit" in ended.detail
    # The other relay played its whole clip at its own pace.
    assert len(bystander_frames) == 4 * 30
    paced_fps = (len(bystander_frames) - 1) / (bystander_frames[-1] - bystander_frames[0])
    assert paced_fps == pytest.approx(30, rel=0.15)
