"""Three nodes on one PostgreSQL: any node takes a Start, tasks spread over the nodes, a
viewer reaches a task through any node, and a node that dies or freezes loses its tasks
to the others within 10 s without any task ever running on two nodes at once.

Real server processes on a throwaway cluster; every node's media workers carry the
node's name in their environment, so a sampler can count the workers of each task on
the whole machine, those of a killed node included. Leases are short (4 s, renewed every
second) to keep the stories short.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relaystream.media.testsrc import ClipSpec, make_test_clip
from tests.support.callbacks import CallbackReceiver, callback_receiver
from tests.support.net import static_http_server
from tests.support.postgres import PostgresCluster
from tests.support.processes import media_workers_by_marker
from tests.support.sdk import RtcService
from tests.support.server import (
    ACCESS_KEY_ID,
    APP_ID,
    SECRET_ACCESS_KEY,
    RelayServer,
    start_server,
)
from tests.support.tasks import call, get_task, task_key, wait_for_status
from tests.support.viewer import WhepViewer

NODE_MARKER = "RELAYSTREAM_TEST_NODE"
NODE_NAMES = ("node-a", "node-b", "node-c")
LEASE_S = 4.0
RENEW_S = 1.0
CALLBACK_SECRET = "several-nodes-secret"


@pytest.fixture(scope="module")
def clip_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("nodes-media")
    spec = ClipSpec(width=160, height=90, frame_rate=10, keyframe_interval_s=1.0)
    make_test_clip(root / "long.mp4", replace(spec, duration_s=60.0))
    # A source to switch to, told apart by its size.
    make_test_clip(root / "wide.mp4", replace(spec, width=320, height=180, duration_s=20.0))
    with static_http_server(root) as base_url:
        yield f"{base_url}/long.mp4"


class Cluster:
    def __init__(self, nodes: dict[str, RelayServer], receiver: CallbackReceiver) -> None:
        self.nodes = nodes
        self.receiver = receiver

    def callbacks_of_room(self, room: str) -> list[tuple[int, str]]:
        """The room's state callbacks, each event once (delivery is at least once)."""
        seen: dict[str, tuple[int, str]] = {}
        for event in list(self.receiver.events):
            if event.data["RoomId"] == room:
                seen.setdefault(event.event_id, event.state)
        return list(seen.values())

    def rtc(self, name: str) -> RtcService:
        return RtcService(self.nodes[name].host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)

    def health(self, name: str) -> dict[str, Any]:
        url = f"{self.nodes[name].base_url}/healthz"
        with urllib.request.urlopen(url, timeout=5) as response:
            return dict(json.load(response))

    def workers(self) -> dict[int, str]:
        """Media workers of this cluster's nodes on the machine: pid → node name."""
        ours = {name for name in self.nodes}
        return {p: n for p, n in media_workers_by_marker(NODE_MARKER).items() if n in ours}

    def worker_nodes(self) -> list[str]:
        return sorted(self.workers().values())


@pytest.fixture(scope="module")
def cluster(
    postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    url = postgres.fresh_database()
    nodes: dict[str, RelayServer] = {}
    with callback_receiver(CALLBACK_SECRET) as receiver:
        try:
            for name in NODE_NAMES:
                nodes[name] = start_server(
                    tmp_path_factory.mktemp(name),
                    extra_config=(
                        f'[store]\nurl = "{url}"\n'
                        f'[node]\nid = "{name}"\nlease_s = {LEASE_S}\nrenew_s = {RENEW_S}\n'
                    ),
                    env={NODE_MARKER: name},
                    app_toml={
                        APP_ID: f'callback_url = "{receiver.url}"\n'
                        f'callback_secret = "{CALLBACK_SECRET}"\n'
                    },
                    callbacks_toml="allow_private = true\npoll_interval_s = 0.2\n"
                    "backoff_base_s = 0.2\nbackoff_cap_s = 1.0\n",
                )
            yield Cluster(nodes, receiver)
        finally:
            _stop_all(nodes)


def _stop_all(nodes: dict[str, RelayServer]) -> None:
    for server in nodes.values():
        if server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)  # a frozen node stops too
        server.stop()


