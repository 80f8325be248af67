"""Figure 8: how long a media worker takes to start, and its unique memory, fork vs spawn.

Run from the repository root::

    .venv/bin/python -m bench.worker_start [--quick]

In one run, workers are started alternately by the fork server (``[media] worker_start
= "fork"``) and spawned (``"spawn"``), through the server's own handle (``MediaWorker``),
each relaying a small clip served over HTTP on 127.0.0.1 (remux, AAC → Opus):

- start time: from asking for a worker (``MediaWorker.start()``) to its first message,
  given a source whose connection is refused at once (a closed port on 127.0.0.1): the
  ``SourceFailed`` comes as soon as the worker runs and has read its spec, so this is
  the cost of starting a worker and nothing else;
- first media message: the same, to the ``SourceOpened`` of the clip (opening and
  probing the source is the same work for both kinds);
- unique memory: the worker's USS (``Private_Clean + Private_Dirty`` of
  ``/proc/PID/smaps_rollup``) once it has relayed a few frames: what each extra task costs,
  pages shared with the fork server (or anyone) left out. The fork server's own USS is
  paid once per relaystream server and shown apart.

The ratio is fork / spawn start time (medians). The target: a worker starts in under
150 ms and holds at most 40 MB of unique memory.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from tests.support.net import static_http_server

from bench.common import table
from bench.figure import Figure, run_alone
from relaystream.media.launcher import ForkLauncher, SpawnLauncher, WorkerLauncher, WorkerStart
from relaystream.media.process import MediaWorker
from relaystream.media.spec import PipelineSpec, StreamMode
from relaystream.media.testsrc import ClipSpec, make_test_clip
from relaystream.media.wire import EncodedPacket, MessageKind

NUMBER = 8
TITLE = "Worker start time and unique memory"
TARGET = "< 150 ms to start, <= 40 MB unique memory"
CLIP = ClipSpec(width=640, height=360, frame_rate=30)


@dataclass(frozen=True)
class Plan:
    rounds: int  # start times per kind, alternating
    memory_rounds: int  # of which this many also relay the clip (SourceOpened, USS)
    frames_before_memory: int  # video frames relayed before the USS is read
    clip_s: float  # long enough for those frames, short to make


QUICK = Plan(rounds=4, memory_rounds=1, frames_before_memory=10, clip_s=1.5)
FULL = Plan(rounds=12, memory_rounds=12, frames_before_memory=60, clip_s=4.0)


@dataclass
class Samples:
    start_ms: list[float]
    opened_ms: list[float]
    uss_mb: list[float]


def unique_memory_mb(pid: int) -> float:
    """USS: the pages only this process holds (Private_Clean + Private_Dirty)."""
    private_kb = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("Private_Clean", "Private_Dirty"):
            private_kb += int(value.split()[0])
    return private_kb * 1024 / 1_000_000


def refused_url() -> str:
    """A URL on 127.0.0.1 whose connection is refused: a port just bound and let go."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/none.mp4"


async def time_to_first_message_ms(spec: PipelineSpec, launcher: WorkerLauncher) -> float:
    worker = MediaWorker(spec, launcher=launcher)
    asked_at = time.perf_counter()
    await worker.start()
    try:
        async for _ in worker.messages():
            return (time.perf_counter() - asked_at) * 1000
        raise RuntimeError("the worker said nothing")
    finally:
        await worker.stop()


async def one_worker(
    spec: PipelineSpec, launcher: WorkerLauncher, plan: Plan
) -> tuple[float, float]:
    """(ms from asking to the first message, USS in MB after a few frames)."""
    worker = MediaWorker(spec, launcher=launcher)
    asked_at = time.perf_counter()
    await worker.start()
    try:
        start_ms: float | None = None
        frames = 0
        async for message in worker.messages():
            if start_ms is None:
                start_ms = (time.perf_counter() - asked_at) * 1000
            if isinstance(message, EncodedPacket) and message.kind is MessageKind.VIDEO:
                frames += 1
                if frames == plan.frames_before_memory:
                    assert worker.pid is not None
                    return start_ms, unique_memory_mb(worker.pid)
        raise RuntimeError(f"the worker ended after {frames} frames: {message}")
    finally:
        await worker.stop()


