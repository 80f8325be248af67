"""Figure 7: memory per task and per viewer, against the ffmpeg CLI doing a task's work.

Run alone from the repository root::

    .venv/bin/python -m bench.memory [--quick]

A real server relays a live RTMP source (``bench.live_relay``: 720p30 H.264 ~2.5 Mbit/s
+ AAC). Per task: a few remux tasks run at once; each worker's resident (RSS) and unique
(USS) memory, from ``/proc/PID/smaps_rollup``, and how much the server grew per task.
USS counts the pages no other process maps: with several workers running, as in
production, their libraries' pages are shared, so USS is what one more task costs.
Per viewer: viewers (receiving audio and video, not decoding) join the first task step
by step and the server's RSS is sampled at each step; one more viewer costs the growth
from the first viewer to the last, divided by the viewers added (the first one also
pays the server's one-off start of WebRTC: OpenSSL, SRTP, codec tables). The reference,
measured alongside on the same live source: the ffmpeg CLI doing the same media work
(``bench.ffmpeg_work``). Not in quick mode: a transcode task, against ffmpeg transcoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from dataclasses import dataclass
from pathlib import Path

from bench.common import Memory, descendants, memory, table
from bench.ffmpeg_work import ffmpeg_doing
from bench.figure import Figure, run_alone
from bench.live_relay import REMUX, TRANSCODE, LiveRelay, TaskMode, live_relay

TARGET_USS_MIB = 40.0


@dataclass(frozen=True)
class Timing:
    tasks: int  # remux tasks running at once
    viewer_steps: tuple[int, ...]  # viewers of the first task at each sample
    settle_s: float  # after a change, before memory is read
    modes: tuple[TaskMode, ...]


QUICK = Timing(tasks=2, viewer_steps=(1, 4), settle_s=0.5, modes=(REMUX,))
FULL = Timing(tasks=3, viewer_steps=(1, 2, 4, 8, 16), settle_s=2.0, modes=(REMUX, TRANSCODE))


@dataclass(frozen=True)
class TaskMemory:
    mode: TaskMode
    tasks: int
    worker: Memory  # mean over the tasks' workers
    # The server's other descendants (a fork server...): paid once, whatever the tasks.
    helpers: Memory
    helper_count: int
    server_growth_mib: float  # server RSS per task
    ffmpeg: Memory


@dataclass(frozen=True)
class ViewerMemory:
    server_rss_mib: list[tuple[int, float]]  # (viewers, server RSS), from 0 viewers

    @property
    def per_viewer_mib(self) -> float:
        (first, first_rss), (last, last_rss) = self.server_rss_mib[1], self.server_rss_mib[-1]
        return (last_rss - first_rss) / (last - first)


def is_worker(pid: int) -> bool:
    """A process the server started that started none of its own (a fork server, say,
    has its workers under it)."""
    return not descendants(pid)


def mean(memories: list[Memory]) -> Memory:
    return Memory(
        statistics.fmean(m.rss_mib for m in memories),
        statistics.fmean(m.uss_mib for m in memories),
    )


async def measure_tasks(
    relay: LiveRelay, mode: TaskMode, count: int, timing: Timing
) -> tuple[TaskMemory, ViewerMemory | None]:
    """``count`` tasks of ``mode`` at once; with viewers of the first one if remuxing."""
    relay.wait_until_quiet()
    server_before = memory(relay.server_pid).rss_mib
    tree_before = descendants(relay.server_pid)
    with ffmpeg_doing(relay.source_url, mode) as ffmpeg:
        async with contextlib.AsyncExitStack() as stack:
            # Started together: their workers start on both cores at once.
            tasks = await asyncio.gather(
                *(
                    stack.enter_async_context(relay.task(f"memory-{mode.name}-{i}", mode))
                    for i in range(count)
                )
            )
            await asyncio.sleep(timing.settle_s)
            server_rss = memory(relay.server_pid).rss_mib
            tree = descendants(relay.server_pid)
            workers = [memory(pid) for pid in tree - tree_before if is_worker(pid)]
            if len(workers) != count:
                raise RuntimeError(f"{len(workers)} workers for {count} {mode.name} tasks")
            helpers = [memory(pid) for pid in tree if not is_worker(pid)]
            task_memory = TaskMemory(
                mode=mode,
                tasks=count,
                worker=mean(workers),
                helpers=Memory(sum(m.rss_mib for m in helpers), sum(m.uss_mib for m in helpers)),
                helper_count=len(helpers),
                server_growth_mib=(server_rss - server_before) / count,
                ffmpeg=memory(ffmpeg.pid),
            )
            if mode.transcodes:
                return task_memory, None
            samples = [(0, server_rss)]
            for viewers in timing.viewer_steps:
                await stack.enter_async_context(relay.viewers(tasks[0], viewers - samples[-1][0]))
                await asyncio.sleep(timing.settle_s)
                samples.append((viewers, memory(relay.server_pid).rss_mib))
            return task_memory, ViewerMemory(samples)


def measure(quick: bool, out_dir: Path) -> Figure:
    timing = QUICK if quick else FULL
    rows: list[TaskMemory] = []
    viewers: ViewerMemory | None = None
    with live_relay() as relay:
        for mode in timing.modes:
            count = timing.tasks if mode == REMUX else 1
            row, seen = asyncio.run(measure_tasks(relay, mode, count, timing))
            rows.append(row)
            viewers = viewers or seen
    assert viewers is not None, "the remux tasks had viewers"
    remux = rows[0]
    ratio = remux.worker.rss_mib / remux.ffmpeg.rss_mib
    summary = (
        f"memory per remux task: worker {remux.worker.rss_mib:.0f} MiB RSS, "
        f"{remux.worker.uss_mib:.1f} MiB unique (target <= {TARGET_USS_MIB:.0f}), server "
        f"{remux.server_growth_mib:+.1f} MiB per task and {viewers.per_viewer_mib:+.2f} MiB "
        f"per viewer; ffmpeg doing the same work {remux.ffmpeg.rss_mib:.0f} MiB RSS, "
        f"{remux.ffmpeg.uss_mib:.1f} MiB unique: worker/ffmpeg RSS {ratio:.2f}x"
    )
    return Figure(
        number=7,
        title="Memory per task and per viewer",
        summary=summary,
        ratio=ratio,
        target=f"worker <= {TARGET_USS_MIB:.0f} MiB unique",
        body=body(rows, viewers, timing),
        plots=[] if quick else [plot(rows, viewers, out_dir / "memory.png")],
    )


def body(rows: list[TaskMemory], viewers: ViewerMemory, timing: Timing) -> str:
    task_lines = [
        [
            f"{row.mode.name} (x{row.tasks})",
            f"{row.worker.rss_mib:.1f}",
            f"{row.worker.uss_mib:.1f}",
            f"{row.server_growth_mib:+.1f}",
            f"{row.ffmpeg.rss_mib:.1f}",
            f"{row.ffmpeg.uss_mib:.1f}",
            f"{row.worker.rss_mib / row.ffmpeg.rss_mib:.2f}x",
            f"{row.worker.uss_mib / row.ffmpeg.uss_mib:.2f}x",
        ]
        for row in rows
    ]
    task_table = table(
        [
            "tasks",
            "worker RSS MiB",
            "worker USS MiB",
            "server MiB/task",
            "ffmpeg RSS MiB",
            "ffmpeg USS MiB",
            "RSS worker/ffmpeg",
            "USS worker/ffmpeg",
        ],
        task_lines,
    )
    helpers, helper_count = rows[0].helpers, rows[0].helper_count
    helpers_line = (
        f"the server's {helper_count} other process(es), paid once and not per task: "
        f"{helpers.rss_mib:.1f} MiB RSS, {helpers.uss_mib:.1f} MiB USS"
        if helper_count
        else "the server has no process besides its workers"
    )
    viewer_table = table(
        ["viewers of the first remux task", "server RSS MiB"],
        [[str(n), f"{rss:.1f}"] for n, rss in viewers.server_rss_mib],
    )
    return (
        "A real server relays a live RTMP source (720p30 ~2.5 Mbit/s H.264 + AAC). "
        f"{rows[0].tasks} remux tasks at once: each worker's resident (RSS) and unique "
        "(USS) memory from `/proc/PID/smaps_rollup`, the mean over the workers, and the "
        "server's RSS growth per task. USS counts the pages no other process maps: with "
        "several workers running their libraries' pages are shared, so USS is what one more "
        "task costs the machine. The reference, alongside on the same source: the ffmpeg "
        "CLI doing the same media work (the commands of figure 1; its libraries are shared "
        "with the ffmpeg that publishes the source). Then viewers (audio and video, not "
        "decoding) join the first task step by step; one more viewer costs the growth "
        "from the first viewer to the last divided by the viewers added: "
        f"**{viewers.per_viewer_mib:+.2f} MiB** (the first one also pays the server's "
        f"one-off start of WebRTC). Memory read {timing.settle_s:.1f} s after each change; "
        f"target: worker <= {TARGET_USS_MIB:.0f} MiB unique.\n\n"
        f"```\n{task_table}\n{helpers_line}\n\n{viewer_table}\n```\n"
    )


def plot(rows: list[TaskMemory], viewers: ViewerMemory, path: Path) -> Path:
    """Left: worker against ffmpeg, RSS and USS, per mode. Right: server RSS per viewer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (tasks, per_viewer) = plt.subplots(1, 2, figsize=(10, 4))
    slots = range(len(rows))
    bars = {
        "worker RSS": ([row.worker.rss_mib for row in rows], -0.3),
        "worker USS": ([row.worker.uss_mib for row in rows], -0.1),
        "ffmpeg RSS": ([row.ffmpeg.rss_mib for row in rows], 0.1),
        "ffmpeg USS": ([row.ffmpeg.uss_mib for row in rows], 0.3),
    }
    for label, (values, offset) in bars.items():
        tasks.bar([i + offset for i in slots], values, width=0.2, label=label)
    tasks.axhline(TARGET_USS_MIB, color="grey", linestyle="--", label="target, worker USS")
    tasks.set_xticks(list(slots), [row.mode.name for row in rows])
    tasks.set_ylabel("MiB")
    tasks.set_title("One task (720p30 over RTMP)")
    tasks.grid(axis="y", alpha=0.3)
    highest = max(max(values) for values, _ in bars.values())
    tasks.set_ylim(0, max(highest, TARGET_USS_MIB) * 1.5)  # room for the legend
    tasks.legend(fontsize="small", loc="upper left", ncol=2)
    counts = [n for n, _ in viewers.server_rss_mib]
    per_viewer.plot(counts, [rss for _, rss in viewers.server_rss_mib], marker="o")
    per_viewer.set_xlabel("viewers of one remux task")
    per_viewer.set_ylabel("server RSS, MiB")
    per_viewer.set_title("Server memory as viewers join")
    per_viewer.set_xticks(counts)
    per_viewer.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


if __name__ == "__main__":
    run_alone(measure, __doc__.splitlines()[0])