class WorkerSampler:
    """Counts each node's workers every 100 ms on a thread; one task runs at a time in
    the stories that use it, so more than one worker at once is a task run twice."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self.most_at_once = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> WorkerSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.most_at_once = max(self.most_at_once, len(self._cluster.workers()))
            self.samples += 1
            self._stop.wait(0.1)


def start_body(server: RelayServer, room: str, task: str, url: str) -> dict[str, Any]:
    return {
        **task_key(room, task),
        "UserId": task,
        "Token": server.publish_token(room, task),
        "MaxIdleTime": 300,
        "Control": {"StreamUrl": url, "StreamMode": 1},
    }


async def wait_until(check: Any, timeout_s: float, what: str) -> float:
    """Poll ``check()`` until true; the seconds it took."""
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < timeout_s, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.1)
    return time.monotonic() - began


async def run_one_task(cluster: Cluster, through: str, room: str, clip_url: str) -> str:
    """Start a task through ``through``; the node that runs it, once media flows."""
    rtc = cluster.rtc(through)
    server = cluster.nodes[through]
    assert await call(rtc, "StartRelayStream", start_body(server, room, "t", clip_url)) == "ok"
    await wait_for_status(rtc, room, "t", 2)
    await wait_until(lambda: len(cluster.workers()) == 1, 10, "one worker")
    [owner] = cluster.worker_nodes()
    return owner


async def whep_location(url: str, token: str) -> tuple[int, str]:
    """POST an (empty) offer without following redirects: (status, Location)."""
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            url,
            data="v=0\r\n",
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
            allow_redirects=False,
        )
        return response.status, response.headers.get("Location", "")


async def test_starts_through_any_node_spread_and_viewers_reach_them_through_any_node(
    cluster: Cluster, clip_url: str
) -> None:
    rooms = {"spread-1": "node-b", "spread-2": "node-c", "spread-3": "node-a"}
    for room, through in rooms.items():
        server = cluster.nodes[through]
        body = start_body(server, room, "t", clip_url)
        assert await call(cluster.rtc(through), "StartRelayStream", body) == "ok"
        await wait_for_status(cluster.rtc(through), room, "t", 2)
    try:
        await wait_until(lambda: len(cluster.workers()) == 3, 10, "three workers")
        assert cluster.worker_nodes() == sorted(NODE_NAMES), "one task on each node"
        assert sorted(cluster.health(n)["tasks"] for n in NODE_NAMES) == [1, 1, 1]

        # Any node answers Get for any task, with live stats (the owner's snapshot,
        # renewed every lease round: the frame count keeps rising on every node).
        for name in NODE_NAMES:
            first = (await get_task(cluster.rtc(name), "spread-1", "t"))["Stats"]
            deadline = time.monotonic() + 10
            while True:
                task = await get_task(cluster.rtc(name), "spread-1", "t")
                if task["Stats"]["VideoFramesSent"] > first["VideoFramesSent"]:
                    break
                assert time.monotonic() < deadline, f"stats on {name} stand still"
                await asyncio.sleep(0.2)
            assert task["Status"] == 2 and task["Stats"]["Input"]

        # A viewer asks every node for spread-2: the owner answers, the others send it there.
        for name in NODE_NAMES:
            server = cluster.nodes[name]
            path = f"/whep/{APP_ID}/spread-2/t"
            token = server.subscribe_token("spread-2")
            status, location = await whep_location(server.base_url + path, token)
            if status == 307:
                assert location.endswith(path) and not location.startswith(server.base_url)
                target = location
            else:
                assert status == 400  # the owner itself: it tried to answer the bad offer
                target = server.base_url + path
            viewer = WhepViewer(target, token)
            await viewer.connect()
            try:
                await viewer.wait_for_media("video", 1.0, timeout_s=20)
            finally:
                await viewer.close()
    finally:
        for room, through in rooms.items():
            await call(cluster.rtc(through), "StopRelayStream", task_key(room, "t"))
        await wait_until(lambda: not cluster.workers(), 10, "all workers gone")


async def first_answer(method: str, url: str, token: str = "") -> tuple[int, str, str]:
    """(status, Location, the start of the body) of one request to a room route."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if method == "POST":
        headers["Content-Type"] = "application/sdp"
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            url,
            data="v=0\r\n" if method == "POST" else None,
            headers=headers,
            allow_redirects=False,
        ) as response,
    ):
        # An event stream stays open: its first event is all a visitor needs.
        body = await asyncio.wait_for(response.content.read(2048), 10)
        return response.status, response.headers.get("Location", ""), body.decode(errors="replace")


async def test_whip_and_the_room_page_on_another_node_redirect_to_the_rooms_node(
    cluster: Cluster, clip_url: str
) -> None:
    owner = await run_one_task(cluster, "node-a", "hosted", clip_url)
    owner_url = cluster.nodes[owner].base_url
    try:
        for name in NODE_NAMES:
            server = cluster.nodes[name]
            routes = [
                ("POST", f"/whip/{APP_ID}/hosted/guest", server.publish_token("hosted", "guest")),
                ("GET", f"/rooms/{APP_ID}/hosted", ""),
                ("GET", f"/rooms/{APP_ID}/hosted/events", server.subscribe_token("hosted")),
            ]
            for method, path, token in routes:
                status, location, body = await first_answer(method, server.base_url + path, token)
                if name != owner:
                    assert (status, location) == (307, owner_url + path), (name, path)
                    # Followed (by hand: the token goes along to the owner's origin).
                    status, _, body = await first_answer(method, location, token)
                # The owner answers (WHIP: it tried to answer the bad offer).
                assert status == (400 if method == "POST" else 200), (name, path, body)
                if path.endswith("/events"):  # the page sees the room's publisher
                    assert "snapshot" in body and '"t"' in body, (name, body)
    finally:
        await call(cluster.rtc("node-a"), "StopRelayStream", task_key("hosted", "t"))
        await wait_until(lambda: not cluster.workers(), 10, "the worker gone")


