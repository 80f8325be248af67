"""Stories for the TaskSupervisor: real worker processes relay real clips into a room.

Everything is real but the HTTP API: a SQLite file, the embedded SFU's room registry,
the token check, and ``python -m relaystream.media.worker`` per task.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiortc.mediastreams import MediaStreamError

from relaystream.media.spec import StreamMode
from relaystream.media.testsrc import ClipSpec, make_test_clip
from relaystream.rtc.publisher import EmbeddedRoomConnector
from relaystream.rtc.room import Publication, RoomRegistry, TrackKind
from relaystream.rtc.token import Privilege, generate_token
from relaystream.store import UserTaken
from relaystream.store.sqlite import SqliteTaskStore
from relaystream.tasks.limits import RunningSlots, TaskLimitReached
from relaystream.tasks.model import RelayControl, RelayTask, StopReason, TaskKey, TaskStatus
from relaystream.tasks.runner import SourcePolicy
from relaystream.tasks.supervisor import TaskAlreadyActive, TaskSupervisor
from tests.support.net import static_http_server

APP_ID = "5f8a1c2b3d4e5f6a7b8c9d0e"
APP_KEY = "supervisor-test-app-key"
ROOM = "room-1"
USER = "relay-user"
SHORT_CLIP_S = 1.5


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of an HTTP server with a short clip and one that outlasts any test."""
    root: Path = tmp_path_factory.mktemp("media")
    small = ClipSpec(width=320, height=180, frame_rate=15)
    make_test_clip(root / "short.mp4", replace(small, duration_s=SHORT_CLIP_S))
    make_test_clip(root / "long.mp4", replace(small, duration_s=8.0))
    with static_http_server(root) as base_url:
        yield base_url


class Node:
    """One relaystream node's task side: a store file, rooms and a supervisor."""

    def __init__(
        self, store: SqliteTaskStore, rooms: RoomRegistry, slots: RunningSlots | None = None
    ) -> None:
        self.store = store
        self.rooms = rooms
        connector = EmbeddedRoomConnector(rooms, {APP_ID: APP_KEY}.get)
        self.supervisor = TaskSupervisor(
            store, connector, SourcePolicy(allow_private=True), slots=slots
        )

    async def wait_for(
        self, key: TaskKey, status: TaskStatus, timeout_s: float = 15.0
    ) -> RelayTask:
        deadline = time.monotonic() + timeout_s
        while True:
            task = await self.supervisor.load(key)
            assert task is not None
            if task.status is status or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert task.status is status, f"task stuck in {task.status.name}: {task}"
        return task

    def publication(self, user_id: str = USER) -> Publication | None:
        return self.rooms.find_publication(APP_ID, ROOM, user_id)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    store = await SqliteTaskStore.open(tmp_path / "data" / "tasks.db")
    started = Node(store, RoomRegistry())
    yield started
    await started.supervisor.shutdown()
    await store.close()


def publish_token(user_id: str = USER, app_key: str = APP_KEY) -> str:
    return generate_token(
        app_id=APP_ID,
        app_key=app_key,
        room_id=ROOM,
        user_id=user_id,
        privileges=[Privilege.PUBLISH_STREAM],
    )


def relay_task(
    stream_url: str,
    *,
    token: str | None = None,
    start_timestamp_s: int = 0,
    task_id: str = "task-1",
    user_id: str = USER,
) -> RelayTask:
    """A remux relay of ``stream_url`` into the room as ``user_id``."""
    return RelayTask(
        key=TaskKey(APP_ID, ROOM, task_id),
        user_id=user_id,
        token=token or publish_token(user_id),
        control=RelayControl(
            stream_url=stream_url,
            stream_mode=StreamMode.REMUX,
            start_timestamp_s=start_timestamp_s,
        ),
    )


