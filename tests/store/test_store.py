"""Stories for the task stores, each run on SQLite (a real file) and on PostgreSQL (a
throwaway cluster): closed and reopened like a restart, shared by two stores as two
nodes share one database. A few are about SQLite files only (their names say so)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from relaystream.media.spec import MediaType, StreamMode
from relaystream.store import StaleVersion, TaskExists, TaskQuery, TaskRecord, UserTaken, leases
from relaystream.store.migrations import LATEST_VERSION
from relaystream.store.postgres import PostgresTaskStore
from relaystream.store.sqlite import _PURGE, SqliteTaskStore
from relaystream.tasks.model import (
    RelayControl,
    RelayTask,
    StopReason,
    TaskKey,
    TaskStatus,
    from_record,
    to_record,
)
from tests.support.postgres import PostgresCluster

APP = "5f8a1c2b3d4e5f6a7b8c9d0e"
OTHER_APP = "aaaaaaaaaaaaaaaaaaaaaaaa"
ACTIVE = (int(TaskStatus.STARTING), int(TaskStatus.RUNNING))
LATER_S = 2_000_000_000  # a StartTimeStamp in 2033


def relay_task(
    task_id: str,
    *,
    room_id: str = "room-1",
    created_ms: int = 1_000,
    app_id: str = APP,
    user_id: str | None = None,
) -> RelayTask:
    return RelayTask(
        key=TaskKey(app_id, room_id, task_id),
        user_id=user_id or f"user-{task_id}",
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


async def insert(store: AnyStore, task: RelayTask) -> TaskRecord:
    async with store.transaction() as unit:
        return await unit.insert(to_record(task))


async def read(store: AnyStore, key: TaskKey) -> TaskRecord:
    record = await store.get(key.app_id, key.room_id, key.task_id)
    assert record is not None
    return record


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "relaystream.db"  # the directory does not exist yet


AnyStore = SqliteTaskStore | PostgresTaskStore
# Opens one more store on the test's database, as another node or a restart would.
OpenStore = Callable[[], Awaitable[AnyStore]]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, db_path: Path) -> OpenStore:
    if request.param == "sqlite":

        async def open_sqlite() -> AnyStore:
            return await SqliteTaskStore.open(db_path)

        return open_sqlite
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    url = cluster.fresh_database()

    async def open_postgresql() -> AnyStore:
        return await PostgresTaskStore.open(url)

    return open_postgresql


@pytest.fixture
async def store(open_store: OpenStore) -> AsyncIterator[AnyStore]:
    opened = await open_store()
    yield opened
    await opened.close()


async def test_an_inserted_task_reads_back_equal_at_version_1(store: AnyStore) -> None:
    task = relay_task("task-1").running()

    stored = await insert(store, task)
    record = await read(store, task.key)

    assert record == stored
    assert record.version == 1
    assert from_record(record) == task


async def test_an_unknown_task_is_none(store: AnyStore) -> None:
    await insert(store, relay_task("task-1"))

    assert await store.get(APP, "room-1", "task-2") is None
    assert await store.get(APP, "room-2", "task-1") is None
    assert await store.get(OTHER_APP, "room-1", "task-1") is None


async def test_inserting_a_stored_key_again_is_refused(store: AnyStore) -> None:
    first = await insert(store, relay_task("task-1"))

    with pytest.raises(TaskExists):
        await insert(store, relay_task("task-1", user_id="someone-else"))

    assert await read(store, TaskKey(APP, "room-1", "task-1")) == first


async def test_an_update_at_the_read_version_replaces_the_task(store: AnyStore) -> None:
    task = relay_task("task-1")
    stored = await insert(store, task)
    ended = task.running().stopped(StopReason.SOURCE_ENDED)

    async with store.transaction() as unit:
        updated = await unit.update(to_record(ended, stored.version))

    record = await read(store, task.key)
    assert record == updated
    assert record.version == 2
    assert from_record(record) == ended
    assert record.end_time_ms == ended.end_time_ms > 0


async def test_an_update_at_a_stale_version_loses_and_changes_nothing(
    store: AnyStore,
) -> None:
    task = relay_task("task-1")
    stale = await insert(store, task)
    async with store.transaction() as unit:
        current = await unit.update(to_record(task.running(), stale.version))

    with pytest.raises(StaleVersion):
        async with store.transaction() as unit:
            await unit.update(to_record(task.stopped(StopReason.API_STOP), stale.version))

    assert await read(store, task.key) == current


async def test_two_store_writers_racing_on_one_task_exactly_one_wins(
    open_store: OpenStore,
) -> None:
    # Two nodes: two stores (each with its own connections) on one database. Both
    # read the task, then both try to end it, each for its own reason.
    node_a = await open_store()
    node_b = await open_store()
    try:
        task = relay_task("task-1").running()
        await insert(node_a, task)
        read_a, read_b = await read(node_a, task.key), await read(node_b, task.key)
        assert read_a.version == read_b.version == 1

        async def end(store: AnyStore, seen: TaskRecord, reason: StopReason) -> str:
            ended = from_record(seen).stopped(reason)
            try:
                async with store.transaction() as unit:
                    await unit.update(to_record(ended, seen.version))
            except StaleVersion:
                return "lost"
            return "won"

        outcomes = await asyncio.gather(
            end(node_a, read_a, StopReason.API_STOP),
            end(node_b, read_b, StopReason.IDLE_TIMEOUT),
        )

        assert sorted(outcomes) == ["lost", "won"]
        winner = StopReason.API_STOP if outcomes[0] == "won" else StopReason.IDLE_TIMEOUT
        for store in (node_a, node_b):
            final = await read(store, task.key)
            assert final.version == 2
            assert from_record(final).stop_reason is winner
    finally:
        await node_a.close()
        await node_b.close()


async def test_a_failed_unit_of_work_leaves_nothing_behind(store: AnyStore) -> None:
    task = relay_task("task-1")

    with pytest.raises(RuntimeError, match="changed my mind"):
        async with store.transaction() as unit:
            await unit.insert(to_record(task))
            await unit.insert(to_record(relay_task("task-2")))
            raise RuntimeError("changed my mind")

    assert await store.get(APP, "room-1", "task-1") is None
    assert await store.get(APP, "room-1", "task-2") is None
    await insert(store, task)  # and the store still takes writes
    assert (await read(store, task.key)).version == 1


async def test_one_user_has_one_active_task_per_room(store: AnyStore) -> None:
    await insert(store, relay_task("task-1", user_id="singer"))

    with pytest.raises(UserTaken):
        await insert(store, relay_task("task-2", user_id="singer"))
    # Another room, or another app, is another place to publish.
    await insert(store, relay_task("task-3", user_id="singer", room_id="room-2"))
    await insert(store, relay_task("task-4", user_id="singer", app_id=OTHER_APP))

    # Once the first task ended, the user id is free again in its room.
    first = await read(store, TaskKey(APP, "room-1", "task-1"))
    async with store.transaction() as unit:
        await unit.update(to_record(from_record(first).stopped(StopReason.API_STOP), 1))
    await insert(store, relay_task("task-2", user_id="singer"))
    # ...so restarting the ended one as the same user is refused.
    ended = await read(store, TaskKey(APP, "room-1", "task-1"))
    with pytest.raises(UserTaken):
        async with store.transaction() as unit:
            await unit.update(to_record(relay_task("task-1", user_id="singer"), ended.version))


async def test_the_same_task_id_in_two_rooms_is_two_tasks(store: AnyStore) -> None:
    here = relay_task("task-1", room_id="room-1")
    there = relay_task("task-1", room_id="room-2").running()

    await insert(store, here)
    await insert(store, there)

    assert from_record(await read(store, here.key)) == here
    assert from_record(await read(store, there.key)) == there


async def test_tasks_survive_closing_and_reopening_the_store(open_store: OpenStore) -> None:
    store = await open_store()
    running = relay_task("task-1").running()
    ended = relay_task("task-2").stopped(StopReason.API_STOP, "stopped by the user")
    await insert(store, running)
    await insert(store, ended)
    await store.close()

    reopened = await open_store()
    try:
        assert from_record(await read(reopened, running.key)) == running
        assert from_record(await read(reopened, ended.key)) == ended
        assert await reopened.schema_version() == LATEST_VERSION
    finally:
        await reopened.close()


async def test_listing_by_status_in_creation_order(store: AnyStore) -> None:
    starting = relay_task("c", created_ms=3_000)
    running = relay_task("a", created_ms=1_000).running()
    also_running = relay_task("b", created_ms=2_000).running()
    ended = relay_task("d", created_ms=500).stopped(StopReason.EXPIRED)
    for task in (starting, ended, also_running, running):
        await insert(store, task)

    active = await store.list_with_status((int(TaskStatus.STARTING), int(TaskStatus.RUNNING)))
    finished = await store.list_with_status((int(TaskStatus.ENDED),))

    assert [r.task_id for r in active] == ["a", "b", "c"]
    assert [from_record(r) for r in active] == [running, also_running, starting]
    assert [r.task_id for r in finished] == ["d"]
    assert await store.list_with_status(()) == []


async def test_pages_of_an_apps_tasks_by_creation_time(store: AnyStore) -> None:
    # 12 tasks in two rooms, created 1 s apart; one more in another app.
    for n in range(12):
        room = "room-even" if n % 2 == 0 else "room-odd"
        await insert(store, relay_task(f"t{n:02}", room_id=room, created_ms=1_000 * (n + 1)))
    await insert(store, relay_task("elsewhere", app_id=OTHER_APP, created_ms=99_000))

    newest = await store.query(TaskQuery(APP, limit=5))
    assert newest.total == 12
    assert [r.task_id for r in newest.records] == ["t11", "t10", "t09", "t08", "t07"]
    last = await store.query(TaskQuery(APP, offset=10, limit=5))
    assert [r.task_id for r in last.records] == ["t01", "t00"]
    oldest = await store.query(TaskQuery(APP, offset=1, limit=3, newest_first=False))
    assert [r.task_id for r in oldest.records] == ["t01", "t02", "t03"]
    odd = await store.query(TaskQuery(APP, room_id="room-odd", limit=100))
    assert odd.total == 6
    assert [r.task_id for r in odd.records] == ["t11", "t09", "t07", "t05", "t03", "t01"]
    beyond = await store.query(TaskQuery(APP, offset=50))
    assert (beyond.total, beyond.records) == (12, [])
    nothing = await store.query(TaskQuery(APP, room_id="no-such-room"))
    assert (nothing.total, nothing.records) == (0, [])


async def test_the_page_queries_use_sqlite_indexes(db_path: Path) -> None:
    await (await SqliteTaskStore.open(db_path)).close()
    with sqlite3.connect(db_path) as db:
        for sql, params in (
            (
                "SELECT * FROM relay_tasks WHERE app_id = ?"
                " ORDER BY create_time_ms DESC, room_id DESC, task_id DESC LIMIT 10",
                (APP,),
            ),
            (
                "SELECT * FROM relay_tasks WHERE app_id = ? AND room_id = ?"
                " ORDER BY create_time_ms, room_id, task_id LIMIT 10",
                (APP, "room-1"),
            ),
            ("SELECT count(*) FROM relay_tasks WHERE app_id = ? AND room_id = ?", (APP, "r")),
            (_PURGE, (3, 5, 500)),
        ):
            plan = " ".join(str(row[-1]) for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            assert "INDEX" in plan, (sql, plan)
            assert "TEMP B-TREE" not in plan, (sql, plan)
        purge = db.execute(f"EXPLAIN QUERY PLAN {_PURGE}", (3, 5, 500))
        assert "end_time_ms<?" in " ".join(str(row[-1]) for row in purge)


def scheduled(task: RelayTask, start_s: int) -> RelayTask:
    return replace(task, control=replace(task.control, start_timestamp_s=start_s))


async def due_ids(store: AnyStore, due_by_ms: int) -> list[str]:
    records = await store.unleased(ACTIVE, now_ms=5_000, limit=10, due_by_ms=due_by_ms)
    return [record.task_id for record in records]


async def test_the_scan_for_unleased_tasks_finds_only_those_due(store: AnyStore) -> None:
    await insert(store, relay_task("now", created_ms=2_000).running())
    later = scheduled(relay_task("later", created_ms=1_000), LATER_S)
    await insert(store, later)

    assert await due_ids(store, due_by_ms=5_000) == ["now"]
    assert await due_ids(store, due_by_ms=LATER_S * 1000) == ["later", "now"]
    # An update keeps the start time: the task is still not due.
    async with store.transaction() as unit:
        await unit.update(
            replace(await read(store, later.key), document={**to_record(later).document})
        )
    assert await due_ids(store, due_by_ms=5_000) == ["now"]


async def test_the_scan_for_due_unleased_tasks_uses_an_index(db_path: Path) -> None:
    await (await SqliteTaskStore.open(db_path)).close()
    with sqlite3.connect(db_path) as db:
        params = leases.unleased_params(ACTIVE, 5_000, 10, "", 5_000)
        sql = leases.sqlite_sql(leases.UNLEASED)
        plan = " ".join(str(row[-1]) for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "relay_tasks_status_due (status=? AND start_time_ms<?)" in plan, plan


async def test_purging_removes_only_tasks_ended_before_the_cutoff(store: AnyStore) -> None:
    old = relay_task("old").stopped(StopReason.API_STOP)
    recent = relay_task("recent").stopped(StopReason.API_STOP)
    active = relay_task("active").running()
    for task in (old, recent, active):
        await insert(store, task)
    cutoff_ms = old.end_time_ms + 1
    async with store.transaction() as unit:
        record = await read(store, recent.key)
        moved = replace(record, end_time_ms=cutoff_ms + 10)
        await unit.update(moved)

    assert await store.purge_ended(cutoff_ms) == 1

    assert await store.get(APP, "room-1", "old") is None
    assert await store.get(APP, "room-1", "recent") is not None
    assert await store.get(APP, "room-1", "active") is not None
    assert await store.purge_ended(cutoff_ms) == 0


# The schema of the first release, as its files are on disk: no schema_version table.
SKELETON_SCHEMA = """
CREATE TABLE relay_tasks (
    app_id TEXT NOT NULL, room_id TEXT NOT NULL, task_id TEXT NOT NULL,
    status INTEGER NOT NULL, create_time_ms INTEGER NOT NULL, document TEXT NOT NULL,
    PRIMARY KEY (app_id, room_id, task_id)
);
CREATE INDEX relay_tasks_status ON relay_tasks (status);
CREATE INDEX relay_tasks_created ON relay_tasks (app_id, create_time_ms);
"""


async def test_a_sqlite_file_from_the_first_release_is_migrated_in_place(db_path: Path) -> None:
    running = relay_task("running", created_ms=2_000).running()
    ended = relay_task("ended", created_ms=1_000).stopped(StopReason.SOURCE_ENDED)
    waiting = scheduled(relay_task("waiting", created_ms=500), LATER_S)
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as db:
        db.executescript(SKELETON_SCHEMA)
        for task in (running, ended, waiting):
            record = to_record(task)
            db.execute(
                "INSERT INTO relay_tasks VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.app_id,
                    record.room_id,
                    record.task_id,
                    record.status,
                    record.create_time_ms,
                    json.dumps(record.document),
                ),
            )
    db.close()

    store = await SqliteTaskStore.open(db_path)
    try:
        assert await store.schema_version() == LATEST_VERSION
        got = await read(store, running.key)
        assert from_record(got) == running
        assert (got.version, got.user_id) == (1, running.user_id)
        assert (await read(store, ended.key)).end_time_ms == ended.end_time_ms
        page = await store.query(TaskQuery(APP))
        assert [r.task_id for r in page.records] == ["running", "ended", "waiting"]
        # The scheduled task's start time was read from its document.
        assert await due_ids(store, due_by_ms=5_000) == ["running"]
        assert await due_ids(store, due_by_ms=LATER_S * 1000) == ["waiting", "running"]
        # The migrated rows take part in the new rules at once.
        with pytest.raises(UserTaken):
            await insert(store, relay_task("again", user_id=running.user_id))
        assert await store.purge_ended(ended.end_time_ms + 1) == 1
    finally:
        await store.close()

    reopened = await SqliteTaskStore.open(db_path)  # nothing left to migrate
    try:
        assert await reopened.schema_version() == LATEST_VERSION
        assert from_record(await read(reopened, running.key)) == running
    finally:
        await reopened.close()


async def test_nodes_opening_a_new_database_together_migrate_it_once(
    open_store: OpenStore,
) -> None:
    stores = await asyncio.gather(*(open_store() for _ in range(3)))
    try:
        assert [await s.schema_version() for s in stores] == [LATEST_VERSION] * 3
        stored = await insert(stores[0], relay_task("task-1"))
        assert [await s.get(APP, "room-1", "task-1") for s in stores] == [stored] * 3
    finally:
        for opened in stores:
            await opened.close()


async def test_the_document_is_kept_as_given(store: AnyStore) -> None:
    # The store does not interpret the document: any JSON object round-trips.
    record = TaskRecord(
        app_id=APP,
        room_id="room-é",
        task_id="task-1",
        user_id="u",
        status=2,
        create_time_ms=1_700_000_000_000,
        document={"nested": {"list": [1, 2.5, None, True]}, "text": "中文 ✓"},
    )

    async with store.transaction() as unit:
        stored = await unit.insert(record)

    assert stored == record.with_version(1)
    assert await store.get(APP, "room-é", "task-1") == stored
