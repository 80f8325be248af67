"""Figure 1: CPU of one task, whole process tree, against the ffmpeg CLI doing its media work.

Run alone from the repository root::

    .venv/bin/python -m bench.cpu_per_task [--quick]

A real server relays a live RTMP source (``bench.live_relay``: 720p30 H.264 ~2.5 Mbit/s
+ AAC) to one WebRTC viewer that receives audio and video without decoding them. Over a
steady window, the task costs the CPU of the server (less what the same server used
while idle, measured just before the Start call) plus the CPU of the processes started
for the task (its media worker). The reference, measured over the same window on the
same live source, is ``bench.ffmpeg_work``: the ffmpeg CLI doing the same media work
into the null muxer. Remux, then (not in quick mode) transcode to 640x480@15, 800 kbit/s.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import CLIP, cpu_seconds, table
from bench.ffmpeg_work import ffmpeg_command, ffmpeg_doing
from bench.figure import Figure, run_alone
from bench.live_relay import REMUX, TRANSCODE, LiveRelay, TaskMode, live_relay

TARGETS = {REMUX.name: 1.5, TRANSCODE.name: 1.05}  # the issue's, as multiples of ffmpeg


@dataclass(frozen=True)
class Timing:
    idle_s: float  # the server alone, before the Start call
    settle_s: float  # after the viewer receives media, before the window opens
    window_s: float
    modes: tuple[TaskMode, ...]


QUICK = Timing(idle_s=0.5, settle_s=0.5, window_s=2.0, modes=(REMUX,))
FULL = Timing(idle_s=3.0, settle_s=3.0, window_s=20.0, modes=(REMUX, TRANSCODE))


@dataclass(frozen=True)
class Row:
    mode: TaskMode
    server_idle_pct: float
    server_pct: float  # over its idle
    task_pct: float  # the processes started for the task
    ffmpeg_pct: float
    video_fps: float  # at the viewer, over the window
    audio_fps: float

    @property
    def tree_pct(self) -> float:
        return self.server_pct + self.task_pct

    @property
    def ratio(self) -> float:
        return self.tree_pct / self.ffmpeg_pct

    @property
    def short(self) -> bool:
        """The viewer got under 95 % of the video frames the task should send."""
        return self.video_fps < 0.95 * (self.mode.frame_rate or CLIP.frame_rate)


async def measure_mode(relay: LiveRelay, mode: TaskMode, timing: Timing) -> Row:
    idle = relay.idle_cpu_pct(timing.idle_s)
    with ffmpeg_doing(relay.source_url, mode) as ffmpeg:
        async with (
            relay.task(f"cpu-{mode.name}", mode) as task,
            relay.viewers(task, 1),
        ):
            await asyncio.sleep(timing.settle_s)
            cpu_before, ffmpeg_before = relay.tree_cpu_s(), cpu_seconds(ffmpeg.pid)
            video_before, audio_before = relay.frames("video"), relay.frames("audio")
            started = time.monotonic()
            await asyncio.sleep(timing.window_s)
            cpu_after, ffmpeg_after = relay.tree_cpu_s(), cpu_seconds(ffmpeg.pid)
            video, audio = relay.frames("video"), relay.frames("audio")
            wall_s = time.monotonic() - started
    if cpu_before.keys() - cpu_after.keys():
        raise RuntimeError("a process of the server's tree ended in the window: its CPU is lost")
    # A process that started in the window spent all its CPU in it.
    used_pct = {
        pid: 100 * (used - cpu_before.get(pid, 0.0)) / wall_s for pid, used in cpu_after.items()
    }
    net_pct = {pid: pct - idle.get(pid, 0.0) for pid, pct in used_pct.items()}
    return Row(
        mode=mode,
        server_idle_pct=idle[relay.server_pid],
        server_pct=net_pct[relay.server_pid],
        task_pct=sum(pct for pid, pct in net_pct.items() if pid != relay.server_pid),
        ffmpeg_pct=100 * (ffmpeg_after - ffmpeg_before) / wall_s,
        video_fps=(video - video_before) / wall_s,
        audio_fps=(audio - audio_before) / wall_s,
    )


def measure(quick: bool, out_dir: Path) -> Figure:
    timing = QUICK if quick else FULL
    with live_relay() as relay:
        rows = [asyncio.run(measure_mode(relay, mode, timing)) for mode in timing.modes]
    plots = [] if quick else [plot(rows, out_dir / "cpu_per_task.png")]
    remux = rows[0]
    # A saturated machine drops frames, and a task that sends fewer costs less: say so.
    notes = [f"the {row.mode.name} viewer got {row.video_fps:.1f} fps" for row in rows if row.short]
    # The line ends with the remux ratio, the headline; the others come first.
    notes += [
        f"{row.mode.name} {row.tree_pct:.1f} % vs {row.ffmpeg_pct:.1f} % ({row.ratio:.2f}x)"
        for row in rows[1:]
    ]
    summary = (
        "CPU per task, whole tree with one viewer, against ffmpeg doing the same work: "
        + "".join(f"{note}; " for note in notes)
        + f"remux {remux.tree_pct:.1f} % (server {remux.server_pct:.1f} + worker "
        f"{remux.task_pct:.1f}) vs {remux.ffmpeg_pct:.1f} %: {remux.ratio:.2f}x"
    )
    target = ", ".join(f"{row.mode.name} <= {TARGETS[row.mode.name]}x ffmpeg" for row in rows)
    return Figure(
        number=1,
        title="CPU per task against the ffmpeg CLI",
        summary=summary,
        ratio=remux.ratio,
        target=target,
        body=body(rows, timing),
        plots=plots,
    )


def body(rows: list[Row], timing: Timing) -> str:
    headers = [
        "mode",
        "server %",
        "worker %",
        "whole tree %",
        "ffmpeg %",
        "tree / ffmpeg",
        "worker / ffmpeg",
        "target",
        "viewer fps video / audio",
    ]
    lines = [
        [
            row.mode.name,
            f"{row.server_pct:.1f}",
            f"{row.task_pct:.1f}",
            f"{row.tree_pct:.1f}",
            f"{row.ffmpeg_pct:.1f}",
            f"{row.ratio:.2f}x",
            f"{row.task_pct / row.ffmpeg_pct:.2f}x",
            f"<= {TARGETS[row.mode.name]}x",
            f"{row.video_fps:.1f} / {row.audio_fps:.1f}",
        ]
        for row in rows
    ]
    idle = ", ".join(f"{row.mode.name} {row.server_idle_pct:.2f} %" for row in rows)
    source = "rtmp://127.0.0.1:PORT/live/camera"
    commands = "\n".join(
        f"    {row.mode.name}: {' '.join(ffmpeg_command(source, row.mode))}" for row in rows
    )
    return (
        "A real server relays a live RTMP source (nginx-rtmp fed the 720p30 ~2.5 Mbit/s "
        "H.264 + AAC reference clip in real time) to one WebRTC viewer that receives audio "
        "and video without decoding them. **server %** is the server's CPU over the window "
        f"less its idle CPU measured just before the Start call ({idle}); **worker %** the "
        "processes the server started for the task. The reference, **ffmpeg %**, is the "
        "ffmpeg CLI reading the same live source over the same window, doing the same media "
        f"work into the null muxer. Steady window of {timing.window_s:.0f} s, "
        f"{timing.settle_s:.0f} s after the viewer received its first frames. "
        "Transcode: 640x480, 15 fps, Bitrate 800 kbit/s.\n\n"
        "```\n" + table(headers, lines) + "\n\nffmpeg reference commands:\n" + commands + "\n```\n"
    )


def plot(rows: list[Row], path: Path) -> Path:
    """Per mode: the task's CPU (server + worker, stacked) beside ffmpeg's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    names = [row.mode.name for row in rows]
    slots = range(len(rows))
    left = [i - 0.2 for i in slots]
    right = [i + 0.2 for i in slots]
    workers = [row.task_pct for row in rows]
    axes.bar(left, workers, width=0.4, label="worker")
    axes.bar(left, [row.server_pct for row in rows], width=0.4, bottom=workers, label="server")
    axes.bar(right, [row.ffmpeg_pct for row in rows], width=0.4, label="ffmpeg CLI (same run)")
    axes.set_xticks(list(slots), names)
    axes.set_ylabel("CPU % of one core")
    axes.set_title("One task with one viewer, 720p30 H.264 + AAC over RTMP")
    axes.grid(axis="y", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


if __name__ == "__main__":
    run_alone(measure, __doc__.splitlines()[0])
