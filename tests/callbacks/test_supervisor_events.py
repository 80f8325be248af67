"""The supervisor writes one callback event per change a user can see, in the unit of
work of the change: a Start, a stop, a resumed running task's reconnect; never an
Update or a saved position."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from relaystream.callbacks.outbox import CallbackOutbox
from relaystream.media.spec import StreamMode
from relaystream.rtc.publisher import EmbeddedRoomConnector
from relaystream.rtc.room import RoomRegistry
from relaystream.store import CallbackState
from relaystream.store.sqlite import SqliteTaskStore
from relaystream.tasks.model import (
    RelayControl,
    RelayTask,
    StopReason,
    TaskKey,
    TaskStatus,
    to_record,
)
from relaystream.tasks.runner import SourcePolicy
from relaystream.tasks.supervisor import TaskSupervisor

APP = "5f8a1c2b3d4e5f6a7b8c9d0e"
QUIET_APP = "aaaaaaaaaaaaaaaaaaaaaaaa"  # has no callback URL
ROOM = "room-events"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteTaskStore]:
    store = await SqliteTaskStore.open(tmp_path / "tasks.db")
    yield store
    await store.close()


def supervisor_of(store: SqliteTaskStore, outbox: CallbackOutbox) -> TaskSupervisor:
    connector = EmbeddedRoomConnector(RoomRegistry(), {APP: "k", QUIET_APP: "k"}.get)
    return TaskSupervisor(store, connector, SourcePolicy(allow_private=True), outbox=outbox)


def scheduled_task(task_id: str, app_id: str = APP) -> RelayTask:
    """A task that waits an hour for its start: no media, only state changes."""
    return RelayTask(
        key=TaskKey(app_id, ROOM, task_id),
        user_id=task_id,
        token="001token",
        control=RelayControl(
            stream_url="http://127.0.0.1:9/never.mp4",
            stream_mode=StreamMode.REMUX,
            start_timestamp_s=int(time.time()) + 3600,
        ),
    )


async def reasons_of(store: SqliteTaskStore, task_id: str) -> list[tuple[int, str]]:
    """(Status, Reason) of the task's events, in order."""
    records = await store.list_callbacks(APP, list(CallbackState), 100)
    ordered = sorted((r for r in records if r.task_id == task_id), key=lambda r: r.seq)
    return [
        (json.loads(r.body["EventData"])["Status"], json.loads(r.body["EventData"])["Reason"])
        for r in ordered
    ]


async def test_start_update_stop_and_a_new_run(store: SqliteTaskStore) -> None:
    outbox = CallbackOutbox(lambda app_id: app_id == APP)
    supervisor = supervisor_of(store, outbox)
    task = scheduled_task("life")
    try:
        await supervisor.launch(task)
        await supervisor.update(task.key, lambda c: replace(c, frame_rate=25))
        await supervisor.stop(task.key, StopReason.API_STOP)
        await supervisor.launch(task)  # a new run of the ended task
        await supervisor.stop(task.key, StopReason.API_STOP)
    finally:
        await supervisor.shutdown()
    assert await reasons_of(store, "life") == [(1, ""), (3, "ApiStop"), (1, ""), (3, "ApiStop")]


async def test_a_commit_with_an_event_wakes_the_delivery_worker(store: SqliteTaskStore) -> None:
    outbox = CallbackOutbox(lambda app_id: app_id == APP)
    supervisor = supervisor_of(store, outbox)
    woken = asyncio.create_task(outbox.wait_for_events(timeout_s=30))
    try:
        await asyncio.sleep(0)  # the waiter is waiting
        await supervisor.launch(scheduled_task("wake"))
        await asyncio.wait_for(woken, 5)
    finally:
        await supervisor.shutdown()


async def test_apps_without_a_callback_url_get_no_events(store: SqliteTaskStore) -> None:
    supervisor = supervisor_of(store, CallbackOutbox(lambda app_id: app_id == APP))
    task = scheduled_task("quiet", app_id=QUIET_APP)
    try:
        await supervisor.launch(task)
        await supervisor.stop(task.key, StopReason.API_STOP)
    finally:
        await supervisor.shutdown()
    assert await store.list_callbacks(QUIET_APP, list(CallbackState), 10) == []


async def test_a_running_task_resumed_after_a_restart_reports_its_reconnect(
    store: SqliteTaskStore,
) -> None:
    # What a crashed node left behind: a running task (its start event long delivered).
    # A running task was due: its run resumes at once. What its worker does next (here,
    # with no room to join, it may fail before the shutdown) comes after the reconnect.
    waiting = scheduled_task("resumed")
    running = replace(
        waiting,
        status=TaskStatus.RUNNING,
        control=replace(waiting.control, start_timestamp_s=int(time.time()) - 60),
    )
    async with store.transaction() as unit:
        await unit.insert(to_record(running))
    supervisor = supervisor_of(store, CallbackOutbox(lambda app_id: app_id == APP))
    try:
        assert await supervisor.resume() == 1
    finally:
        await supervisor.shutdown()
    assert (await reasons_of(store, "resumed"))[0] == (1, "")
