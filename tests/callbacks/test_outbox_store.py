"""The outbox in both stores (SQLite, and PostgreSQL on a throwaway cluster): an event
commits with its task change or not at all, a task's events come out one at a time in
order, a lease hides an event being sent (from another node too), and a task with
undelivered events outlives its retention."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from relaystream.callbacks.events import VisibleState, event_record
from relaystream.store import CallbackRecord, CallbackState, StaleVersion
from relaystream.store.postgres import PostgresTaskStore
from relaystream.store.sqlite import SqliteTaskStore
from relaystream.tasks.model import RelayControl, RelayTask, StopReason, TaskKey, to_record
from tests.support.postgres import PostgresCluster

APP = "5f8a1c2b3d4e5f6a7b8c9d0e"
NOW_MS = 1_790_000_000_000


AnyStore = SqliteTaskStore | PostgresTaskStore


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AnyStore]:
    opened: AnyStore
    if request.param == "sqlite":
        opened = await SqliteTaskStore.open(tmp_path / "tasks.db")
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        opened = await PostgresTaskStore.open(cluster.fresh_database())
    yield opened
    await opened.close()


def relay_task(task_id: str) -> RelayTask:
    return RelayTask(
        key=TaskKey(APP, "room-1", task_id),
        user_id=f"user-{task_id}",
        token="001token",
        control=RelayControl(stream_url="https://cdn.example.com/a.m3u8"),
        create_time_ms=NOW_MS,
    )


def event_of(task: RelayTask, status: int, reason: str = "", at_ms: int = NOW_MS) -> CallbackRecord:
    state = VisibleState(
        app_id=task.key.app_id,
        room_id=task.key.room_id,
        task_id=task.key.task_id,
        user_id=task.user_id,
        business_id="",
        stream_url=task.control.stream_url,
        start_timestamp_s=0,
        status=status,
        reason=reason,
    )
    return event_record(state, at_ms)


async def started(store: AnyStore, task: RelayTask) -> CallbackRecord:
    event = event_of(task, 1)
    async with store.transaction() as unit:
        await unit.insert(to_record(task))
        await unit.add_callback(event)
    return event


async def test_an_event_commits_with_its_change_or_not_at_all(store: AnyStore) -> None:
    task = relay_task("t1")
    first = await started(store, task)
    stored = await store.get(APP, "room-1", "t1")
    assert stored is not None

    # A lost compare-and-set: neither the change nor its event is stored.
    stopped = task.stopped(StopReason.API_STOP)
    with pytest.raises(StaleVersion):
        async with store.transaction() as unit:
            await unit.update(to_record(stopped, stored.version + 5))
            await unit.add_callback(event_of(task, 3, "ApiStop"))
    # A unit that raises commits nothing either.
    with pytest.raises(RuntimeError):
        async with store.transaction() as unit:
            await unit.update(to_record(stopped, stored.version))
            await unit.add_callback(event_of(task, 3, "ApiStop"))
            raise RuntimeError("the caller gave up")

    pending = await store.list_callbacks(APP, [CallbackState.PENDING], 10)
    assert [record.event_id for record in pending] == [first.event_id]
    assert pending[0].seq == 1 and pending[0].body == first.body
    assert (await store.get(APP, "room-1", "t1")) == stored


async def test_a_tasks_events_come_out_one_at_a_time_in_order(store: AnyStore) -> None:
    a, b = relay_task("a"), relay_task("b")
    a1, b1 = await started(store, a), await started(store, b)
    stored = await store.get(APP, "room-1", "a")
    assert stored is not None
    a2 = event_of(a, 3, "ApiStop")
    async with store.transaction() as unit:
        await unit.update(to_record(a.stopped(StopReason.API_STOP), stored.version))
        await unit.add_callback(a2)

    due = await store.due_callbacks(NOW_MS, 10)
    assert {record.event_id for record in due} == {a1.event_id, b1.event_id}

    # Being sent, a1 is nobody else's, and still holds a2 back.
    assert await store.lease_callback(a1.event_id, NOW_MS, NOW_MS + 10_000)
    assert not await store.lease_callback(a1.event_id, NOW_MS, NOW_MS + 10_000)
    due = await store.due_callbacks(NOW_MS + 1, 10)
    assert [record.event_id for record in due] == [b1.event_id]
    # A sender that died: the lease runs out and a1 is due again (at least once).
    due = await store.due_callbacks(NOW_MS + 10_000, 10)
    assert a1.event_id in {record.event_id for record in due}

    [leased] = [record for record in due if record.event_id == a1.event_id]
    await store.settle_callback(
        replace(leased, state=CallbackState.DELIVERED, attempts=1, delivered_ms=NOW_MS)
    )
    due = await store.due_callbacks(NOW_MS + 10_000, 10)
    assert {record.event_id for record in due} == {a2.event_id, b1.event_id}
    assert [r.seq for r in due if r.event_id == a2.event_id] == [2]
    assert await store.due_callbacks(NOW_MS + 10_000, 10, skip_apps=[APP]) == []

    # A failed event holds its task's later ones back until an operator acts.
    [b1_due] = [record for record in due if record.event_id == b1.event_id]
    await store.settle_callback(replace(b1_due, state=CallbackState.FAILED, last_error="HTTP 500"))
    b2 = event_of(b, 2)
    stored_b = await store.get(APP, "room-1", "b")
    assert stored_b is not None
    async with store.transaction() as unit:
        await unit.update(to_record(b.running(), stored_b.version))
        await unit.add_callback(b2)
    due = await store.due_callbacks(NOW_MS + 10_000, 10)
    assert [record.event_id for record in due] == [a2.event_id]
    assert await store.discard_callbacks(APP, [b1.event_id]) == 1
    due = await store.due_callbacks(NOW_MS + 10_000, 10)
    assert {record.event_id for record in due} == {a2.event_id, b2.event_id}


async def test_a_task_is_kept_while_an_event_is_undelivered(store: AnyStore) -> None:
    task = relay_task("kept")
    event = await started(store, task)
    stored = await store.get(APP, "room-1", "kept")
    assert stored is not None
    async with store.transaction() as unit:
        await unit.update(to_record(task.stopped(StopReason.API_STOP), stored.version))
    far_future_ms = NOW_MS * 10

    assert await store.purge_ended(far_future_ms) == 0  # pending
    await store.settle_callback(
        replace(event, state=CallbackState.FAILED, attempts=3, window_start_ms=NOW_MS)
    )
    assert await store.purge_ended(far_future_ms) == 0  # failed
    assert await store.redeliver_callbacks(APP, None, NOW_MS + 1) == 1
    [again] = await store.due_callbacks(NOW_MS + 1, 10)
    # Pending, due now, its window to open again at its next attempt.
    assert (again.state, again.window_start_ms, again.last_error) == (
        CallbackState.PENDING,
        0,
        "",
    )
    await store.settle_callback(
        replace(again, state=CallbackState.DELIVERED, delivered_ms=NOW_MS + 5)
    )
    assert await store.purge_ended(far_future_ms) == 1
    # Delivered events go after their own retention.
    assert await store.purge_delivered_callbacks(NOW_MS + 5) == 0
    assert await store.purge_delivered_callbacks(NOW_MS + 6) == 1
    assert await store.list_callbacks(APP, list(CallbackState), 10) == []


async def test_only_failed_events_are_redelivered_or_discarded(store: AnyStore) -> None:
    one, two = await started(store, relay_task("one")), await started(store, relay_task("two"))
    await store.settle_callback(replace(one, state=CallbackState.FAILED, last_error="HTTP 500"))
    await store.settle_callback(replace(two, state=CallbackState.FAILED, last_error="HTTP 500"))
    three = await started(store, relay_task("three"))  # pending: not an operator's to touch

    assert await store.discard_callbacks(APP, [three.event_id]) == 0
    assert await store.discard_callbacks("another-app-id-000000000", None) == 0
    assert await store.discard_callbacks(APP, [one.event_id]) == 1
    assert await store.redeliver_callbacks(APP, [three.event_id], NOW_MS) == 0
    assert await store.redeliver_callbacks(APP, None, NOW_MS) == 1
    left = await store.list_callbacks(APP, [CallbackState.PENDING, CallbackState.FAILED], 10)
    assert {record.event_id for record in left} == {two.event_id, three.event_id}


async def test_nodes_racing_for_one_event_let_exactly_one_send_it(
    postgres: PostgresCluster,
) -> None:
    # Three nodes' stores on one PostgreSQL, each claiming every due event at once, as
    # their delivery workers would: each event goes to one node only.
    url = postgres.fresh_database()
    nodes = [await PostgresTaskStore.open(url) for _ in range(3)]
    try:
        events = [await started(nodes[0], relay_task(f"task-{n}")) for n in range(10)]

        async def claim_all(node: PostgresTaskStore) -> list[str]:
            won = []
            for record in await node.due_callbacks(NOW_MS, 100):
                if await node.lease_callback(record.event_id, NOW_MS, NOW_MS + 10_000):
                    won.append(record.event_id)
            return won

        claims = await asyncio.gather(*(claim_all(node) for node in nodes))
        claimed = [event_id for won in claims for event_id in won]
        assert sorted(claimed) == sorted(event.event_id for event in events)
    finally:
        for node in nodes:
            await node.close()
