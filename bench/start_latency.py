"""How long a StartRelayStream takes for one AppId while another bursts, over many tasks.

Run from the repository root::

    .venv/bin/python -m bench.start_latency

A real server (``relaystream serve``, SQLite in a temporary data dir) is loaded with
3,000 scheduled tasks of a LOAD app. Then, from a process of its own, a BURST app sends
Starts as fast as 64 connections allow, while this process sends one Start at a time,
every 20 ms, for a QUIET app, and times each. The same QUIET series runs once before
the burst as the baseline. Every Start is signed (V4) like the SDK's; all tasks are
scheduled a day ahead, so no media worker starts and only the control path is timed.
Every AppId's qps_limit is raised out of the way: the point is the Start path itself.

Prints p50/p99 of the QUIET Starts with and without the burst (the target: p99 under
50 ms during the burst), and the burst's own rate. Takes about half a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.synchronize
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from tests.support.server import RelayServer, serve

from bench.common import cpu_seconds
from relaystream.api.signature import sign_request
from relaystream.rtc.token import Privilege, generate_token

ACCESS_KEY_ID = "AKLTbenchaccesskey"
SECRET_ACCESS_KEY = "YmVuY2gtc2VjcmV0"
APP_KEY = "0123456789abcdef0123456789abcdef"
LOAD_APP = "111111111111111111111111"
BURST_APP = "222222222222222222222222"
QUIET_APP = "333333333333333333333333"
QUERY = {"Action": "StartRelayStream", "Version": "2023-11-01"}
LATER = int(time.time()) + 24 * 3600

CONFIG = f"""
region = "cn-north-1"

[[access_keys]]
id = "{ACCESS_KEY_ID}"
secret = "{SECRET_ACCESS_KEY}"
apps = ["{LOAD_APP}", "{BURST_APP}", "{QUIET_APP}"]
""" + "".join(
    f"""
