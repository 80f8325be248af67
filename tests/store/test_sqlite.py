"""Stories for the SQLite task store: a real file, closed and reopened like a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relaystream.media.spec import MediaType, StreamMode
from relaystream.store import TaskRecord
from relaystream.store.sqlite import SqliteTaskStore
from relaystream.tasks.model import (
    RelayControl,
    RelayTask,
    StopReason,
    TaskKey,
    TaskStatus,
    from_record,
    to_record,
)

APP = "5f8a1c2b3d4e5f6a7b8c9d0e"


def relay_task(task_id: str, *, room_id: str = "room-1", created_ms: int = 1_000) -> RelayTask:
    return RelayTask(
        key=TaskKey(APP, room_id, task_id),
        user_id=f"user-{task_id}",
        token="001token",
        control=RelayControl(
            stream_url="https://cdn.example.com/live/index.m3u8",
            media_type=MediaType.AUDIO_ONLY,
            stream_mode=StreamMode.REMUX,
            loop=True,
        ),
        business_id="concerts",
        max_idle_s=60,
        create_time_ms=created_ms,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "relaystream.db"  # the directory does not exist yet


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteTaskStore]:
    opened = await SqliteTaskStore.open(db_path)
    yield opened
    await opened.close()


async def test_a_saved_task_reads_back_equal(store: SqliteTaskStore) -> None:
    task = relay_task("task-1").running()

    await store.save(to_record(task))
    record = await store.get(APP, "room-1", "task-1")

    assert record is not None
    assert from_record(record) == task


async def test_an_unknown_task_is_none(store: SqliteTaskStore) -> None:
    await store.save(to_record(relay_task("task-1")))

    assert await store.get(APP, "room-1", "task-2") is None
    assert await store.get(APP, "room-2", "task-1") is None
    assert await store.get("another-app-id-of-24chars", "room-1", "task-1") is None


async def test_saving_again_replaces_the_task(store: SqliteTaskStore) -> None:
    task = relay_task("task-1")
    await store.save(to_record(task))

    ended = task.running().stopped(StopReason.SOURCE_ENDED)
    await store.save(to_record(ended))

    record = await store.get(APP, "room-1", "task-1")
    assert record is not None
    assert from_record(record) == ended
    assert await store.list_with_status((1, 2, 3)) == [record]


async def test_the_same_task_id_in_two_rooms_is_two_tasks(store: SqliteTaskStore) -> None:
    here = relay_task("task-1", room_id="room-1")
    there = relay_task("task-1", room_id="room-2").running()

    await store.save(to_record(here))
    await store.save(to_record(there))

    first = await store.get(APP, "room-1", "task-1")
    second = await store.get(APP, "room-2", "task-1")
    assert first is not None and from_record(first) == here
    assert second is not None and from_record(second) == there


async def test_tasks_survive_closing_and_reopening_the_file(db_path: Path) -> None:
    store = await SqliteTaskStore.open(db_path)
    running = relay_task("task-1").running()
    ended = relay_task("task-2").stopped(StopReason.API_STOP, "stopped by the user")
    await store.save(to_record(running))
    await store.save(to_record(ended))
    await store.close()

    reopened = await SqliteTaskStore.open(db_path)
    try:
        got_running = await reopened.get(APP, "room-1", "task-1")
        got_ended = await reopened.get(APP, "room-1", "task-2")
    finally:
        await reopened.close()

    assert got_running is not None and from_record(got_running) == running
    assert got_ended is not None and from_record(got_ended) == ended


async def test_listing_by_status_in_creation_order(store: SqliteTaskStore) -> None:
    starting = relay_task("c", created_ms=3_000)
    running = relay_task("a", created_ms=1_000).running()
    also_running = relay_task("b", created_ms=2_000).running()
    ended = relay_task("d", created_ms=500).stopped(StopReason.EXPIRED)
    for task in (starting, ended, also_running, running):
        await store.save(to_record(task))

    active = await store.list_with_status((int(TaskStatus.STARTING), int(TaskStatus.RUNNING)))
    finished = await store.list_with_status((int(TaskStatus.ENDED),))

    assert [r.task_id for r in active] == ["a", "b", "c"]
    assert [from_record(r) for r in active] == [running, also_running, starting]
    assert [r.task_id for r in finished] == ["d"]
    assert await store.list_with_status(()) == []


async def test_the_document_is_kept_as_given(store: SqliteTaskStore) -> None:
    # The store does not interpret the document: any JSON object round-trips.
    record = TaskRecord(
        app_id=APP,
        room_id="room-é",
        task_id="task-1",
        status=2,
        create_time_ms=1_700_000_000_000,
        document={"nested": {"list": [1, 2.5, None, True]}, "text": "中文 ✓"},
    )

    await store.save(record)

    assert await store.get(APP, "room-é", "task-1") == record
