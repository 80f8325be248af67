"""Figure 6, the API under load: p50/p99 of signed Start/Get/StopRelayStream calls
at 150 per second, and the most calls per second the node sustains, with the node idle
and while it runs relays.

Run from the repository root (``make bench-deps`` first, for the plot)::

    .venv/bin/python -m bench.api_load [--quick] [--out DIR]

A real server (SQLite in a temporary data dir). Every call is signed (V4) exactly as the
SDK signs it, sent with aiohttp so that the client keeps up at these rates. Calls take
turns: a Start of a task scheduled a day ahead (so no worker starts: the control path
alone), a Get of one of 50 tasks started beforehand, a Stop of a task the series started
(so that scheduled tasks do not pile up by the thousand). The AppId's ``qps_limit`` is raised
out of the way (the default caps one AppId at 150 per second: at exactly that rate a
burst of jitter would be refused).

Two series per state, idle first, then with relays running (full: 20, quick: 3; remux
relays of one live RTMP stream of a 360p clip, nginx-rtmp on 127.0.0.1; not a source
served from this process, whose event loop is busy sending calls):

- paced: one call started every 1/150 s whatever the previous ones are doing (open
  loop: a slow answer does not slow the sending), each timed from its own send;
- flat out: 64 connections, each sending its next call as soon as the last is answered,
  for a bounded time: the rate they reach is the most the node sustains.

The reference is the same node idle, in the same run: ratio = loaded p99 / idle p99.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from tests.support.server import ACCESS_KEY_ID, APP_ID, APP_KEY, SECRET_ACCESS_KEY
from tests.support.tasks import wait_for_status

from bench.common import cpu_seconds, table
from bench.figure import Figure, run_alone
from bench.relays import (
    Node,
    light_clip,
    live_rtmp_source,
    percentile,
    relay_ids,
    running_node,
)
from relaystream.api.signature import sign_request
from relaystream.rtc.token import Privilege, generate_token

RATE = 150  # calls per second, the default qps_limit of one AppId
CONNECTIONS = 64  # flat out
LATER = int(time.time()) + 24 * 3600
KNOWN = "known"  # the tasks the Gets read
KNOWN_TASKS = 50
RELAY_ROOM = "relays"
TARGET = "p99 <= 10 ms at 150 req/s with 20 relays running"


@dataclass(frozen=True)
class Settings:
    relays: int
    paced_s: float
    flat_out_s: float


FULL = Settings(relays=20, paced_s=20.0, flat_out_s=10.0)
QUICK = Settings(relays=3, paced_s=2.0, flat_out_s=1.0)


class SignedClient:
    """Calls signed as the SDK signs them, over one aiohttp session."""

    def __init__(self, host: str, session: aiohttp.ClientSession) -> None:
        self._host = host
        self._session = session

    async def call(self, action: str, body: dict[str, object]) -> float:
        """Make one call; returns the seconds it took. Raises unless the answer is ok."""
        query = {"Action": action, "Version": "2023-11-01"}
        data = json.dumps(body).encode()
        headers = sign_request(
            method="POST",
            host=self._host,
            path="/",
            query=query,
            headers={"Content-Type": "application/json"},
            body=data,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
            region="cn-north-1",
        )
        began = time.perf_counter()
        async with self._session.post(
            f"http://{self._host}/?{urlencode(query)}", data=data, headers=headers
        ) as response:
            answer = await response.json()
        took = time.perf_counter() - began
        if "Error" in answer.get("ResponseMetadata", {}):
            raise RuntimeError(f"{action} refused: {answer['ResponseMetadata']['Error']}")
        return took


def task_key(prefix: str, n: int) -> dict[str, object]:
    return {"AppId": APP_ID, "RoomId": f"{prefix}-{n // 100}", "TaskId": f"{prefix}-{n}"}


def start_body(prefix: str, n: int) -> dict[str, object]:
    """A Start of a task scheduled a day ahead: no worker starts, the control path alone."""
    key = task_key(prefix, n)
    token = generate_token(
        app_id=APP_ID,
        app_key=APP_KEY,
        room_id=str(key["RoomId"]),
        user_id=f"u-{n}",
        privileges=[Privilege.PUBLISH_STREAM],
    )
    control = {
        "StreamUrl": "http://source.invalid/never.flv",  # never fetched, never resolves
        "StreamMode": 1,
        "StartTimeStamp": LATER,
    }
    return {**key, "UserId": f"u-{n}", "Token": token, "Control": control}


class Workload:
    """Start a task scheduled a day ahead, Get one of the KNOWN tasks, Stop a task this
    workload started, Start the next, ...: the node holds as many tasks at the end as at
    the beginning (thousands of scheduled tasks piling up would measure something else)."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._calls = itertools.count()
        self._started: deque[int] = deque()  # answered Starts, not yet stopped

    async def call(self, client: SignedClient) -> float:
        """The next call; returns the seconds it took."""
        n = next(self._calls)
        if n % 3 == 0:
            took = await client.call("StartRelayStream", start_body(self._prefix, n))
            self._started.append(n)
            return took
        if n % 3 == 2 and self._started:
            stopped = task_key(self._prefix, self._started.popleft())
            return await client.call("StopRelayStream", stopped)
        return await client.call("GetRelayStream", task_key(KNOWN, n % KNOWN_TASKS))