[[apps]]
app_id = "{app_id}"
app_key = "{APP_KEY}"
qps_limit = 1000000
"""
    for app_id in (LOAD_APP, BURST_APP, QUIET_APP)
)


class StartClient:
    """Signed Starts of scheduled tasks over one aiohttp session."""

    def __init__(self, host: str, session: aiohttp.ClientSession) -> None:
        self._host = host
        self._session = session

    async def start(self, app_id: str, room_id: str, task_id: str) -> float:
        """Start one scheduled task; returns the seconds it took."""
        user_id = f"u-{task_id}"
        body = json.dumps(
            {
                "AppId": app_id,
                "RoomId": room_id,
                "TaskId": task_id,
                "UserId": user_id,
                "Token": generate_token(
                    app_id=app_id,
                    app_key=APP_KEY,
                    room_id=room_id,
                    user_id=user_id,
                    privileges=[Privilege.PUBLISH_STREAM],
                ),
                "Control": {
                    # Scheduled a day ahead: never fetched (.invalid never resolves anyway).
                    "StreamUrl": "http://source.invalid/never.flv",
                    "StreamMode": 1,
                    "StartTimeStamp": LATER,
                },
            }
        ).encode()
        headers = sign_request(
            method="POST",
            host=self._host,
            path="/",
            query=QUERY,
            headers={"Content-Type": "application/json"},
            body=body,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
            region="cn-north-1",
        )
        url = f"http://{self._host}/?{urlencode(QUERY)}"
        began = time.perf_counter()
        async with self._session.post(url, data=body, headers=headers) as response:
            answer = await response.json()
        took = time.perf_counter() - began
        if answer.get("Result") != "ok":
            raise RuntimeError(f"{app_id}/{room_id}/{task_id} not started: {answer}")
        return took


async def load(host: str, count: int, concurrency: int = 32) -> float:
    """Start ``count`` scheduled tasks of LOAD_APP; returns the seconds it took."""
    names = iter(range(count))
    began = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        client = StartClient(host, session)

        async def lane() -> None:
            for n in names:
                await client.start(LOAD_APP, f"room-{n // 100}", f"load-{n}")

        await asyncio.gather(*(lane() for _ in range(concurrency)))
    return time.perf_counter() - began


async def quiet_series(host: str, label: str, samples: int, interval_s: float) -> list[float]:
    """One Start at a time for QUIET_APP, every ``interval_s``; the latencies."""
    latencies = []
    async with aiohttp.ClientSession() as session:
        client = StartClient(host, session)
        for n in range(samples):
            latencies.append(await client.start(QUIET_APP, "quiet", f"{label}-{n}"))
            await asyncio.sleep(interval_s)
    return latencies


@dataclass(frozen=True)
class BurstReport:
    starts: int
    seconds: float
    latencies_s: list[float]


def burst_process(
    host: str,
    concurrency: int,
    max_starts: int,
    running: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
    results: multiprocessing.Queue[BurstReport],
) -> None:
    """BURST_APP Starts from ``concurrency`` connections until ``stop`` (at most
    ``max_starts``)."""

    async def burst() -> BurstReport:
        latencies: list[float] = []
        names = iter(range(max_starts))
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency)
        ) as session:
            client = StartClient(host, session)

            async def lane() -> None:
                for n in names:
                    if stop.is_set():
                        return
                    latencies.append(await client.start(BURST_APP, f"burst-{n % 50}", f"burst-{n}"))
                    running.set()

            began = time.perf_counter()
            await asyncio.gather(*(lane() for _ in range(concurrency)))
            return BurstReport(len(latencies), time.perf_counter() - began, latencies)

    results.put(asyncio.run(burst()))


def percentile_ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(label: str, values: list[float]) -> str:
    p50, p99 = percentile_ms(values, 0.5), percentile_ms(values, 0.99)
    return f"{label:<34} {len(values):>7} {p50:>9.1f} {p99:>9.1f} {1000 * max(values):>9.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheduled", type=int, default=3000)
    parser.add_argument("--burst-concurrency", type=int, default=64)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="relaystream-bench-") as work:
        workdir = Path(work)
        config = workdir / "relaystream.toml"
        config.write_text(CONFIG)
        server: RelayServer = serve(workdir, config)
        try:
            loaded_s = asyncio.run(load(server.host, args.scheduled))
            print(f"loaded {args.scheduled} scheduled tasks in {loaded_s:.1f} s")
            baseline = asyncio.run(quiet_series(server.host, "idle", args.samples, 0.02))

            spawn = multiprocessing.get_context("spawn")
            running, stop = spawn.Event(), spawn.Event()
            results: multiprocessing.Queue[BurstReport] = spawn.Queue()
            burster = spawn.Process(
                target=burst_process,
                args=(server.host, args.burst_concurrency, 50_000, running, stop, results),
            )
            cpu_before = cpu_seconds(server.process.pid)
            burster.start()
            try:
                if not running.wait(60):
                    raise RuntimeError("the burst never got going")
                during = asyncio.run(quiet_series(server.host, "burst", args.samples, 0.02))
            finally:
                stop.set()
                report = results.get(timeout=120)
                burster.join(30)
                if burster.is_alive():
                    burster.kill()
            # Over the whole burst, the QUIET series included: what one Start costs.
            busy_cpu_s = cpu_seconds(server.process.pid) - cpu_before
        finally:
            server.stop()

    load_1min = os.getloadavg()[0]
    print(f"\nmachine load average (1 min) at the end: {load_1min:.1f} on {os.cpu_count()} cores")
    print(f"{'Start latency (ms)':<34} {'starts':>7} {'p50':>9} {'p99':>9} {'max':>9}")
    print(row("QUIET app, no burst", baseline))
    print(row("QUIET app, during the burst", during))
    print(row("BURST app (its own Starts)", report.latencies_s))
    print(
        f"\nburst: {report.starts} Starts in {report.seconds:.1f} s "
        f"({report.starts / report.seconds:.0f}/s from {args.burst_concurrency} connections), "
        f"over {args.scheduled} scheduled tasks"
    )
    cpu_per_start_ms = 1000 * busy_cpu_s / (report.starts + len(during))
    print(f"server CPU per Start during the burst: {cpu_per_start_ms:.2f} ms")
    p99 = percentile_ms(during, 0.99)
    verdict = "meets" if p99 < 50 else "MISSES"
    print(f"QUIET p99 during the burst: {p99:.1f} ms, {verdict} the 50 ms target")
    slowdown = statistics.median(during) / statistics.median(baseline)
    print(f"QUIET median during the burst: x{slowdown:.2f} its idle median")


if __name__ == "__main__":
    main()
