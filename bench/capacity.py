"""Figure 3, capacity: how many remux relays one node carries, each with one viewer,
while every viewer still gets its frames on time.

Run from the repository root (``make bench-deps`` first, for the plot)::

    .venv/bin/python -m bench.capacity [--quick] [--out DIR]

One live RTMP source (nginx-rtmp on 127.0.0.1, the ffmpeg CLI publishing the clip in
real time; nginx fans it out), a real server, and remux relays of that source started
through the official SDK in steps (full run: 10, 20, ... 60; quick: 1, 2). Each relay
gets one WebRTC viewer that receives audio and video but does not decode video
(``bench.frame_clock``: decoding viewers would take the machine). After each step has
settled, a window measures the CPU of the server's whole process tree (server + workers)
and, per viewer, the video frames that arrived on time. The run stops at the first step
where a viewer got fewer than 95 % of its frames on time, or when its time is up.

Reference, measured in the same run: the ffmpeg CLI doing one relay's media work on the
same URL (``-c:v copy -c:a libopus``, null muxer) for one window; 2 cores divided by its
CPU is how many streams the ffmpeg floor would fit. That leaves out everything WebRTC
costs (packetizing, SRTP, the viewer's session), which ffmpeg never does: the ratio is
how close the node comes to a floor it cannot reach, not a like-for-like contest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import static_http_server
from tests.support.tasks import wait_for_status

from bench.common import CLIP, CLIP_VIDEO_KBPS, cpu_seconds, reap, reference_clip, stop, table
from bench.figure import Figure, run_alone
from bench.frame_clock import ViewerGroup, delivery
from bench.relays import (
    LIGHT_CLIP,
    Node,
    light_clip,
    live_rtmp_source,
    relay_ids,
    running_node,
)

ROOM = "capacity"
CORES = 2  # the target machine; the measured one is printed beside it
ON_TIME_SHARE = 0.95
LATE_S = 0.3  # behind schedule by more than this, a frame counts as late
VIEWERS_PER_GROUP = 20
TARGET = ">= 45 remux tasks with a non-decoding viewer each on 2 cores"


@dataclass(frozen=True)
class Settings:
    steps: tuple[int, ...]
    window_s: float
    settle_s: float
    budget_s: float  # no new step starts after this long
    # The 720p reference clip live over RTMP (nginx fans it out), or, where a run must be
    # short, the 360p clip as a file over HTTP from this process: a relay starts on it
    # in a fraction of a second, against 2 s or more on RTMP (the worker's probe).
    rtmp_720p: bool


FULL = Settings(
    (1, 5, 10, 20, 30, 40, 50, 60), window_s=10.0, settle_s=3.0, budget_s=200, rtmp_720p=True
)
QUICK = Settings((1, 2), window_s=1.5, settle_s=1.5, budget_s=20, rtmp_720p=False)


@dataclass(frozen=True)
class Source:
    url: str
    short: str  # for the summary line
    description: str
    live: bool  # else a file the relays loop and ffmpeg reads in real time (-re)


@contextmanager
def opened_source(work: Path, settings: Settings) -> Iterator[Source]:
    if settings.rtmp_720p:
        clip = reference_clip()[0]
        size = f"{CLIP.width}x{CLIP.height}@{CLIP.frame_rate} H.264 ~{CLIP_VIDEO_KBPS} kbit/s"
        with live_rtmp_source(work, clip) as url:
            description = f"{size} + AAC, one live RTMP stream fanned out by nginx-rtmp"
            yield Source(url, "720p30 2.5 Mbit/s RTMP", description, True)
    else:
        clip = light_clip()
        size = f"{LIGHT_CLIP.width}x{LIGHT_CLIP.height}@{LIGHT_CLIP.frame_rate} H.264"
        with static_http_server(clip.parent) as files:
            url = f"{files}/{clip.name}"
            description = f"{size} + AAC, an FLV file over HTTP, looped"
            yield Source(url, "360p30 FLV over HTTP", description, False)


@dataclass(frozen=True)
class Step:
    tasks: int
    tree_pct: float  # server + workers, % of one core
    viewers_pct: float  # the viewer processes (same machine, not the node's cost)
    worst_share: float  # the worst viewer's on-time share of the frames the source sent
    median_share: float
    received_min: int
    expected: int
    running: int  # tasks in status 2 (running) after the window

    @property
    def passed(self) -> bool:
        return self.running == self.tasks and self.worst_share >= ON_TIME_SHARE


def ffmpeg_remux(source: Source, seconds: float) -> subprocess.Popen[bytes]:
    """The ffmpeg CLI pulling the source for ``seconds`` doing a remux's media work (video
    copied to Annex B, AAC to Opus 48 kHz 64 kbit/s), in real time."""
    command = ["ffmpeg", "-nostdin", "-loglevel", "error", *([] if source.live else ["-re"])]
    command += ["-i", source.url, "-t", f"{seconds:.1f}"]
    command += ["-map", "0:v:0", "-c:v", "copy", "-bsf:v", "h264_mp4toannexb"]
    command += ["-map", "0:a:0", "-c:a", "libopus", "-ar", "48000", "-ac", "2", "-b:a", "64k"]
    command += ["-f", "null", "-"]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL)


def cpu_pct_of_life(process: subprocess.Popen[bytes], began: float, timeout_s: float) -> float:
    """CPU % of ``process`` over its whole life (``wait4``), once it has exited."""
    usage = reap(process, timeout_s)
    if usage.exit_code or usage.timed_out:
        raise RuntimeError(f"ffmpeg reference failed: exit {usage.exit_code}")
    return 100 * usage.cpu_s / (time.monotonic() - began)


def cpu_of(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


async def add_relays(node: Node, source: Source, first: int, last: int) -> list[str]:
    """Start relays ``first``..``last - 1`` and wait until each runs (or has ended)."""
    names = relay_ids(last)[first:]
    for name in names:
        await node.start(ROOM, name, source.url, {} if source.live else {"Loop": True})
    for name in names:
        with contextlib.suppress(AssertionError):  # it ended: not_running says why
            await wait_for_status(node.rtc, ROOM, name, 2, timeout_s=60)
    return [node.whep_url(ROOM, name) for name in names]


def stopped(count: int, ended: list[str]) -> str:
    if not ended:
        return f"a viewer got under {ON_TIME_SHARE:.0%} of its frames on time at {count} tasks"
    shown = "; ".join(ended[:3]) + ("; ..." if len(ended) > 3 else "")
    return f"at {count} tasks, {len(ended)} relay(s) ended on their own: {shown}"


def run_steps(
    node: Node, source: Source, settings: Settings, groups: list[ViewerGroup]
) -> tuple[list[Step], str]:
    """The steps measured, and why the run stopped early if it did."""
    token = node.subscribe_token(ROOM)
    steps: list[Step] = []
    began = time.monotonic()
    running = 0
    for count in settings.steps:
        if steps and time.monotonic() - began > settings.budget_s:
            break
        urls = asyncio.run(add_relays(node, source, running, count))
        running = count
        if ended := asyncio.run(node.not_running(ROOM, relay_ids(count))):
            return steps, stopped(count, ended)
        while urls:
            if groups[-1].size >= VIEWERS_PER_GROUP:
                groups.append(ViewerGroup())
            room = VIEWERS_PER_GROUP - groups[-1].size
            groups[-1].add(urls[:room], token)
            urls = urls[room:]
        time.sleep(settings.settle_s)
        viewer_pids = [g.pid for g in groups]
        tree_before, viewers_before = node.tree_cpu_seconds(), cpu_of(viewer_pids)
        start = time.monotonic()
        time.sleep(settings.window_s)
        end = time.monotonic()
        tree_cpu, viewers_cpu = node.tree_cpu_seconds(), cpu_of(viewer_pids)
        seen = [
            delivery(arrivals, start, end, CLIP.frame_rate, LATE_S)
            for group in groups
            for arrivals in group.arrivals()
        ]
        if len(seen) != count:
            raise RuntimeError(f"{len(seen)} viewers receive video, expected {count}")
        ended = asyncio.run(node.not_running(ROOM, relay_ids(count)))
        shares = sorted(d.share for d in seen)
        steps.append(
            Step(
                tasks=count,
                tree_pct=100 * (tree_cpu - tree_before) / (end - start),
                viewers_pct=100 * (viewers_cpu - viewers_before) / (end - start),
                worst_share=shares[0],
                median_share=shares[len(shares) // 2],
                received_min=min(d.received for d in seen),
                expected=seen[0].expected,
                running=count - len(ended),
            )
        )
        if ended or not steps[-1].passed:
            return steps, stopped(count, ended)
    return steps, ""


def plot(steps: list[Step], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, cpu_axes = plt.subplots(figsize=(7, 4))
    tasks = [s.tasks for s in steps]
    cpu_axes.plot(tasks, [s.tree_pct for s in steps], marker="o", label="server + workers CPU")
    cpu_axes.axhline(100 * CORES, color="grey", linestyle=":", label=f"{CORES} cores")
    cpu_axes.set_xlabel("remux tasks, one non-decoding viewer each")
    cpu_axes.set_ylabel("CPU % of one core")
    cpu_axes.set_xticks(tasks)
    share_axes = cpu_axes.twinx()
    share_axes.plot(
        tasks, [100 * s.worst_share for s in steps], marker="s", color="tab:red", label="worst"
    )
    share_axes.axhline(100 * ON_TIME_SHARE, color="tab:red", linestyle="--", linewidth=0.8)
    share_axes.set_ylabel("frames on time, worst viewer %")
    share_axes.set_ylim(0, 105)
    lines = cpu_axes.get_legend_handles_labels()
    more = share_axes.get_legend_handles_labels()
    cpu_axes.legend(lines[0] + more[0], lines[1] + [f"{more[1][0]} viewer on time"], loc="best")
    cpu_axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def measure(quick: bool, out_dir: Path) -> Figure:
    settings = QUICK if quick else FULL
    groups = [ViewerGroup()]  # starts importing while the server does
    try:
        with (
            tempfile.TemporaryDirectory(prefix="relaystream-bench-") as work,
            opened_source(Path(work), settings) as media,
        ):
            # The reference runs while the server starts (CPU time hardly depends on what
            # else runs), so that a quick run need not wait for it.
            began = time.monotonic()
            reference = ffmpeg_remux(media, settings.window_s)
            try:
                with running_node(Path(work)) as node:
                    reference_pct = cpu_pct_of_life(reference, began, settings.window_s + 30)
                    steps, stop_note = run_steps(node, media, settings, groups)
            finally:
                stop(reference)
    finally:
        for group in groups:
            group.close()
    passed = [s for s in steps if s.passed]
    capacity = passed[-1].tasks if passed else 0
    at_least = "" if stop_note else ">= "
    ffmpeg_fits = 100 * CORES / reference_pct
    ratio = capacity / ffmpeg_fits
    per_task = steps[-1].tree_pct / steps[-1].tasks if steps else 0.0
    projected = f"~{100 * CORES / per_task:.0f}" if per_task else "-"
    at = f"at {steps[-1].tasks}" if steps else "no step measured"
    summary = (
        f"capacity: {at_least}{capacity} remux tasks, each viewer >= {ON_TIME_SHARE:.0%} frames "
        f"on time ({media.short}; {per_task:.1f} % of a core per task {at}, {projected} by CPU) vs "
        f"{ffmpeg_fits:.0f} at the ffmpeg CLI's {reference_pct:.1f} %/stream: "
        f"{at_least}{ratio:.2f}x"
    )
    rows = [
        [
            str(s.tasks),
            f"{s.tree_pct:.0f}",
            f"{s.tree_pct / s.tasks:.1f}",
            f"{100 * s.worst_share:.1f}",
            f"{100 * s.median_share:.1f}",
            f"{s.received_min}/{s.expected}",
            f"{s.viewers_pct:.0f}",
            str(s.running),
            "yes" if s.passed else "NO",
        ]
        for s in steps
    ]
    headers = [
        "tasks",
        "tree CPU %",
        "per task %",
        "worst on time %",
        "median on time %",
        "min frames",
        "viewers' CPU %",
        "running",
        "pass",
    ]
    plots = [out_dir / "capacity.png"] if steps and not quick else []
    for path in plots:
        plot(steps, path)
    ending = (
        f"The run stopped: {stop_note}. The node carries {capacity}"
        if stop_note
        else f"No step failed: the node carries at least {capacity}"
    )
    body = f"""Source: {media.description}, on 127.0.0.1. Remux relays started