async def start_known(host: str) -> None:
    """The tasks the Gets read, started once before any series."""
    async with aiohttp.ClientSession() as session:
        client = SignedClient(host, session)
        for n in range(KNOWN_TASKS):
            await client.call("StartRelayStream", start_body(KNOWN, n))


async def paced(host: str, prefix: str, seconds: float) -> list[float]:
    """One call every 1/RATE s for ``seconds``, open loop; each call's latency."""
    work = Workload(prefix)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        client = SignedClient(host, session)
        began = time.perf_counter()
        pending = []
        for n in range(round(seconds * RATE)):
            delay = began + n / RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.ensure_future(work.call(client)))
        return list(await asyncio.gather(*pending))


async def flat_out(host: str, prefix: str, seconds: float) -> int:
    """CONNECTIONS lanes, each sending its next call as soon as the last is answered, for
    ``seconds`` (and until their last call is answered); the calls answered."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTIONS)) as session:
        client = SignedClient(host, session)
        answered = 0
        began = time.perf_counter()
        until = began + seconds

        async def lane(lane_id: int) -> None:
            nonlocal answered
            work = Workload(f"{prefix}-{lane_id}")
            while time.perf_counter() < until:
                await work.call(client)
                answered += 1

        await asyncio.gather(*(lane(n) for n in range(CONNECTIONS)))
        return answered


@dataclass(frozen=True)
class State:
    name: str
    latencies_s: list[float]
    max_rate: float  # calls per second, flat out
    # The server process's CPU per call, flat out: what a call costs, which depends far
    # less than the percentiles on what else the machine does (with relays running it
    # includes what the server spends on them meanwhile).
    cpu_ms_per_call: float

    @property
    def p50_ms(self) -> float:
        return 1000 * percentile(self.latencies_s, 0.5)

    @property
    def p99_ms(self) -> float:
        return 1000 * percentile(self.latencies_s, 0.99)


def measure_state(node: Node, name: str, prefix: str, settings: Settings) -> State:
    host = node.server.host
    latencies = asyncio.run(paced(host, f"{prefix}-paced", settings.paced_s))
    cpu_before, began = cpu_seconds(node.server.process.pid), time.monotonic()
    answered = asyncio.run(flat_out(host, f"{prefix}-flat", settings.flat_out_s))
    cpu_s, took = cpu_seconds(node.server.process.pid) - cpu_before, time.monotonic() - began
    return State(name, latencies, answered / took, 1000 * cpu_s / answered)


async def start_relays(node: Node, url: str, count: int) -> None:
    names = relay_ids(count)
    for name in names:
        await node.start(RELAY_ROOM, name, url)
    for name in names:
        await wait_for_status(node.rtc, RELAY_ROOM, name, 2, timeout_s=60)


def plot(states: list[State], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for state in states:
        ordered = sorted(1000 * s for s in state.latencies_s)
        share = [100 * (n + 1) / len(ordered) for n in range(len(ordered))]
        axes.plot(ordered, share, label=f"{state.name} (p99 {state.p99_ms:.1f} ms)")
    axes.axvline(10, color="tab:red", linestyle="--", linewidth=0.8, label="target p99")
    axes.set_xscale("log")
    axes.set_xlabel(f"latency of a signed Start/Get/Stop at {RATE} req/s, ms")
    axes.set_ylabel("% of calls answered within")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def measure(quick: bool, out_dir: Path) -> Figure:
    settings = QUICK if quick else FULL
    loaded_name = f"{settings.relays} relays"
    with (
        tempfile.TemporaryDirectory(prefix="relaystream-bench-") as work,
        live_rtmp_source(Path(work), light_clip()) as url,
        running_node(Path(work), app_qps_limit=1_000_000) as node,
    ):
        asyncio.run(start_known(node.server.host))
        idle = measure_state(node, "idle", "idle", settings)
        asyncio.run(start_relays(node, url, settings.relays))
        loaded = measure_state(node, loaded_name, "loaded", settings)
        ended = asyncio.run(node.not_running(RELAY_ROOM, relay_ids(settings.relays)))
        lost = [line for line in node.server.log().splitlines() if "task lease lost" in line]
    relays_note = (
        f"{len(ended)} of {settings.relays} relays not running at the end "
        f"({'; '.join(ended[:3])}{'; ...' if len(ended) > 3 else ''})"
        if ended
        else f"all {settings.relays} relays still running at the end"
    )
    ratio = loaded.p99_ms / idle.p99_ms
    summary = (
        f"API, signed Start/Get/Stop at {RATE} req/s: p50/p99 "
        f"{loaded.p50_ms:.1f}/{loaded.p99_ms:.1f} ms "
        f"with {loaded_name} vs {idle.p50_ms:.1f}/{idle.p99_ms:.1f} ms idle; flat out "
        f"{loaded.max_rate:.0f} vs {idle.max_rate:.0f} req/s"
        f"{f'; {len(ended)} relays not running at the end' if ended else ''}: p99 {ratio:.2f}x"
    )
    rows = [
        [
            s.name,
            str(len(s.latencies_s)),
            f"{s.p50_ms:.1f}",
            f"{s.p99_ms:.1f}",
            f"{1000 * max(s.latencies_s):.1f}",
            f"{s.max_rate:.0f}",
            f"{s.cpu_ms_per_call:.2f}",
        ]
        for s in (idle, loaded)
    ]
    headers = [
        "node",
        "calls",
        "p50 ms",
        "p99 ms",
        "max ms",
        f"flat out, {CONNECTIONS} conns, req/s",
        "server CPU ms/call",
    ]
    plots = [] if quick else [out_dir / "api_load.png"]
    for path in plots:
        plot([idle, loaded], path)
    paced_s, flat_out_s, relays = settings.paced_s, settings.flat_out_s, settings.relays
    body = f"""Signed calls taking turns: StartRelayStream (a task scheduled a day ahead),
GetRelayStream (one of {KNOWN_TASKS} known tasks), StopRelayStream (a task the series started);
{RATE} per second for {paced_s:g} s, open loop, each timed from its own send;
then {CONNECTIONS} connections flat out for {flat_out_s:g} s. First with the node idle, then
while it runs {relays} remux relays of one live 360p RTMP stream (nginx-rtmp on 127.0.0.1):
{relays_note}; the server logged "task lease lost" {len(lost)} times. The AppId's
qps_limit is raised out of the way. Client and server share the machine's cores, so
the flat-out rate is a floor for the server alone. Server CPU ms/call = the server
process's CPU time over the flat-out series / the calls answered (with relays, what it
spent on them meanwhile is included): on a busy machine the percentiles mostly measure
how long the server waits for a core, this does not.

```
{table(headers, rows)}
```

Reference: the same node idle, in the same run; ratio = p99 with relays / p99 idle =
{ratio:.2f}x. Target: {TARGET}.
"""
    return Figure(6, "API latency and rate under load", summary, ratio, TARGET, body, plots)


if __name__ == "__main__":
    run_alone(measure, __doc__.splitlines()[0])
