"""Every source format in both stream modes, end to end: the official SDK starts the
relays on a real server, aiortc viewers watch them over WHEP and decode what arrives.

The cases run side by side on one server (a group of relays, then the viewers, all at
once), so the whole matrix costs about as long as its slowest case.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from relaystream.media.testsrc import ClipSpec, make_test_clip
from tests.support.bridged import dash_live_packager, make_dash_vod, srt_sender
from tests.support.clips import remux, with_timestamp_jumps
from tests.support.hls import hls_server, segment
from tests.support.net import free_port, static_http_server
from tests.support.rtmp import nginx_rtmp_server, rtmp_publisher
from tests.support.sdk import RtcService, VolcengineError
from tests.support.server import ACCESS_KEY_ID, APP_ID, SECRET_ACCESS_KEY, RelayServer
from tests.support.tasks import call, get_task, task_key, wait_for_status
from tests.support.viewer import DecodedTrack, WhepViewer

ROOM = "room-matrix"
SOURCE_SIZE, SOURCE_FPS = (320, 180), 30
ASKED_SIZE, ASKED_FPS = (256, 144), 15
CLIP_S = 20.0
JUMPS_CLIP_S = 6.0
WATCH_S = 3.0
BATCH_SIZE = 5

REMUX: dict[str, Any] = {"StreamMode": 1}
TRANSCODE: dict[str, Any] = {
    "StreamMode": 0,
    "VideoWidth": ASKED_SIZE[0],
    "VideoHeight": ASKED_SIZE[1],
    "FrameRate": ASKED_FPS,
}


@dataclass(frozen=True)
class Case:
    """One relay: where it pulls from, how, and what a viewer should see."""

    source: str  # a key of the Sources urls
    control: dict[str, Any]
    size: tuple[int, int] | None = SOURCE_SIZE  # None: no video expected
    fps: int = SOURCE_FPS
    audio: bool = True


def _format_cases() -> dict[str, Case]:
    cases = {}
    for source in ("mp4", "flv", "ts", "hls-vod", "hls-live", "dash-vod", "dash-live", "rtmp"):
        cases[f"{source}-remux"] = Case(source, REMUX)
        cases[f"{source}-transcode"] = Case(source, TRANSCODE, ASKED_SIZE, ASKED_FPS)
    return cases


CASES: dict[str, Case] = {
    **_format_cases(),
    "audio-only": Case("mp4", {"MediaType": 1}, size=None),
    "video-only": Case("ts", {**REMUX, "MediaType": 2}, audio=False),
    "hevc-transcode": Case("hevc", TRANSCODE, ASKED_SIZE, ASKED_FPS),
    "bframes-remux": Case("bframes", REMUX),
    "srt-remux": Case("srt", REMUX),
}


@dataclass
class Seen:
    """What one viewer saw of one relay, and what the task said about itself."""

    video: DecodedTrack | None = None
    audio: DecodedTrack | None = None
    task: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class Sources:
    urls: dict[str, str]
    directory: Path


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sources]:
    root = tmp_path_factory.mktemp("matrix")
    width, height = SOURCE_SIZE
    clip = ClipSpec(duration_s=CLIP_S, width=width, height=height, frame_rate=SOURCE_FPS)
    mp4 = make_test_clip(root / "clip.mp4", clip)
    remux(mp4, root / "clip.flv", "flv")
    remux(mp4, root / "clip.ts", "mpegts")
    segment(root / "clip.ts", root / "hls")
    make_dash_vod(mp4, root / "dash")
    make_test_clip(root / "hevc.ts", replace(clip, video_codec="libx265"))
    make_test_clip(root / "bframes.mp4", replace(clip, b_frames=2))
    short = make_test_clip(root / "short.mp4", replace(clip, duration_s=JUMPS_CLIP_S))
    # +1000 s, back, +1000 s, back: two jumps and two returns.
    with_timestamp_jumps(short, root / "jumps.ts", [0, 1000, 0, 1000, 0, 0])
    with (
        static_http_server(root) as files,
        hls_server(root / "hls" / "index.m3u8") as hls,
        nginx_rtmp_server(root / "nginx") as rtmp_base,
        rtmp_publisher(root / "clip.flv", f"{rtmp_base}/camera"),
        dash_live_packager(mp4, root / "dash-live"),
        srt_sender(root / "clip.ts", free_port()) as srt_url,
    ):
        yield Sources(
            urls={
                "mp4": f"{files}/clip.mp4",
                "flv": f"{files}/clip.flv",
                "ts": f"{files}/clip.ts",
                "hls-vod": f"{hls}/vod/index.m3u8",
                "hls-live": f"{hls}/live/index.m3u8",
                "rtmp": f"{rtmp_base}/camera",
                "dash-vod": f"{files}/dash/manifest.mpd",
                "dash-live": f"{files}/dash-live/manifest.mpd",
                "srt": srt_url,
                "hevc": f"{files}/hevc.ts",
                "bframes": f"{files}/bframes.mp4",
                "jumps": f"{files}/jumps.ts",
            },
            directory=root,
        )


async def _start(
    server: RelayServer, rtc: RtcService, task: str, url: str, control: dict[str, Any]
) -> None:
    body = {
        **task_key(ROOM, task),
        "UserId": task,
        "Token": server.publish_token(ROOM, task),
        "Control": {"StreamUrl": url, **control},
    }
    assert await call(rtc, "StartRelayStream", body) == "ok"


async def _watch(server: RelayServer, rtc: RtcService, name: str, case: Case) -> Seen:
    seen = Seen()
    viewer = WhepViewer(
        f"{server.base_url}/whep/{APP_ID}/{ROOM}/{name}",
        server.subscribe_token(ROOM, f"viewer-{name}"),
    )
    try:
        await wait_for_status(rtc, ROOM, name, 2, timeout_s=60)
        await viewer.connect()
        watched = [("video" if case.size else "audio", WATCH_S)]
        if case.size and case.audio:
            watched.append(("audio", WATCH_S))
        for kind, seconds in watched:
            await viewer.wait_for_media(kind, seconds, timeout_s=60)
        seen.task = await get_task(rtc, ROOM, name)
    except (AssertionError, TimeoutError) as exc:
        task = await get_task(rtc, ROOM, name)
        seen.error = f"{exc}; task: {task['StopReason']} {task['StopDetail']}"
    finally:
        seen.video, seen.audio = viewer.tracks.get("video"), viewer.tracks.get("audio")
        await viewer.close()
    with contextlib.suppress(VolcengineError):  # it may have ended on its own: the error says
        await call(rtc, "StopRelayStream", task_key(ROOM, name))
    return seen


@pytest.fixture(scope="module")
def watched(relay_server: RelayServer, sources: Sources) -> dict[str, Seen]:
    """The cases in batches: each batch started at once, then watched at once.

    A batch is as many relays and viewers as one server process and this test process
    forward and decode comfortably on a small shared machine.
    """
    rtc = RtcService(relay_server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)

    async def run_batch(names: tuple[str, ...]) -> list[Seen]:
        for name in names:
            case = CASES[name]
            control = {**case.control, "Loop": True}
            await _start(relay_server, rtc, name, sources.urls[case.source], control)
        return await asyncio.gather(
            *(_watch(relay_server, rtc, name, CASES[name]) for name in names)
        )

    async def run_all() -> dict[str, Seen]:
        seen: dict[str, Seen] = {}
        names_in_order = list(CASES)
        for start in range(0, len(names_in_order), BATCH_SIZE):
            names = tuple(names_in_order[start : start + BATCH_SIZE])
            seen.update(zip(names, await run_batch(names), strict=True))
        return seen

    return asyncio.run(run_all())


@pytest.mark.parametrize("name", CASES)
def test_each_format_and_mode_plays_as_asked(watched: dict[str, Seen], name: str) -> None:
    case, seen = CASES[name], watched[name]

    assert not seen.error, f"{name}: {seen.error}"
    if case.size is None:
        assert seen.video is None or seen.video.frames == []
    else:
        assert seen.video is not None
        assert {(f.width, f.height) for f in seen.video.frames} == {case.size}
        assert seen.video.frame_rate() == pytest.approx(case.fps, rel=0.15)
        pts = [f.media_time_s for f in seen.video.frames]
        assert all(b > a for a, b in itertools.pairwise(pts)), "frames out of order"
    if case.audio:
        assert seen.audio is not None and seen.audio.frames
        assert {f.sample_rate for f in seen.audio.frames} == {48_000}
    else:
        assert seen.audio is None or seen.audio.frames == []


def test_a_b_frame_source_in_remux_says_it_was_transcoded(watched: dict[str, Seen]) -> None:
    task = watched["bframes-remux"].task

    assert task["Stats"]["Input"]["Video"]["BFrames"] is True
    output = task["Stats"]["Output"]["Video"]
    assert (output["Transcoded"], output["Reason"]) == (True, "BFrames")


def test_a_hevc_transcode_reports_its_input(watched: dict[str, Seen]) -> None:
    assert watched["hevc-transcode"].task["Stats"]["Input"]["Video"]["Codec"] == "hevc"


async def test_hevc_in_remux_ends_with_a_clear_error(
    relay_server: RelayServer, rtc: RtcService, sources: Sources
) -> None:
    await _start(relay_server, rtc, "hevc-remux", sources.urls["hevc"], REMUX)

    ended = await wait_for_status(rtc, ROOM, "hevc-remux", 3, timeout_s=30)

    assert ended["StopReason"] == "SourceError"
    assert ended["StopDetail"] == (
        "unsupported codec: remux mode needs H.264 video, the source has hevc"
    )


def _timed(rtc: RtcService) -> Callable[[str], Any]:
    async def running_to_ended(task: str) -> tuple[float, dict[str, Any]]:
        await wait_for_status(rtc, ROOM, task, 2, timeout_s=60)
        started = time.monotonic()
        ended = await wait_for_status(rtc, ROOM, task, 3, timeout_s=60)
        return time.monotonic() - started, ended

    return running_to_ended


@pytest.mark.parametrize("control", [TRANSCODE, REMUX], ids=["transcode", "remux"])
async def test_a_source_whose_clock_jumps_plays_at_its_rate_for_its_duration(
    relay_server: RelayServer, rtc: RtcService, sources: Sources, control: dict[str, Any]
) -> None:
    name = f"jumps-{control['StreamMode']}"
    fps = ASKED_FPS if control is TRANSCODE else SOURCE_FPS
    await _start(relay_server, rtc, name, sources.urls["jumps"], {**control, "MediaType": 2})
    viewer = WhepViewer(
        f"{relay_server.base_url}/whep/{APP_ID}/{ROOM}/{name}",
        relay_server.subscribe_token(ROOM, f"viewer-{name}"),
    )
    try:
        await wait_for_status(rtc, ROOM, name, 2, timeout_s=60)
        await viewer.connect()
        took_s, ended = await _timed(rtc)(name)
    finally:
        await viewer.close()

    assert ended["StopReason"] == "SourceEnded"
    # The task lasts as long as the source plays: no jump is waited out or filled.
    assert took_s == pytest.approx(JUMPS_CLIP_S, rel=0.1)
    video = viewer.tracks["video"]
    assert video.frame_rate() == pytest.approx(fps, rel=0.15)
    arrivals = [f.received_at for f in video.frames]
    assert (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) == pytest.approx(fps, rel=0.15)
