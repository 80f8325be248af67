"""Soak: relays with viewers joining and leaving for a long time; does anything grow?

Run from the repository root (``make bench-deps`` first, for matplotlib)::

    .venv/bin/python -m bench.soak                    # one hour
    .venv/bin/python -m bench.soak --duration-s 300   # a quick look

Everything on 127.0.0.1: nginx-rtmp fed by one ``ffmpeg -re -stream_loop -1 -c copy``
(a live source that never ends), a real relaystream server (``tests.support.server``),
``--relays`` remux relays of that stream, each in its own room, and in this process
aiortc viewers (``tests.support.viewer.WhepViewer``) that keep coming and going: up to
``--viewers`` per relay at once, each watching for a random 1-8 s and leaving.

Every ``--sample-s`` it records the RSS and open file descriptors of the server and of
its media workers (every process under the server: the fork server too), with the
sessions so far, into ``soak.csv``; at the end it plots them into ``soak.png`` and
prints the growth over the second half of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from tests.support.rtmp import nginx_rtmp_server, rtmp_publisher
from tests.support.sdk import RtcService
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, RelayServer, start_server
from tests.support.tasks import running_relay
from tests.support.viewer import WhepViewer

from bench.common import CACHE_DIR, descendants, exit_on_sigterm
from relaystream.media.testsrc import ClipSpec, make_test_clip

SOURCE = ClipSpec(duration_s=10.0, width=640, height=360, frame_rate=25, keyframe_interval_s=1.0)
SOURCE_NAME = "soak-360p25-10s.flv"
SESSION_S = (1.0, 8.0)
SERVER_CONFIG = """
[rtc]
connect_timeout_s = 10
"""


@dataclass
class Sample:
    elapsed_s: float
    server_rss_mib: float
    server_fds: int
    workers: int
    workers_rss_mib: float
    workers_fds: int
    viewers_now: int
    sessions_done: int
    sessions_failed: int


def resident_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Churn:
    viewers_now: int = 0
    done: int = 0
    failed: int = 0


async def viewer_churn(
    whep_url: str, token: str, churn: Churn, stop: asyncio.Event, rng: random.Random
) -> None:
    """One viewer slot: join, watch a while, leave, again, until ``stop``."""
    while not stop.is_set():
        viewer = WhepViewer(whep_url, token)
        churn.viewers_now += 1
        try:
            await viewer.connect()
            await viewer.wait_for_media("video", 0.0, timeout_s=20)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), rng.uniform(*SESSION_S))
            churn.done += 1
        except Exception:
            churn.failed += 1
        finally:
            churn.viewers_now -= 1
            with contextlib.suppress(Exception):
                await viewer.close()


def sample(server: RelayServer, churn: Churn, started: float) -> Sample:
    # Every process under the server: the fork server and the workers it forked.
    workers = descendants(server.process.pid)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    return Sample(
        elapsed_s=round(time.monotonic() - started, 1),
        server_rss_mib=round(resident_mib(server.process.pid), 1),
        server_fds=open_fds(server.process.pid),
        workers=len(alive),
        workers_rss_mib=round(sum(resident_mib(pid) for pid in alive), 1),
        workers_fds=sum(open_fds(pid) for pid in alive),
        viewers_now=churn.viewers_now,
        sessions_done=churn.done,
        sessions_failed=churn.failed,
    )


async def soak(args: argparse.Namespace, server: RelayServer, source_url: str) -> list[Sample]:
    rtc = RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    rng = random.Random(args.seed)
    churn = Churn()
    stop = asyncio.Event()
    samples: list[Sample] = []
    async with contextlib.AsyncExitStack() as relays:
        urls = [
            await relays.enter_async_context(
                running_relay(rtc, server, source_url, f"soak-{index}")
            )
            for index in range(args.relays)
        ]
        slots = [
            asyncio.create_task(
                viewer_churn(url, server.subscribe_token(f"soak-{index}"), churn, stop, rng)
            )
            for index, url in enumerate(urls)
            for _ in range(args.viewers)
        ]
        started = time.monotonic()
        try:
            while time.monotonic() - started < args.duration_s:
                samples.append(sample(server, churn, started))
                last = samples[-1]
                print(
                    f"{last.elapsed_s:7.0f} s  server {last.server_rss_mib:6.1f} MiB "
                    f"{last.server_fds:4d} fds  workers({last.workers}) "
                    f"{last.workers_rss_mib:6.1f} MiB {last.workers_fds:4d} fds  "
                    f"sessions {last.sessions_done} (+{last.sessions_failed} failed)",
                    flush=True,
                )
                await asyncio.sleep(args.sample_s)
        finally:
            stop.set()
            await asyncio.gather(*slots, return_exceptions=True)
    return samples


def write_csv(samples: list[Sample], path: Path) -> None:
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=[f.name for f in fields(Sample)])
        writer.writeheader()
        writer.writerows(asdict(s) for s in samples)


def plot(samples: list[Sample], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.elapsed_s / 60 for s in samples]
    figure, (memory, descriptors) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    memory.plot(minutes, [s.server_rss_mib for s in samples], label="server")
    memory.plot(minutes, [s.workers_rss_mib for s in samples], label="workers (sum)")
    memory.set_ylabel("RSS (MiB)")
    memory.set_ylim(bottom=0)
    memory.legend(loc="lower right")
    memory.grid(alpha=0.3)
    sessions = memory.twinx()
    sessions.plot(minutes, [s.sessions_done for s in samples], color="grey", linestyle=":")
    sessions.set_ylabel("viewer sessions so far (dotted)")
    descriptors.plot(minutes, [s.server_fds for s in samples], label="server")
    descriptors.plot(minutes, [s.workers_fds for s in samples], label="workers (sum)")
    descriptors.set_ylabel("open fds")
    descriptors.set_xlabel("minutes")
    descriptors.set_ylim(bottom=0)
    descriptors.legend(loc="lower right")
    descriptors.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def growth_per_hour(samples: list[Sample], value: str) -> float:
    """Least-squares slope of ``value`` over the second half of the run, per hour."""
    half = samples[len(samples) // 2 :]
    if len(half) < 2:
        return 0.0
    xs = [s.elapsed_s / 3600 for s in half]
    ys = [float(getattr(s, value)) for s in half]
    return statistics.linear_regression(xs, ys).slope


def source_clip() -> Path:
    clip = CACHE_DIR / SOURCE_NAME
    if not clip.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        make_test_clip(CACHE_DIR / f"partial-{SOURCE_NAME}", SOURCE).replace(clip)
    return clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=3600.0)
    parser.add_argument("--relays", type=int, default=2)
    parser.add_argument("--viewers", type=int, default=3, help="at once, per relay")
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    exit_on_sigterm()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="relaystream-soak-") as work:
        workdir = Path(work)
        with (
            nginx_rtmp_server(workdir / "nginx") as rtmp_base,
            rtmp_publisher(source_clip(), f"{rtmp_base}/soak"),
        ):
            server = start_server(workdir / "server", extra_config=SERVER_CONFIG)
            try:
                samples = asyncio.run(soak(args, server, f"{rtmp_base}/soak"))
            finally:
                server.stop()
    write_csv(samples, args.out / "soak.csv")
    title = (
        f"{args.relays} remux relays (640x360@25), up to {args.viewers} viewers each "
        f"joining and leaving; {samples[-1].elapsed_s / 60:.0f} min, "
        f"{samples[-1].sessions_done} sessions"
    )
    plot(samples, args.out / "soak.png", title)
    first, last = samples[0], samples[-1]
    print(f"\nwrote {args.out / 'soak.csv'} and {args.out / 'soak.png'}")
    for label, value in [
        ("server RSS MiB", "server_rss_mib"),
        ("server fds", "server_fds"),
        ("workers RSS MiB", "workers_rss_mib"),
        ("workers fds", "workers_fds"),
    ]:
        print(
            f"{label:16} start {getattr(first, value):7} end {getattr(last, value):7}  "
            f"second-half slope {growth_per_hour(samples, value):+.1f}/h"
        )
    print(f"sessions: {last.sessions_done} done, {last.sessions_failed} failed")


if __name__ == "__main__":
    main()
