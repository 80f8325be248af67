"""Start→status 2 latency and API latency with three nodes on one PostgreSQL against one.

Run from the repository root (it starts a throwaway PostgreSQL, as the tests do)::

    .venv/bin/python -m bench.several_nodes

For each layout (1 node, 3 nodes; all on one fresh database): Starts of real remux
relays of a small clip served on 127.0.0.1, one at a time, each through the next node
in turn, timed until GetRelayStream (through the same node) shows status 2; each task
is stopped before the next. Then ``--calls`` GetRelayStream and ListRelayStream calls
from 8 threads, paced to 40 calls/s in all (under the test AppId's rate limit), spread
over the nodes, with three relays running. Prints p50/p99/max
and the machine's load average before and after. Takes about a minute and a half.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from tests.support.net import static_http_server
from tests.support.postgres import postgres_cluster
from tests.support.sdk import RtcService
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, RelayServer, start_server
from tests.support.tasks import task_key

from relaystream.media.testsrc import ClipSpec, make_test_clip

PACE_QPS = 40
NODES_TOML = """
[store]
url = "{url}"
[node]
id = "{name}"
lease_s = 6.0
renew_s = 2.0
"""


def percentile_ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(label: str, values: list[float]) -> str:
    p50, p99 = percentile_ms(values, 0.5), percentile_ms(values, 0.99)
    return f"{label:<38} {len(values):>6} {p50:>9.1f} {p99:>9.1f} {1000 * max(values):>9.1f}"


def start_body(server: RelayServer, room: str, url: str) -> dict[str, Any]:
    return {
        **task_key(room, "t"),
        "UserId": "t",
        "Token": server.publish_token(room, "t"),
        "MaxIdleTime": 60,
        "Control": {"StreamUrl": url, "StreamMode": 1},
    }


def status_of(rtc: RtcService, room: str) -> int:
    return int(rtc.action("GetRelayStream", task_key(room, "t"))["Result"]["Task"]["Status"])


def start_to_running(servers: list[RelayServer], url: str, count: int, label: str) -> list[float]:
    took = []
    for n in range(count):
        server = servers[n % len(servers)]
        rtc = RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        room = f"{label}-{n}"
        began = time.perf_counter()
        rtc.action("StartRelayStream", start_body(server, room, url))
        deadline = began + 60
        while status_of(rtc, room) != 2:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{room} never reached status 2")
            time.sleep(0.02)
        took.append(time.perf_counter() - began)
        rtc.action("StopRelayStream", task_key(room, "t"))
    return took


def api_calls(servers: list[RelayServer], rooms: list[str], calls: int) -> list[float]:
    clients = [RtcService(s.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY) for s in servers]

    first = time.perf_counter()

    def one(n: int) -> float:
        # Paced to PACE_QPS in all: under the test AppId's per-node share of its
        # qps_limit (150 over 3 nodes), so no call is refused.
        time.sleep(max(0.0, first + n / PACE_QPS - time.perf_counter()))
        rtc = clients[n % len(clients)]
        began = time.perf_counter()
        if n % 2:
            rtc.action("GetRelayStream", task_key(rooms[n % len(rooms)], "t"))
        else:
            rtc.action("ListRelayStream", {"AppId": task_key("x", "t")["AppId"]})
        return time.perf_counter() - began

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(calls)))


def layout(
    names: list[str], url_for: Callable[[], str], work: Path, clip: str, args: argparse.Namespace
) -> tuple[list[float], list[float]]:
    db = url_for()
    servers = [
        start_server(work / name, extra_config=NODES_TOML.format(url=db, name=name))
        for name in names
    ]
    try:
        label = f"n{len(names)}"
        start_to_running(servers, clip, 1, f"{label}-warm")
        latencies = start_to_running(servers, clip, args.starts, label)
        rooms = [f"{label}-busy-{n}" for n in range(3)]
        for n, room in enumerate(rooms):
            server = servers[n % len(servers)]
            RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY).action(
                "StartRelayStream", start_body(server, room, clip)
            )
        api = api_calls(servers, rooms, args.calls)
        return latencies, api
    finally:
        for server in servers:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=8)
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="relaystream-bench-") as tmp:
        work = Path(tmp)
        spec = ClipSpec(width=320, height=180, frame_rate=15, keyframe_interval_s=1.0)
        make_test_clip(work / "clip.mp4", replace(spec, duration_s=30.0))
        load_before = os.getloadavg()
        with postgres_cluster() as cluster, static_http_server(work) as base_url:
            clip = f"{base_url}/clip.mp4"
            one = layout(["solo"], cluster.fresh_database, work / "one", clip, args)
            three = layout(
                ["node-a", "node-b", "node-c"], cluster.fresh_database, work / "three", clip, args
            )
        load_after = os.getloadavg()
    print(f"{'':<38} {'count':>6} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    print(row("Start -> status 2, 1 node", one[0]))
    print(row("Start -> status 2, 3 nodes", three[0]))
    print(row("Get/List API, 1 node", one[1]))
    print(row("Get/List API, 3 nodes", three[1]))
    ratio = statistics.median(three[0]) / statistics.median(one[0])
    print(f"Start -> status 2 median, 3 nodes / 1 node: {ratio:.2f}")
    print(
        f"load average (1/5/15 min) before {' '.join(f'{v:.2f}' for v in load_before)},"
        f" after {' '.join(f'{v:.2f}' for v in load_after)}; {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