through the SDK in steps, each with one WebRTC viewer that receives audio and video and
reassembles video frames without decoding them.
Window {settings.window_s:g} s per step after {settings.settle_s:.1f} s of settling. A frame is on
time if it is no more than {1000 * LATE_S:.0f} ms behind its RTP schedule (anchored at the least
delayed frame of the 2 s before it: a stall or a backlog is late, a steady delay is not);
on time % = on-time frames / the frames the source sent over the media time received (a
lost frame is a gap); min frames = the fewest any viewer received / what {CLIP.frame_rate} fps
make in the window. Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.

```
{table(headers, rows)}
```

{ending} (target {TARGET}); at the last step's CPU per task, {CORES} cores would hold
{projected}. Tree CPU = server + workers, whole process tree; the
viewers run on the same cores, in their own processes, and are not counted.

Reference, in the same run: the ffmpeg CLI pulling the same RTMP URL and doing one
relay's media work (`-c:v copy -bsf:v h264_mp4toannexb -c:a libopus -ar 48000 -ac 2 -b:a
64k -f null`) used {reference_pct:.1f} % of a core over its whole life; {CORES} cores hold
{ffmpeg_fits:.0f} such streams. Ratio = tasks carried / that: {ratio:.2f}x. ffmpeg does no
WebRTC (no packetizing, SRTP or viewer session), so this is a floor, not a contest.
"""
    title = "Capacity: remux tasks with one viewer each"
    return Figure(3, title, summary, ratio, TARGET, body, plots)


if __name__ == "__main__":
    run_alone(measure, __doc__.splitlines()[0])
