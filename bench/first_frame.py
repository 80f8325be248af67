"""Figure 4, time to first frame: from the StartRelayStream call to the first decoded
video frame at a WebRTC viewer, for each source format.

Run from the repository root (``make bench-deps`` first, for the plot)::

    .venv/bin/python -m bench.first_frame [--quick] [--out DIR]

Sources, all on 127.0.0.1, made from one 640x360 30 fps clip (a keyframe every second,
AAC): RTMP (nginx-rtmp, the ffmpeg CLI publishing in real time), HTTP-FLV, MP4 and
MPEG-TS files over HTTP, a live HLS playlist (1 s segments, sliding) and a static DASH
presentation (1 s segments). For each trial a remux relay is started through the SDK; a
viewer offers WHEP every 30 ms until the publication exists, then waits for its first
decoded frame. The task is stopped before the next trial.

Reference, in the same run, beside the relay's trials (from the server's start-up on, one
ffmpeg at a time; it mostly waits for its source): the ffmpeg CLI
reading the same URL, decoding and writing raw pictures to a pipe (``-frames:v 1 -f
rawvideo pipe:``), timed from its start to the first bytes on the pipe; ffmpeg's
defaults, as a user would type it. Quick mode: RTMP and HLS, one trial each.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.bridged import make_dash_vod
from tests.support.clips import make_clips
from tests.support.hls import hls_server, segment
from tests.support.net import static_http_server
from tests.support.viewer import WhepViewer

from bench.common import CACHE_DIR, table
from bench.figure import Figure, run_alone
from bench.relays import LIGHT_CLIP, WHEP_RETRY_S, Node, live_rtmp_source, running_node

ROOM = "first-frame"
TRIAL_TIMEOUT_S = 20.0
FORMATS = ("RTMP", "HTTP-FLV", "MP4", "MPEG-TS", "HLS", "DASH")
QUICK_FORMATS = ("RTMP", "HLS")
TARGET_S = {"HLS": 2.0, "DASH": 2.0}  # the others: 1 s
TARGET = "<= 1 s RTMP/FLV/MP4, <= 2 s HLS/DASH"


@dataclass(frozen=True)
class Trial:
    start_call_s: float  # until StartRelayStream answered
    published_s: float  # until WHEP accepted the viewer (the publication exists)
    first_frame_s: float  # until the viewer decoded its first video frame


@dataclass(frozen=True)
class Row:
    name: str
    relay: list[Trial]
    ffmpeg_s: list[float]

    @property
    def relay_s(self) -> float:
        return statistics.median(t.first_frame_s for t in self.relay)

    @property
    def reference_s(self) -> float:
        return statistics.median(self.ffmpeg_s)

    @property
    def ratio(self) -> float:
        return self.relay_s / self.reference_s

    @property
    def target_s(self) -> float:
        return TARGET_S.get(self.name, 1.0)


def clips() -> Path:
    """The clip as MP4, FLV and MPEG-TS, plus its HLS and DASH cuts, made once and cached."""
    directory = CACHE_DIR / "first-frame-360p"
    done = directory / "done"
    if not done.exists():
        made = make_clips(directory, LIGHT_CLIP)
        segment(made["ts"], directory / "hls")
        make_dash_vod(made["mp4"], directory / "dash")
        done.touch()
    return directory


@contextmanager
def sources(work: Path, formats: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """Every format's URL on 127.0.0.1, served for as long as the context lasts."""
    directory = clips()
    with ExitStack() as stack:
        files = stack.enter_context(static_http_server(directory))
        urls = {
            "HTTP-FLV": f"{files}/clip.flv",
            "MP4": f"{files}/clip.mp4",
            "MPEG-TS": f"{files}/clip.ts",
            "DASH": f"{files}/dash/manifest.mpd",
        }
        if "HLS" in formats:
            hls = stack.enter_context(hls_server(directory / "hls" / "index.m3u8"))
            urls["HLS"] = f"{hls}/live/index.m3u8"
        if "RTMP" in formats:
            urls["RTMP"] = stack.enter_context(live_rtmp_source(work, directory / "clip.flv"))
        yield urls


def video_viewer(url: str, token: str) -> WhepViewer:
    return WhepViewer(url, token, kinds=("video",))


async def relay_trial(node: Node, url: str, task_id: str) -> Trial:
    began = time.monotonic()
    await node.start(ROOM, task_id, url)
    answered = time.monotonic()
    deadline = began + TRIAL_TIMEOUT_S
    try:
        viewer = await node.watch(ROOM, task_id, deadline, video_viewer)
        published = time.monotonic()
        try:
            while not (track := viewer.tracks.get("video")) or not track.frames:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{task_id}: no frame in {TRIAL_TIMEOUT_S} s")
                await asyncio.sleep(0.005)
            first = track.frames[0].received_at
        finally:
            await viewer.close()
    finally:
        await node.stop(ROOM, task_id)
    return Trial(answered - began, published - began, first - began)