def worker_pids() -> set[int]:
    """Media worker processes started by this test process."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"relaystream.media.worker" in cmdline:
            pids.add(int(entry.name))
    return pids


async def test_a_task_runs_in_the_room_until_its_source_ends(node: Node, media: str) -> None:
    task = relay_task(f"{media}/short.mp4")

    await node.supervisor.launch(task)
    running = await node.wait_for(task.key, TaskStatus.RUNNING)

    assert running.start_time_ms > 0
    publication = node.publication()
    assert publication is not None
    assert set(publication.tracks) == {TrackKind.AUDIO, TrackKind.VIDEO}
    # A viewer joining now starts at a keyframe and sees the stream to its end.
    viewer = publication.tracks[TrackKind.VIDEO].subscribe()
    first = await asyncio.wait_for(viewer.recv(), 5)
    assert first.is_keyframe
    stats = node.supervisor.stats(task.key)
    assert stats is not None and stats.opened is not None and stats.opened.video is not None
    assert stats.opened.video.codec == "h264"

    ended = await node.wait_for(task.key, TaskStatus.ENDED)

    assert ended.stop_reason is StopReason.SOURCE_ENDED
    assert ended.end_time_ms >= ended.start_time_ms
    with pytest.raises(MediaStreamError):
        while True:
            await asyncio.wait_for(viewer.recv(), 5)
    assert node.rooms.room(APP_ID, ROOM) is None
    assert node.supervisor.stats(task.key) is None
    assert worker_pids() == set()


async def test_stopping_a_task_ends_it_and_empties_the_room(node: Node, media: str) -> None:
    task = relay_task(f"{media}/long.mp4")
    await node.supervisor.launch(task)
    await node.wait_for(task.key, TaskStatus.RUNNING)
    assert node.publication() is not None

    stopped = await node.supervisor.stop(task.key, StopReason.API_STOP)

    assert stopped is not None
    assert (stopped.status, stopped.stop_reason) == (TaskStatus.ENDED, StopReason.API_STOP)
    assert node.publication() is None
    assert worker_pids() == set()
    stored = await node.supervisor.load(task.key)
    assert stored == stopped
    # Stopping again, or stopping a task nobody knows, changes nothing.
    assert await node.supervisor.stop(task.key, StopReason.API_STOP) is None
    assert await node.supervisor.stop(TaskKey(APP_ID, ROOM, "nope"), StopReason.API_STOP) is None
    assert await node.supervisor.active_tasks() == []


async def test_a_token_the_room_refuses_ends_the_task(node: Node, media: str) -> None:
    forged = publish_token(app_key="not-the-app-key")
    task = relay_task(f"{media}/long.mp4", token=forged)

    await node.supervisor.launch(task)
    ended = await node.wait_for(task.key, TaskStatus.ENDED)

    assert ended.stop_reason is StopReason.TOKEN_INVALID
    assert ended.stop_detail
    assert ended.start_time_ms == 0  # it never ran
    assert node.rooms.room(APP_ID, ROOM) is None


async def test_a_token_for_another_user_ends_the_task(node: Node, media: str) -> None:
    task = relay_task(f"{media}/long.mp4", token=publish_token(user_id="someone-else"))

    await node.supervisor.launch(task)
    ended = await node.wait_for(task.key, TaskStatus.ENDED)

    assert ended.stop_reason is StopReason.TOKEN_INVALID


async def test_a_missing_source_ends_the_task_with_a_source_error(node: Node, media: str) -> None:
    task = relay_task(f"{media}/gone.mp4")

    await node.supervisor.launch(task)
    ended = await node.wait_for(task.key, TaskStatus.ENDED)

    assert ended.stop_reason is StopReason.SOURCE_ERROR
    assert "404" in ended.stop_detail
    assert ended.start_time_ms == 0
    assert node.rooms.room(APP_ID, ROOM) is None


async def test_a_restart_resumes_a_running_task(tmp_path: Path, media: str) -> None:
    db = tmp_path / "tasks.db"
    store = await SqliteTaskStore.open(db)
    before = Node(store, RoomRegistry())
    task = relay_task(f"{media}/long.mp4")
    await before.supervisor.launch(task)
    await before.wait_for(task.key, TaskStatus.RUNNING)

    await before.supervisor.shutdown()
    await store.close()

    # The node went down: its room is gone, its worker too, but the task is still active.
    assert before.publication() is None
    assert worker_pids() == set()
    store = await SqliteTaskStore.open(db)
    after = Node(store, RoomRegistry())
    try:
        left = await after.supervisor.active_tasks()
        assert [(t.key, t.status) for t in left] == [(task.key, TaskStatus.RUNNING)]

        assert await after.supervisor.resume() == 1

        # Back through "starting" until media flows again.
        resumed = await after.supervisor.load(task.key)
        assert resumed is not None and resumed.status is TaskStatus.STARTING
        running = await after.wait_for(task.key, TaskStatus.RUNNING)
        assert after.publication() is not None
        assert running.create_time_ms == task.create_time_ms

        stopped = await after.supervisor.stop(task.key, StopReason.API_STOP)
        assert stopped is not None and stopped.stop_reason is StopReason.API_STOP
    finally:
        await after.supervisor.shutdown()
        await store.close()


async def test_a_scheduled_task_keeps_waiting_across_a_restart(tmp_path: Path, media: str) -> None:
    db = tmp_path / "tasks.db"
    store = await SqliteTaskStore.open(db)
    before = Node(store, RoomRegistry())
    later = int(time.time()) + 3600
    task = relay_task(f"{media}/long.mp4", start_timestamp_s=later)
    await before.supervisor.launch(task)
    await asyncio.sleep(0.3)

    assert (await before.wait_for(task.key, TaskStatus.STARTING)).status is TaskStatus.STARTING
    assert before.publication() is None  # not joined before its start time
    await before.supervisor.shutdown()
    await store.close()

    store = await SqliteTaskStore.open(db)
    after = Node(store, RoomRegistry())
    try:
        # Not taken (leased, run) before it is due: it waits in the store.
        assert await after.supervisor.resume() == 0
        await asyncio.sleep(0.3)
        assert (await after.supervisor.load(task.key)) == task
        assert after.publication() is None

        stopped = await after.supervisor.stop(task.key, StopReason.API_STOP)
        assert stopped is not None and stopped.status is TaskStatus.ENDED
    finally:
        await after.supervisor.shutdown()
        await store.close()


async def test_two_nodes_ending_one_task_at_once_record_one_end(tmp_path: Path, media: str) -> None:
    db = tmp_path / "tasks.db"
    store_a, store_b = await SqliteTaskStore.open(db), await SqliteTaskStore.open(db)
    node_a, node_b = Node(store_a, RoomRegistry()), Node(store_b, RoomRegistry())
    try:
        task = relay_task(f"{media}/long.mp4", start_timestamp_s=int(time.time()) + 3600)
        await node_a.supervisor.launch(task)

        results = await asyncio.gather(
            node_a.supervisor.stop(task.key, StopReason.API_STOP),
            node_b.supervisor.stop(task.key, StopReason.IDLE_TIMEOUT),
        )

        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        stored = await node_b.supervisor.load(task.key)
        assert stored == winners[0]
        assert stored is not None and stored.status is TaskStatus.ENDED
    finally:
        for node, store in ((node_a, store_a), (node_b, store_b)):
            await node.supervisor.shutdown()
            await store.close()


async def test_concurrent_updates_from_two_nodes_both_apply(tmp_path: Path, media: str) -> None:
    # Each update is applied to what is stored when it is written: a writer that lost
    # the compare-and-set reads again, so neither change is lost.
    db = tmp_path / "tasks.db"
    store_a, store_b = await SqliteTaskStore.open(db), await SqliteTaskStore.open(db)
    node_a, node_b = Node(store_a, RoomRegistry()), Node(store_b, RoomRegistry())
    try:
        task = relay_task(f"{media}/long.mp4", start_timestamp_s=int(time.time()) + 3600)
        await node_a.supervisor.launch(task)

        await asyncio.gather(
            node_a.supervisor.update(task.key, lambda c: replace(c, frame_rate=25)),
            node_b.supervisor.update(task.key, lambda c: replace(c, bitrate_kbps=800)),
        )

        stored = await node_a.supervisor.load(task.key)
        assert stored is not None
        assert (stored.control.frame_rate, stored.control.bitrate_kbps) == (25, 800)
        assert stored.status is TaskStatus.STARTING
    finally:
        for node, store in ((node_a, store_a), (node_b, store_b)):
            await node.supervisor.shutdown()
            await store.close()


async def test_a_scheduled_task_starts_with_the_control_of_its_last_update(
    node: Node, media: str
) -> None:
    task = relay_task(f"{media}/gone.mp4", start_timestamp_s=int(time.time()) + 2)
    await node.supervisor.launch(task)

    updated = await node.supervisor.update(
        task.key, lambda c: replace(c, stream_url=f"{media}/short.mp4")
    )

    assert updated is not None and updated.control.stream_url.endswith("/short.mp4")
    assert (await node.supervisor.load(task.key)) == updated
    # It plays the clip it was switched to (the first one does not exist), to its end.
    running = await node.wait_for(task.key, TaskStatus.RUNNING, timeout_s=20)
    assert running.start_time_ms >= task.control.start_timestamp_s * 1000
    ended = await node.wait_for(task.key, TaskStatus.ENDED)
    assert ended.stop_reason is StopReason.SOURCE_ENDED


async def test_updating_an_ended_or_unknown_task_changes_nothing(node: Node, media: str) -> None:
    task = relay_task(f"{media}/long.mp4", start_timestamp_s=int(time.time()) + 3600)
    await node.supervisor.launch(task)
    stopped = await node.supervisor.stop(task.key, StopReason.API_STOP)

    change = lambda c: replace(c, frame_rate=5)  # noqa: E731
    assert await node.supervisor.update(task.key, change) is None
    assert await node.supervisor.update(TaskKey(APP_ID, ROOM, "nope"), change) is None
    assert await node.supervisor.load(task.key) == stopped


async def test_a_second_run_of_an_active_task_or_user_is_refused(node: Node, media: str) -> None:
    later = int(time.time()) + 3600
    task = relay_task(f"{media}/long.mp4", start_timestamp_s=later)
    await node.supervisor.launch(task)

    with pytest.raises(TaskAlreadyActive):
        await node.supervisor.launch(task)
    with pytest.raises(UserTaken):
        await node.supervisor.launch(
            relay_task(f"{media}/long.mp4", start_timestamp_s=later, task_id="task-2")
        )

    # An ended task may run again.
    await node.supervisor.stop(task.key, StopReason.API_STOP)
    await node.supervisor.launch(task)
    again = await node.supervisor.load(task.key)
    assert again is not None and again.status is TaskStatus.STARTING


async def test_running_caps_count_tasks_holding_a_worker_not_scheduled_ones(
    tmp_path: Path, media: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = await SqliteTaskStore.open(tmp_path / "tasks.db")
    slots = RunningSlots(per_node=1, per_app=lambda _: 10)
    node = Node(store, RoomRegistry(), slots)
    try:
        first = relay_task(f"{media}/long.mp4", task_id="first", user_id="first")
        await node.supervisor.launch(first)
        await node.wait_for(first.key, TaskStatus.RUNNING)

        with pytest.raises(TaskLimitReached):
            await node.supervisor.launch(
                relay_task(f"{media}/long.mp4", task_id="refused", user_id="refused")
            )
        assert await node.supervisor.load(TaskKey(APP_ID, ROOM, "refused")) is None

        # A scheduled task is accepted at any count; when its time comes with the node
        # full, it waits in status 1 for a slot.
        scheduled = relay_task(
            f"{media}/long.mp4",
            task_id="scheduled",
            user_id="scheduled",
            start_timestamp_s=int(time.time()) + 1,
        )
        await node.supervisor.launch(scheduled)
        deadline = time.monotonic() + 10
        while "waits for a running slot" not in caplog.text:
            assert time.monotonic() < deadline, "the scheduled task never asked for a slot"
            await asyncio.sleep(0.05)
        assert node.publication("scheduled") is None
        assert node.publication("first") is not None
        assert slots.running == 1

        await node.supervisor.stop(first.key, StopReason.API_STOP)

        await node.wait_for(scheduled.key, TaskStatus.RUNNING)
        assert node.publication("scheduled") is not None
        assert slots.running == 1
        await node.supervisor.stop(scheduled.key, StopReason.API_STOP)
        assert slots.running == 0
    finally:
        await node.supervisor.shutdown()
        await store.close()
