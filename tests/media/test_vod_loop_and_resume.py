"""Stories for a VOD inside one worker: Loop restarts without a visible gap, and a
relaunched worker resumes where the last one was."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from relaystream.media.control import PipelineControl
from relaystream.media.events import SourceOpened, SourceProgress, WorkerEvent
from relaystream.media.pipeline import PipelineEnd, RelayPipeline
from relaystream.media.spec import PipelineSpec, StreamMode
from relaystream.media.testsrc import ClipSpec, make_test_clip
from relaystream.media.wire import EncodedPacket, MessageKind
from tests.support.bridged import make_dash_vod
from tests.support.net import static_http_server

CLIP_S = 2.0
FPS = 30
MAX_GAP_S = 0.1


@dataclass
class Recorded:
    """Packets with the wall-clock time each was emitted, and the events."""

    packets: list[tuple[float, EncodedPacket]] = field(default_factory=list)
    events: list[WorkerEvent] = field(default_factory=list)

    def emit(self, packet: EncodedPacket) -> None:
        self.packets.append((time.monotonic(), packet))

    def track(self, kind: MessageKind) -> list[tuple[float, EncodedPacket]]:
        return [(t, p) for t, p in self.packets if p.kind is kind]

    def progress(self) -> list[SourceProgress]:
        return [e for e in self.events if isinstance(e, SourceProgress)]


@pytest.fixture(scope="module")
def vod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("vod")
    make_test_clip(
        root / "clip.mp4",
        ClipSpec(duration_s=CLIP_S, width=160, height=90, frame_rate=FPS),
    )
    make_test_clip(
        root / "long.mp4",
        ClipSpec(duration_s=4.0, width=160, height=90, frame_rate=FPS, keyframe_interval_s=0.5),
    )
    make_dash_vod(root / "clip.mp4", root / "dash")
    with static_http_server(root) as base_url:
        yield base_url


def run_for(spec: PipelineSpec, seconds: float) -> tuple[Recorded, PipelineEnd]:
    """Run the pipeline in a thread, stop it after ``seconds`` of wall-clock time."""
    recorded = Recorded()
    control = PipelineControl()
    ends: list[PipelineEnd] = []
    worker = threading.Thread(
        target=lambda: ends.append(
            RelayPipeline(spec, recorded.emit, recorded.events.append, control).run()
        )
    )
    worker.start()
    worker.join(seconds)
    control.stop()
    worker.join(5)
    assert not worker.is_alive()
    return recorded, ends[0]


@pytest.mark.parametrize(
    ("path", "mode"),
    [
        ("clip.mp4", {"stream_mode": StreamMode.REMUX}),
        ("clip.mp4", {"stream_mode": StreamMode.TRANSCODE, "video_width": 160, "video_height": 90}),
        # Read through the ffmpeg CLI, which loops it by itself.
        ("dash/manifest.mpd", {"stream_mode": StreamMode.REMUX}),
    ],
    ids=["remux", "transcode", "dash"],
)
def test_a_looping_vod_keeps_playing_with_rising_pts_and_no_gap(
    vod: str, path: str, mode: dict[str, object]
) -> None:
    spec = PipelineSpec(
        url=f"{vod}/{path}",
        loop=True,
        allow_private_sources=True,
        frame_rate=FPS,
        **mode,  # type: ignore[arg-type]
    )

    recorded, end = run_for(spec, 2.5 * CLIP_S)

    assert end is PipelineEnd.STOPPED
    video = recorded.track(MessageKind.VIDEO)
    pts = [p.pts for _, p in video]
    # Played past the clip's end, through at least one restart.
    assert pts[-1] / 90_000 > 2.0 * CLIP_S
    assert all(b > a for a, b in itertools.pairwise(pts)), "video pts must keep rising"
    assert max(b - a for a, b in itertools.pairwise(pts)) / 90_000 <= MAX_GAP_S
    # What a viewer sees: frames keep arriving across each restart, no later than
    # the gap allows (only the restarts are timed: elsewhere a busy machine's jitter
    # is not the loop's doing).
    restarts = [
        b_at - a_at
        for (a_at, a), (b_at, b) in itertools.pairwise(video)
        if int(a.pts / 90_000 / CLIP_S) != int(b.pts / 90_000 / CLIP_S)
    ]
    assert len(restarts) >= 2
    assert max(restarts) <= MAX_GAP_S
    audio_pts = [p.pts for _, p in recorded.track(MessageKind.AUDIO)]
    assert all(b > a for a, b in itertools.pairwise(audio_pts))
    assert max(b - a for a, b in itertools.pairwise(audio_pts)) / 48_000 <= MAX_GAP_S
    # Audio and video stay together: both reached the same media time.
    assert audio_pts[-1] / 48_000 == pytest.approx(pts[-1] / 90_000, abs=0.25)
    assert max(p.loops for p in recorded.progress()) >= 1


def test_without_loop_a_vod_ends(vod: str) -> None:
    spec = PipelineSpec(
        url=f"{vod}/clip.mp4", stream_mode=StreamMode.REMUX, allow_private_sources=True
    )

    recorded, end = run_for(spec, 3 * CLIP_S)

    assert end is PipelineEnd.ENDED
    assert recorded.progress()[-1].loops == 0
    assert len(recorded.track(MessageKind.VIDEO)) == CLIP_S * FPS


def test_a_relaunched_worker_resumes_near_the_position_it_is_given(vod: str) -> None:
    spec = PipelineSpec(
        url=f"{vod}/long.mp4",
        stream_mode=StreamMode.REMUX,
        start_position_s=2.5,
        allow_private_sources=True,
    )

    recorded, end = run_for(spec, 5.0)

    assert end is PipelineEnd.ENDED
    opened = recorded.events[0]
    assert isinstance(opened, SourceOpened) and opened.live is False
    video = recorded.track(MessageKind.VIDEO)
    # From the keyframe at or before 2.5 s (every 0.5 s) to the end at 4 s.
    assert len(video) == pytest.approx(1.5 * FPS, abs=0.5 * FPS)
    assert video[0][1].keyframe
    # The worker's own clock still starts near 0: the server joins workers' clocks.
    assert video[0][1].pts / 90_000 < 0.1
    # Where it was in the source is what the server persists.
    assert recorded.progress()[-1].position_s == pytest.approx(4.0, abs=0.1)