async def compare(url: str, plan: Plan) -> tuple[dict[WorkerStart, Samples], float]:
    """Samples per kind, and the fork server's own USS in MB."""
    spec = PipelineSpec(url=url, stream_mode=StreamMode.REMUX, allow_private_sources=True)
    refused = PipelineSpec(url=refused_url(), allow_private_sources=True)
    fork = ForkLauncher()
    await fork.prepare()
    launchers: dict[WorkerStart, WorkerLauncher] = {
        WorkerStart.FORK: fork,
        WorkerStart.SPAWN: SpawnLauncher(),
    }
    samples = {kind: Samples([], [], []) for kind in launchers}
    try:
        assert fork.fork_server_pid is not None, "the fork server did not start"
        fork_server_mb = unique_memory_mb(fork.fork_server_pid)
        for round_number in range(plan.rounds):
            for kind, launcher in launchers.items():
                samples[kind].start_ms.append(await time_to_first_message_ms(refused, launcher))
                if round_number >= plan.memory_rounds:
                    continue
                opened_ms, uss_mb = await one_worker(spec, launcher, plan)
                samples[kind].opened_ms.append(opened_ms)
                samples[kind].uss_mb.append(uss_mb)
    finally:
        await fork.close()
    return samples, fork_server_mb


def plot(samples: dict[WorkerStart, Samples], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(samples)
    figure, (start_axis, memory_axis) = plt.subplots(1, 2, figsize=(8, 3.5))
    start_axis.boxplot([samples[k].start_ms for k in kinds], tick_labels=[str(k) for k in kinds])
    start_axis.axhline(150, color="grey", linestyle="--", label="target")
    start_axis.set_ylabel("ms, asking → first message (source refused)")
    start_axis.legend()
    memory_axis.boxplot([samples[k].uss_mb for k in kinds], tick_labels=[str(k) for k in kinds])
    memory_axis.axhline(40, color="grey", linestyle="--", label="target")
    memory_axis.set_ylabel("MB unique (USS)")
    memory_axis.legend()
    figure.suptitle(TITLE)
    figure.tight_layout()
    path = out_dir / "worker_start.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def measure(quick: bool, out_dir: Path) -> Figure:
    plan = QUICK if quick else FULL
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as work:
        make_test_clip(Path(work) / "clip.mp4", replace(CLIP, duration_s=plan.clip_s))
        with static_http_server(Path(work)) as base_url:
            samples, fork_server_mb = asyncio.run(compare(f"{base_url}/clip.mp4", plan))
    fork, spawn = samples[WorkerStart.FORK], samples[WorkerStart.SPAWN]
    fork_ms, spawn_ms = statistics.median(fork.start_ms), statistics.median(spawn.start_ms)
    fork_mb, spawn_mb = statistics.median(fork.uss_mb), statistics.median(spawn.uss_mb)
    ratio = fork_ms / spawn_ms
    summary = (
        f"worker start (ask -> first message) fork {fork_ms:.0f} ms vs spawn {spawn_ms:.0f} ms, "
        f"unique memory fork {fork_mb:.1f} MB vs spawn {spawn_mb:.1f} MB "
        f"(fork server {fork_server_mb:.1f} MB once): {ratio:.2f}x"
    )
    headers = ["start", "start ms", "max", "to SourceOpened ms", "max", "USS MB", "max"]
    rows = [
        [
            str(kind),
            f"{statistics.median(s.start_ms):.0f}",
            f"{max(s.start_ms):.0f}",
            f"{statistics.median(s.opened_ms):.0f}",
            f"{max(s.opened_ms):.0f}",
            f"{statistics.median(s.uss_mb):.1f}",
            f"{max(s.uss_mb):.1f}",
        ]
        for kind, s in samples.items()
    ]
    body = (
        table(headers, rows)
        + f"\n\nMedians and maxima over workers of each kind, alternating: {plan.rounds} "
        "started with a source refused at once, timed to their first message (start); "
        f"{plan.memory_rounds} relaying a {CLIP.width}x{CLIP.height} H.264 + AAC clip over "
        "HTTP on 127.0.0.1, timed to SourceOpened (opening and probing the clip is the same "
        "work for both), their USS read once they have relayed "
        f"{plan.frames_before_memory} video frames (remux, AAC → Opus). The fork server "
        f"itself holds {fork_server_mb:.1f} MB of unique memory, once per server.\n"
    )
    plots = [] if quick else [plot(samples, out_dir)]
    return Figure(NUMBER, TITLE, summary, ratio, TARGET, body, plots)


if __name__ == "__main__":
    run_alone(measure, __doc__.splitlines()[0])