async def test_a_room_lives_on_one_node_whichever_node_takes_its_starts(
    cluster: Cluster, clip_url: str
) -> None:
    owner = await run_one_task(cluster, "node-a", "one-room", clip_url)
    # Through a node that is not the room's: the freest node now, which would take a
    # task of a new room.
    other = next(name for name in NODE_NAMES if name != owner)
    body = start_body(cluster.nodes[other], "one-room", "second", clip_url)
    try:
        assert await call(cluster.rtc(other), "StartRelayStream", body) == "ok"
        await wait_for_status(cluster.rtc(other), "one-room", "second", 2)
        await wait_until(lambda: len(cluster.workers()) == 2, 10, "two workers")
        assert cluster.worker_nodes() == [owner, owner]
        assert cluster.health(owner)["tasks"] == 2
    finally:
        for task in ("t", "second"):
            await call(cluster.rtc(other), "StopRelayStream", task_key("one-room", task))
        await wait_until(lambda: not cluster.workers(), 10, "the workers gone")


async def test_an_update_through_another_node_switches_the_owners_worker(
    cluster: Cluster, clip_url: str
) -> None:
    owner = await run_one_task(cluster, "node-a", "switched", clip_url)
    other = next(name for name in NODE_NAMES if name != owner)
    server = cluster.nodes[owner]
    viewer = WhepViewer(
        f"{server.base_url}/whep/{APP_ID}/switched/t", server.subscribe_token("switched")
    )
    await viewer.connect()
    try:
        await viewer.wait_for_media("video", 1.0, timeout_s=20)
        wide_url = clip_url.replace("long.mp4", "wide.mp4")
        update = {**task_key("switched", "t"), "Control": {"StreamUrl": wide_url}}
        assert await call(cluster.rtc(other), "UpdateRelayStream", update) == "ok"

        frames = viewer.tracks["video"].frames
        await wait_until(
            lambda: any(f.width == 320 for f in frames),
            20,
            "the owner's viewer sees the new source",
        )
        task = await get_task(cluster.rtc(owner), "switched", "t")
        assert (task["Status"], task["StreamUrl"]) == (2, wide_url)
        assert cluster.worker_nodes() == [owner], "switched in place, on the owner"
    finally:
        await viewer.close()
        await call(cluster.rtc(other), "StopRelayStream", task_key("switched", "t"))
        await wait_until(lambda: not cluster.workers(), 10, "the worker gone")


async def test_a_killed_owners_task_runs_on_another_node_within_10_s_never_twice(
    cluster: Cluster, clip_url: str
) -> None:
    owner = await run_one_task(cluster, "node-a", "killed", clip_url)
    others = [n for n in NODE_NAMES if n != owner]
    with WorkerSampler(cluster) as sampler:
        cluster.nodes[owner].kill()
        took_s = await wait_until(
            lambda: any(n in others for n in cluster.worker_nodes()), 10, "a worker elsewhere"
        )
        await wait_for_status(cluster.rtc(others[0]), "killed", "t", 2, timeout_s=10)
        await wait_until(lambda: owner not in cluster.worker_nodes(), 10, "old worker gone")
    assert took_s <= 10
    assert sampler.samples > 10 and sampler.most_at_once == 1, "the task ran twice"
    assert len(cluster.workers()) == 1  # not lost either
    await call(cluster.rtc(others[0]), "StopRelayStream", task_key("killed", "t"))
    await wait_until(lambda: not cluster.workers(), 10, "the worker stopped")
    # Its callbacks continued in order across the move: started, running, reconnecting
    # (on the new node), running again, stopped — each event once.
    expected = [(1, ""), (2, ""), (1, ""), (2, ""), (3, "ApiStop")]
    await wait_until(
        lambda: len(cluster.callbacks_of_room("killed")) >= len(expected), 15, "callbacks"
    )
    assert cluster.callbacks_of_room("killed") == expected
    cluster.nodes[owner] = cluster.nodes[owner].restart()


