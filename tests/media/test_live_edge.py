"""A live relay reaches its source's live edge.

Opening a live stream reads some of it ahead (FFmpeg's probe); a relay that paced that
read-ahead in real time from its first packet would hold every later packet back by it
for as long as it ran. These stories run a real pipeline on a live RTMP stream.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av

from relaystream.media.control import PipelineControl
from relaystream.media.pipeline import RelayPipeline
from relaystream.media.spec import MediaType, PipelineSpec, StreamMode
from relaystream.media.testsrc import ClipSpec, make_test_clip
from relaystream.media.wire import EncodedPacket, MessageKind
from tests.support.clips import remux
from tests.support.rtmp import nginx_rtmp_server, rtmp_publisher

VIDEO_TICKS_PER_S = 90_000
# With video only, FFmpeg cannot know that no audio will come and probes its full 2 s:
# the most a live source is read ahead. Half of it caught up is proof enough.
CAUGHT_UP_S = 1.0
DEADLINE_S = 20.0


@contextmanager
def live_rtmp(tmp_path: Path, clip: ClipSpec) -> Iterator[str]:
    """A live RTMP stream of ``clip``, published in real time; yields its URL once a
    reader can open it."""
    flv = remux(make_test_clip(tmp_path / "clip.mp4", clip), tmp_path / "clip.flv", "flv")
    with nginx_rtmp_server(tmp_path / "nginx") as base:
        url = f"{base}/camera"
        with rtmp_publisher(flv, url):
            deadline = time.monotonic() + DEADLINE_S
            while True:  # the publisher needs a moment to reach the server
                try:
                    av.open(url, options={"rtmp_live": "live"}, timeout=2.0).close()
                    break
                except av.error.FFmpegError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            yield url


class RunningRelay:
    """A remux pipeline in a thread, noting when each video packet left it."""

    def __init__(self, url: str) -> None:
        spec = PipelineSpec(
            url=url,
            media_type=MediaType.VIDEO_ONLY,
            stream_mode=StreamMode.REMUX,
            allow_private_sources=True,
        )
        self.sent: list[tuple[float, EncodedPacket]] = []
        self.failure: BaseException | None = None
        self._control = PipelineControl()
        self._pipeline = RelayPipeline(spec, self._note, lambda event: None, self._control)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _note(self, packet: EncodedPacket) -> None:
        if packet.kind is MessageKind.VIDEO:
            self.sent.append((time.monotonic(), packet))

    def _run(self) -> None:
        try:
            self._pipeline.run()
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.failure = exc

    def lead_s(self) -> float:
        """How far the relay's media time has run ahead of the wall clock since its first
        packet: 0 for real-time pacing, the caught-up read-ahead for a live source."""
        if not self.sent:
            return 0.0
        first_at, first = self.sent[0]
        return max(
            (packet.pts - first.pts) / VIDEO_TICKS_PER_S - (sent_at - first_at)
            for sent_at, packet in self.sent
        )

    def stop(self) -> None:
        self._control.stop()
        self._thread.join(10)


def test_a_live_rtmp_relay_catches_up_what_its_probe_read_ahead(tmp_path: Path) -> None:
    clip = ClipSpec(duration_s=4.0, width=320, height=180, audio_codec=None)
    with live_rtmp(tmp_path, clip) as url:
        relay = RunningRelay(url)
        try:
            deadline = time.monotonic() + DEADLINE_S
            while relay.lead_s() < CAUGHT_UP_S and relay.failure is None:
                assert time.monotonic() < deadline, f"lead only {relay.lead_s():.2f} s"
                time.sleep(0.1)
        finally:
            relay.stop()

    assert relay.failure is None
    assert relay.lead_s() >= CAUGHT_UP_S
    video = [packet for _, packet in relay.sent]
    assert video[0].keyframe  # a viewer can decode from the first packet on
    assert all(b.pts > a.pts for a, b in itertools.pairwise(video))
