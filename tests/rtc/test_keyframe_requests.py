"""A viewer's keyframe request (RTCP PLI) reaches the publisher, rate limited."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

from relaystream.rtc.keyframe_requests import KeyframeRequests
from tests.support.sfu import embedded_sfu
from tests.support.viewer import WhepViewer


async def test_a_viewers_picture_loss_reaches_the_publishers_keyframe_hook(
    clips: dict[str, Path],
) -> None:
    async with embedded_sfu(clips["mp4"]) as sfu:
        requested = asyncio.Event()
        sfu.publication.on_keyframe_request(requested.set)
        viewer = WhepViewer(sfu.whep_url, sfu.subscribe_token(), kinds=("video",))
        await viewer.connect()
        try:
            await viewer.wait_for_media("video", 0.5)
            assert not requested.is_set()  # nobody asked yet
            await viewer.send_picture_loss()
            await asyncio.wait_for(requested.wait(), 1.0)
        finally:
            await viewer.close()


async def test_a_viewer_asking_in_a_loop_gets_one_keyframe_a_second(
    clips: dict[str, Path],
) -> None:
    async with embedded_sfu(clips["mp4"]) as sfu:
        passed_at: list[float] = []
        sfu.publication.on_keyframe_request(lambda: passed_at.append(time.monotonic()))
        viewer = WhepViewer(sfu.whep_url, sfu.subscribe_token(), kinds=("video",))
        await viewer.connect()
        try:
            await viewer.wait_for_media("video", 0.5)
            requests = sfu.publication.keyframe_requests
            started = time.monotonic()
            while time.monotonic() - started < 2.5:  # ~50 requests in 2.5 s
                await viewer.send_picture_loss()
                await asyncio.sleep(0.05)
            # The last requests, folded into the next interval, are still passed on.
            deadline = time.monotonic() + 5
            while (requests.pending or requests.received < 40) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not requests.pending
        finally:
            await viewer.close()
    assert requests.received >= 40
    # One at once, then at most one per interval: 2.5 s of asking gives 3 or 4.
    assert 3 <= len(passed_at) <= 4
    gaps = [b - a for a, b in itertools.pairwise(passed_at)]
    assert all(gap >= requests.min_interval_s * 0.95 for gap in gaps), gaps


async def test_a_request_after_a_quiet_interval_passes_at_once() -> None:
    now = [100.0]
    requests = KeyframeRequests(min_interval_s=1.0, clock=lambda: now[0])
    passed: list[float] = []
    requests.subscribe(lambda: passed.append(now[0]))
    requests.request()
    now[0] += 1.5
    requests.request()
    assert passed == [100.0, 101.5]
    unsubscribe = requests.subscribe(lambda: passed.append(-1))
    unsubscribe()
    now[0] += 1.0
    requests.request()
    assert passed == [100.0, 101.5, 102.5]
