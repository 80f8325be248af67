"""Retention: ended tasks are purged once they are older than retention_s; active ones
stay whatever their age."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relaystream.store.sqlite import SqliteTaskStore
from relaystream.tasks.model import RelayControl, RelayTask, StopReason, TaskKey, to_record
from relaystream.tasks.retention import RetentionJob

APP = "5f8a1c2b3d4e5f6a7b8c9d0e"


def task(task_id: str) -> RelayTask:
    return RelayTask(
        key=TaskKey(APP, "room", task_id),
        user_id=f"user-{task_id}",
        token="t",
        control=RelayControl(stream_url="rtmp://h/a/s"),
        create_time_ms=1,  # very old, but age of creation does not matter
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteTaskStore]:
    opened = await SqliteTaskStore.open(tmp_path / "tasks.db")
    yield opened
    await opened.close()


async def test_ended_tasks_are_purged_after_retention_and_active_ones_kept(
    store: SqliteTaskStore,
) -> None:
    active = task("active").running()
    ended = task("ended").stopped(StopReason.API_STOP)
    async with store.transaction() as unit:
        await unit.insert(to_record(active))
        await unit.insert(to_record(ended))
    job = RetentionJob(store, retention_s=0.5, interval_s=0.05)

    # Right after it ended, the task is kept.
    assert await job.purge_once() == 0
    assert await store.get(APP, "room", "ended") is not None

    purging = asyncio.create_task(job.run_forever())
    try:
        deadline = time.monotonic() + 10
        while await store.get(APP, "room", "ended") is not None:
            assert time.monotonic() < deadline, "the ended task was never purged"
            await asyncio.sleep(0.05)
    finally:
        purging.cancel()
        await asyncio.gather(purging, return_exceptions=True)

    assert time.time() * 1000 - ended.end_time_ms >= 500
    assert await store.get(APP, "room", "active") is not None


async def test_the_cutoff_follows_the_clock(store: SqliteTaskStore) -> None:
    ended = task("ended").stopped(StopReason.SOURCE_ENDED)
    async with store.transaction() as unit:
        await unit.insert(to_record(ended))
    now_s = ended.end_time_ms / 1000
    job = RetentionJob(store, retention_s=3600, interval_s=60, clock=lambda: now_s)

    assert await job.purge_once() == 0
    now_s += 3600.5
    assert await job.purge_once() == 1
    assert await store.get(APP, "room", "ended") is None
