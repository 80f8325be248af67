"""Stories for sources whose clock jumps: the output stays paced at its frame rate, its
pts keep rising, and nothing fills a jump with duplicated frames."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaystream.media.events import SourceProgress, WorkerEvent
from relaystream.media.pipeline import RelayPipeline
from relaystream.media.spec import MediaType, PipelineSpec, StreamMode
from relaystream.media.testsrc import ClipSpec, make_test_clip
from relaystream.media.wire import EncodedPacket, MessageKind
from tests.support.clips import with_timestamp_jumps
from tests.support.net import static_http_server

CLIP_S = 5.0
SOURCE_FPS = 30
OUTPUT_FPS = 15
# 33-bit MPEG-TS timestamps at 90 kHz wrap after this many seconds.
TS_WRAP_S = 2**33 / 90_000

SHAPES = {
    # Two jumps of +1000 s, each followed by a jump back.
    "jumps": [0, 1000, 0, 1000, 0],
    # Only backwards: a source that restarts its clock.
    "restarts": [40, 30, 20, 10, 0],
    # Starts 2 s before the 33-bit wrap and crosses it.
    "wrap": [TS_WRAP_S - 2.0] * 5,
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("jumps")
    clip = make_test_clip(
        root / "clip.mp4",
        ClipSpec(duration_s=CLIP_S, width=160, height=90, frame_rate=SOURCE_FPS),
    )
    for name, offsets in SHAPES.items():
        with_timestamp_jumps(clip, root / f"{name}.ts", offsets)
    with static_http_server(root) as base_url:
        yield base_url


def relay_timed(spec: PipelineSpec) -> tuple[list[tuple[float, EncodedPacket]], list[WorkerEvent]]:
    packets: list[tuple[float, EncodedPacket]] = []
    events: list[WorkerEvent] = []
    RelayPipeline(spec, lambda p: packets.append((time.monotonic(), p)), events.append).run()
    return packets, events


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", [StreamMode.TRANSCODE, StreamMode.REMUX])
def test_a_jumping_clock_plays_paced_with_rising_pts(
    sources: str, shape: str, mode: StreamMode
) -> None:
    spec = PipelineSpec(
        url=f"{sources}/{shape}.ts",
        stream_mode=mode,
        video_width=160,
        video_height=90,
        frame_rate=OUTPUT_FPS,
        allow_private_sources=True,
    )

    packets, events = relay_timed(spec)

    video = [(t, p) for t, p in packets if p.kind is MessageKind.VIDEO]
    audio = [p for _, p in packets if p.kind is MessageKind.AUDIO]
    fps = OUTPUT_FPS if mode is StreamMode.TRANSCODE else SOURCE_FPS
    # Every source second once, none invented: no duplicates fill a jump.
    assert len(video) == pytest.approx(CLIP_S * fps, rel=0.1)
    # Played in real time, as long as the source lasts.
    took_s = video[-1][0] - video[0][0]
    assert took_s == pytest.approx(CLIP_S, rel=0.1)
    pts = [p.pts for _, p in video]
    assert all(b > a for a, b in itertools.pairwise(pts))
    assert max(b - a for a, b in itertools.pairwise(pts)) <= 90_000 * 0.1
    assert pts[-1] / 90_000 == pytest.approx(CLIP_S, abs=0.3)
    # Audio follows the same continuous clock.
    assert audio[-1].pts / 48_000 == pytest.approx(pts[-1] / 90_000, abs=0.3)
    if shape != "wrap":  # FFmpeg's MPEG-TS demuxer unwraps the wrap itself
        assert [e for e in events if isinstance(e, SourceProgress)][-1].discontinuities >= 4


def test_audio_only_from_a_jumping_source_keeps_its_pace(sources: str) -> None:
    spec = PipelineSpec(
        url=f"{sources}/jumps.ts",
        media_type=MediaType.AUDIO_ONLY,
        allow_private_sources=True,
    )

    packets, _ = relay_timed(spec)

    assert packets[-1][0] - packets[0][0] == pytest.approx(CLIP_S, rel=0.1)
    assert len(packets) == pytest.approx(CLIP_S / 0.020, rel=0.05)