async def test_a_frozen_owner_loses_its_task_its_worker_stops_and_thawed_it_stays_away(
    cluster: Cluster, clip_url: str
) -> None:
    owner = await run_one_task(cluster, "node-b", "frozen", clip_url)
    others = [n for n in NODE_NAMES if n != owner]
    pid = cluster.nodes[owner].process.pid
    with WorkerSampler(cluster) as sampler:
        os.kill(pid, signal.SIGSTOP)
        try:
            await wait_until(
                lambda: (nodes := cluster.worker_nodes()) != [] and owner not in nodes,
                10,
                "the task on another node, the frozen node's worker gone",
            )
            await wait_for_status(cluster.rtc(others[0]), "frozen", "t", 2, timeout_s=10)
        finally:
            os.kill(pid, signal.SIGCONT)
        # Thawed: it renews, finds its lease gone, and starts nothing. Two renewals of
        # its node row prove it has run its lease rounds since.
        first = cluster.health(owner)["lease_until_ms"]
        await wait_until(
            lambda: cluster.health(owner)["lease_until_ms"] > first + 1000, 10, "renewals"
        )
        assert owner not in cluster.worker_nodes()
        assert cluster.health(owner)["tasks"] == 0
    assert sampler.samples > 10 and sampler.most_at_once == 1, "the task ran twice"
    [runner] = cluster.worker_nodes()
    await call(cluster.rtc(owner), "StopRelayStream", task_key("frozen", "t"))
    await wait_until(lambda: not cluster.workers(), 10, f"the worker on {runner} stopped")


class StatusSampler:
    """Reads each task's status every 100 ms (through one node) on a thread."""

    def __init__(self, rtc: RtcService, keys: list[tuple[str, str]]) -> None:
        self._rtc = rtc
        self.seen: dict[tuple[str, str], list[int]] = {key: [] for key in keys}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> StatusSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            for (room, task), statuses in self.seen.items():
                result = self._rtc.action("GetRelayStream", task_key(room, task))["Result"]
                status = int(result["Task"]["Status"])
                if not statuses or statuses[-1] != status:
                    statuses.append(status)
            self._stop.wait(0.1)


def relaystream_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relaystream", *args], capture_output=True, text=True, timeout=90
    )


async def test_drain_moves_a_nodes_tasks_elsewhere_with_one_reconnect_each(
    cluster: Cluster, clip_url: str
) -> None:
    rooms = ["drain-1", "drain-2", "drain-3"]
    for room in rooms:
        server = cluster.nodes["node-c"]
        body = start_body(server, room, "t", clip_url)
        assert await call(cluster.rtc("node-c"), "StartRelayStream", body) == "ok"
        await wait_for_status(cluster.rtc("node-c"), room, "t", 2)
    await wait_until(lambda: len(cluster.workers()) == 3, 10, "three workers")
    target = cluster.worker_nodes()[0]
    moving = cluster.health(target)["tasks"]
    assert moving >= 1
    config = str(cluster.nodes[target].config_path)

    listed = relaystream_cli("nodes", "--config", config)
    assert listed.returncode == 0, listed.stderr
    for name in NODE_NAMES:
        assert name in listed.stdout
    assert cluster.nodes[target].base_url in listed.stdout

    keys = [(room, "t") for room in rooms]
    with StatusSampler(cluster.rtc("node-c"), keys) as sampler:
        drained = relaystream_cli("drain", target, "--config", config)
        assert drained.returncode == 0, drained.stderr
        assert f"{target}: drained" in drained.stdout
        await wait_until(
            lambda: len(cluster.workers()) == 3 and target not in cluster.worker_nodes(),
            15,
            "the tasks running elsewhere",
        )
        for room in rooms:
            await wait_for_status(cluster.rtc("node-a"), room, "t", 2, timeout_s=15)
        await wait_until(
            lambda: all(seen[-1] == 2 for seen in sampler.seen.values()), 10, "sampled at 2"
        )
    histories = sorted(sampler.seen.values())
    # Never stopped, at most one reconnect each (a forked worker may reconnect faster
    # than one sample: the callbacks below count every transition).
    assert all(seen in ([2], [2, 1, 2]) for seen in histories), histories
    started = [(1, ""), (2, "")]
    expected_count = len(started) * (len(rooms) + moving)
    await wait_until(
        lambda: sum(len(cluster.callbacks_of_room(room)) for room in rooms) >= expected_count,
        15,
        "callbacks",
    )
    callbacks = sorted(cluster.callbacks_of_room(room) for room in rooms)
    # One reconnect each moved task: reconnecting on the new node, then running again.
    assert callbacks.count(started + started) == moving, callbacks
    assert callbacks.count(started) == len(rooms) - moving, callbacks
    assert cluster.health(target)["tasks"] == 0
    listed = relaystream_cli("nodes", "--config", config)
    assert "draining" in listed.stdout

    undone = relaystream_cli("drain", target, "--undo", "--config", config)
    assert undone.returncode == 0, undone.stderr
    for room in rooms:
        await call(cluster.rtc("node-a"), "StopRelayStream", task_key(room, "t"))
    await wait_until(lambda: not cluster.workers(), 10, "all workers gone")