def ffmpeg_trial(url: str) -> float:
    """Seconds from starting the ffmpeg CLI on ``url`` to its first decoded picture."""
    command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", url, "-map", "0:v:0"]
    command += ["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "yuv420p", "pipe:1"]
    began = time.monotonic()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert process.stdout is not None
    try:
        if not process.stdout.read(1):
            raise RuntimeError(f"ffmpeg decoded nothing from {url}: exit {process.wait(5)}")
        return time.monotonic() - began
    finally:
        # Killed, not terminated: with the pipe no longer read, ffmpeg may be blocked in
        # a write and never get to its SIGTERM handler.
        process.kill()
        process.wait()
        process.stdout.close()


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    places = range(len(rows))
    width = 0.38
    axes.bar([p - width / 2 for p in places], [r.relay_s for r in rows], width, label="relay")
    axes.bar(
        [p + width / 2 for p in places],
        [r.reference_s for r in rows],
        width,
        color="grey",
        label="ffmpeg CLI (same run)",
    )
    for place, row in zip(places, rows, strict=True):
        axes.hlines(row.target_s, place - 0.45, place + 0.45, color="tab:red", linestyles="--")
    axes.set_xticks(list(places), [r.name for r in rows])
    axes.set_ylabel("seconds to the first decoded frame (median)")
    axes.set_title("dashed: target")
    axes.grid(axis="y", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def measure(quick: bool, out_dir: Path) -> Figure:
    formats = QUICK_FORMATS if quick else FORMATS
    trials = 1 if quick else 3
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="relaystream-bench-") as work,
        sources(Path(work), formats) as urls,
        ThreadPoolExecutor(1) as pool,
    ):
        # The ffmpeg trials, one at a time, in a thread: they start with the server's
        # start-up and go on beside the relay's trials (ffmpeg mostly waits for its
        # source), so a quick run does not wait for them.
        references = pool.submit(
            lambda: {name: [ffmpeg_trial(urls[name]) for _ in range(trials)] for name in formats}
        )
        with running_node(Path(work)) as node:
            relay = {
                name: [
                    asyncio.run(relay_trial(node, urls[name], f"{name.lower()}-{n}"))
                    for n in range(trials)
                ]
                for name in formats
            }
        rows = [Row(name, relay[name], references.result()[name]) for name in formats]
    ratio = math.exp(statistics.mean(math.log(r.ratio) for r in rows))
    each = ", ".join(f"{r.name} {r.relay_s:.2f} s vs {r.reference_s:.2f} s" for r in rows)
    summary = (
        f"first frame (Start -> decoded at a viewer vs ffmpeg CLI, median of {trials}): "
        f"{each}; geometric mean: {ratio:.2f}x"
    )
    headers = [
        "format",
        "Start answered s",
        "publication up s",
        "first frame s",
        "ffmpeg CLI s",
        "relay / ffmpeg",
        "target s",
        "met",
    ]
    lines = [
        [
            r.name,
            f"{statistics.median(t.start_call_s for t in r.relay):.3f}",
            f"{statistics.median(t.published_s for t in r.relay):.2f}",
            f"{r.relay_s:.2f} ({min(t.first_frame_s for t in r.relay):.2f}.."
            f"{max(t.first_frame_s for t in r.relay):.2f})",
            f"{r.reference_s:.2f}",
            f"{r.ratio:.1f}x",
            f"{r.target_s:.0f}",
            "yes" if r.relay_s <= r.target_s else "NO",
        ]
        for r in rows
    ]
    plots = [] if quick else [out_dir / "first_frame.png"]
    for path in plots:
        plot(rows, path)
    clip = LIGHT_CLIP
    source = f"{clip.width}x{clip.height}@{clip.frame_rate} H.264"
    gop_s = clip.keyframe_interval_s
    retry_ms = 1000 * WHEP_RETRY_S
    body = f"""Source: {source} (a keyframe every {gop_s:.0f} s, no B-frames) + AAC, every
format on 127.0.0.1. Median of {trials} trial(s) per format (min..max in brackets),
remux. Times from the StartRelayStream call: when it answered, when WHEP first accepted
a viewer (polled every {retry_ms:.0f} ms), when the viewer decoded its first video frame.

```
{table(headers, lines)}
```

Reference, measured in the same run, in a thread of its own beside the relay's trials (it
starts while the server starts; ffmpeg mostly waits for its source): `ffmpeg -i URL
-map 0:v:0 -frames:v 1 -f rawvideo -pix_fmt yuv420p pipe:1` (ffmpeg's default probing),
timed from its start to the first byte on the pipe. The summary's ratio is the geometric
mean of the per-format ratios. RTMP and HLS are live: a reader joins at the next keyframe
(RTMP) or the playlist's live edge (HLS), so the clip's keyframe interval and segment
length are part of both sides' numbers.
"""
    return Figure(4, "Time to first frame per format", summary, ratio, TARGET, body, plots)


if __name__ == "__main__":
    run_alone(measure, __doc__.splitlines()[0])
