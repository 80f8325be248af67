"""The default task store: one SQLite file in the data dir.

Two connections, each used by one thread of its own: reads go to one, so List and Get
never queue behind writers (WAL lets them read the last commit while a write is under
way); the other commits the units of work. Every call is one hop to a thread: a unit of
work collects its writes and commits them in a single hop (``BEGIN IMMEDIATE``, each
compare-and-set, ``COMMIT``), so a Start costs a few hops, not one per statement, and
no transaction stays open across an ``await``. Another process writing the same file
is waited for (``busy_timeout``) in that thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from relaystream.store import (
    ENDED_STATUS,
    CallbackRecord,
    CallbackState,
    StaleVersion,
    TaskExists,
    TaskPage,
    TaskQuery,
    TaskRecord,
    TaskTransaction,
    UserTaken,
    leases,
)
from relaystream.store.leases import NodeInfo, TaskLeaseKey, TaskStats, sqlite_sql
from relaystream.store.migrations import MIGRATIONS, for_sqlite
from relaystream.store.rows import (
    callback_row,
    record_key,
    task_row,
    to_callback,
    to_record,
    update_row,
)

# How long a writer waits for another connection's write lock before giving up.
_BUSY_TIMEOUT_S = 10.0
# Purges delete in batches so that no single transaction holds the write lock long.
_PURGE_BATCH = 500

# Queries are whole literals; only the fixed ORDER BY direction and the '?' placeholders
# of an IN list are ever put together at run time, never a value.
_SELECT = (
    "SELECT app_id, room_id, task_id, user_id, status, create_time_ms, end_time_ms, version,"
    " document FROM relay_tasks"
)
_GET = _SELECT + " WHERE app_id = ? AND room_id = ? AND task_id = ?"
_EXISTS = "SELECT 1 FROM relay_tasks WHERE app_id = ? AND room_id = ? AND task_id = ?"
_INSERT = (
    "INSERT INTO relay_tasks (app_id, room_id, task_id, user_id, status, create_time_ms,"
    " end_time_ms, version, document, start_time_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE = (
    "UPDATE relay_tasks SET user_id = ?, status = ?, create_time_ms = ?, end_time_ms = ?,"
    " version = ?, document = ?, start_time_ms = ?"
    " WHERE app_id = ? AND room_id = ? AND task_id = ? AND version = ?"
)
_COUNT_APP = "SELECT count(*) FROM relay_tasks WHERE app_id = ?"
_COUNT_ROOM = "SELECT count(*) FROM relay_tasks WHERE app_id = ? AND room_id = ?"
_PAGE_APP = _SELECT + " WHERE app_id = ?"
_PAGE_ROOM = _SELECT + " WHERE app_id = ? AND room_id = ?"
# A task with a callback event still pending or failed is kept (SPEC §3 Retention).
_PURGE = (
    "DELETE FROM relay_tasks WHERE rowid IN (SELECT rowid FROM relay_tasks t"
    " WHERE status = ? AND end_time_ms < ? AND NOT EXISTS (SELECT 1 FROM callback_events c"
    " WHERE c.app_id = t.app_id AND c.room_id = t.room_id AND c.task_id = t.task_id"
    " AND c.state <> 'delivered') LIMIT ?)"
)

_SELECT_CALLBACK = (
    "SELECT event_id, app_id, room_id, task_id, seq, body, state, attempts, next_attempt_ms,"
    " last_error, created_ms, delivered_ms, window_start_ms FROM callback_events"
)
# The next seq of the task is read in the same write transaction that inserts it.
_INSERT_CALLBACK = (
    "INSERT INTO callback_events (event_id, app_id, room_id, task_id, seq, body, state,"
    " attempts, next_attempt_ms, last_error, created_ms, delivered_ms, window_start_ms)"
    " SELECT ?, ?, ?, ?, coalesce(max(seq), 0) + 1, ?, ?, ?, ?, ?, ?, ?, ?"
    " FROM callback_events WHERE app_id = ? AND room_id = ? AND task_id = ?"
)
# Pending and due, with no earlier undelivered event of its task (being sent, waiting
# for its retry, or failed and waiting for an operator): one task's events go out one
# at a time, in order, and never past one that failed.
_DUE_CALLBACKS = (
    "SELECT event_id, app_id, room_id, task_id, seq, body, state, attempts, next_attempt_ms,"
    " last_error, created_ms, delivered_ms, window_start_ms FROM callback_events c"
    " WHERE state = 'pending' AND next_attempt_ms <= ?"
    " AND NOT EXISTS (SELECT 1 FROM callback_events p WHERE p.app_id = c.app_id"
    " AND p.room_id = c.room_id AND p.task_id = c.task_id AND p.seq < c.seq"
    " AND p.state <> 'delivered')"
)
_LEASE_CALLBACK = (
    "UPDATE callback_events SET next_attempt_ms = ?"
    " WHERE event_id = ? AND state = 'pending' AND next_attempt_ms <= ?"
)
_SETTLE_CALLBACK = (
    "UPDATE callback_events SET state = ?, attempts = ?, next_attempt_ms = ?, last_error = ?,"
    " delivered_ms = ?, window_start_ms = ? WHERE event_id = ?"
)
_LIST_CALLBACKS = _SELECT_CALLBACK + " WHERE app_id = ?"
_REDELIVER_CALLBACKS = (
    "UPDATE callback_events SET state = 'pending', next_attempt_ms = ?, window_start_ms = 0,"
    " last_error = '' WHERE app_id = ? AND state = 'failed'"
)
_DISCARD_CALLBACKS = "DELETE FROM callback_events WHERE app_id = ? AND state = 'failed'"
_PURGE_DELIVERED = (
    "DELETE FROM callback_events WHERE rowid IN (SELECT rowid FROM callback_events"
    " WHERE state = 'delivered' AND delivered_ms < ? LIMIT ?)"
)

T = TypeVar("T")


class _Connection:
    """One SQLite connection and the one thread that uses it."""

    def __init__(self, executor: ThreadPoolExecutor, db: sqlite3.Connection) -> None:
        self._executor = executor
        self._db = db

    @classmethod
    async def open(cls, path: Path, name: str) -> _Connection:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{name}")

        def connect() -> sqlite3.Connection:
            # isolation_level=None: no implicit transactions; each is begun explicitly.
            db = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
            # WAL: readers never wait for a writer; a crash loses no commit.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            return db

        try:
            db = await asyncio.get_running_loop().run_in_executor(executor, connect)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, db)

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, self._db)

    async def close(self) -> None:
        await self.run(lambda db: db.close())
        self._executor.shutdown(wait=True)


@dataclass(frozen=True)
class _Insert:
    record: TaskRecord  # as it will be stored, at version 1


@dataclass(frozen=True)
class _Update:
    record: TaskRecord  # as it was read: the version to compare and set


_Write = _Insert | _Update | CallbackRecord


class SqliteTaskStore:
    def __init__(self, reader: _Connection, writer: _Connection) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, path: Path) -> SqliteTaskStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await _Connection.open(path, "writer")
        try:
            await writer.run(_migrate)
            reader = await _Connection.open(path, "reader")
        except BaseException:
            await writer.close()
            raise
        return cls(reader, writer)

    async def get(self, app_id: str, room_id: str, task_id: str) -> TaskRecord | None:
        return await self._reader.run(lambda db: _get(db, app_id, room_id, task_id))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[TaskTransaction]:
        unit = _SqliteTransaction(self)
        yield unit
        # Reached only when the block did not raise: its writes commit together.
        if unit.writes:
            await self._writer.run(lambda db: _commit(db, unit.writes))

    async def list_with_status(self, statuses: tuple[int, ...]) -> list[TaskRecord]:
        # Only '?' placeholders are interpolated; the values are bound.
        query = _SELECT + f" WHERE status IN ({','.join('?' * len(statuses))})"
        query += " ORDER BY create_time_ms"
        rows = await self._reader.run(lambda db: db.execute(query, statuses).fetchall())
        return [to_record(row) for row in rows]

    async def query(self, query: TaskQuery) -> TaskPage:
        if query.room_id is None:
            count, page, params = _COUNT_APP, _PAGE_APP, [query.app_id]
        else:
            count, page, params = _COUNT_ROOM, _PAGE_ROOM, [query.app_id, query.room_id]
        # Both orders follow an index: (app_id, create_time_ms, room_id, task_id) or
        # (app_id, room_id, create_time_ms, task_id); the key columns break ties.
        direction = "DESC" if query.newest_first else "ASC"
        page += (
            f" ORDER BY create_time_ms {direction}, room_id {direction}, task_id {direction}"
            " LIMIT ? OFFSET ?"
        )

        def read(db: sqlite3.Connection) -> tuple[int, list[Any]]:
            # One read transaction: the total and the page come from the same snapshot.
            db.execute("BEGIN")
            try:
                total = int(db.execute(count, params).fetchone()[0])
                rows = db.execute(page, [*params, query.limit, query.offset]).fetchall()
            finally:
                db.execute("COMMIT")
            return total, rows

        total, rows = await self._reader.run(read)
        return TaskPage(total=total, records=[to_record(row) for row in rows])

    async def purge_ended(self, ended_before_ms: int) -> int:
        return await self._purge(_PURGE, (ENDED_STATUS, ended_before_ms, _PURGE_BATCH))

    async def _purge(self, statement: str, params: tuple[Any, ...]) -> int:
        purged = 0
        while True:
            deleted = await self._writer.run(lambda db: _write_once(db, statement, params))
            purged += deleted
            if deleted < _PURGE_BATCH:
                return purged

    async def due_callbacks(
        self, now_ms: int, limit: int, skip_apps: Sequence[str] = ()
    ) -> list[CallbackRecord]:
        query, params = _DUE_CALLBACKS, list[object]([now_ms])
        if skip_apps:
            # Only '?' placeholders are interpolated; the values are bound.
            query += f" AND app_id NOT IN ({','.join('?' * len(skip_apps))})"
            params.extend(skip_apps)
        query += " ORDER BY next_attempt_ms, created_ms LIMIT ?"
        rows = await self._reader.run(lambda db: db.execute(query, [*params, limit]).fetchall())
        return [to_callback(row) for row in rows]

    async def lease_callback(self, event_id: str, now_ms: int, until_ms: int) -> bool:
        params = (until_ms, event_id, now_ms)
        return await self._writer.run(lambda db: _write_once(db, _LEASE_CALLBACK, params)) == 1

    async def settle_callback(self, record: CallbackRecord) -> None:
        params = (
            record.state.value,
            record.attempts,
            record.next_attempt_ms,
            record.last_error,
            record.delivered_ms,
            record.window_start_ms,
            record.event_id,
        )
        await self._writer.run(lambda db: _write_once(db, _SETTLE_CALLBACK, params))

    async def list_callbacks(
        self, app_id: str, states: Sequence[CallbackState], limit: int
    ) -> list[CallbackRecord]:
        query = _LIST_CALLBACKS + f" AND state IN ({','.join('?' * len(states))})"
        query += " ORDER BY created_ms, seq LIMIT ?"
        params = [app_id, *(state.value for state in states), limit]
        rows = await self._reader.run(lambda db: db.execute(query, params).fetchall())
        return [to_callback(row) for row in rows]

    async def redeliver_callbacks(
        self, app_id: str, event_ids: Sequence[str] | None, now_ms: int
    ) -> int:
        statement, params = _for_events(_REDELIVER_CALLBACKS, [now_ms, app_id], event_ids)
        return await self._writer.run(lambda db: _write_once(db, statement, params))

    async def discard_callbacks(self, app_id: str, event_ids: Sequence[str] | None) -> int:
        statement, params = _for_events(_DISCARD_CALLBACKS, [app_id], event_ids)
        return await self._writer.run(lambda db: _write_once(db, statement, params))

    async def purge_delivered_callbacks(self, delivered_before_ms: int) -> int:
        return await self._purge(_PURGE_DELIVERED, (delivered_before_ms, _PURGE_BATCH))

    async def schema_version(self) -> int:
        return await self._reader.run(_schema_version)

    # Leases (relaystream.store.leases): one node on a SQLite file in practice, but the
    # same rules, so a restart and the supervisor work alike on both stores.

    async def heartbeat(self, node: NodeInfo) -> None:
        values = (
            node.node_id,
            node.advertise_url,
            node.lease_until_ms,
            node.capacity,
            node.running,
            int(node.draining),
        )
        await self._writer.run(lambda db: _write(db, leases.HEARTBEAT, values))

    async def nodes(self) -> list[NodeInfo]:
        now_ms = int(time.time() * 1000)
        rows = await self._reader.run(
            lambda db: db.execute(sqlite_sql(leases.NODES), (now_ms,)).fetchall()
        )
        return [leases.to_node(row) for row in rows]

    async def claim(self, key: TaskLeaseKey, node_id: str, now_ms: int, until_ms: int) -> bool:
        values = (key.app_id, key.room_id, key.task_id, node_id, until_ms, now_ms)
        return await self._writer.run(lambda db: _write(db, leases.CLAIM, values)) == 1

    async def renew(self, node_id: str, now_ms: int, until_ms: int) -> set[TaskLeaseKey]:
        def renew(db: sqlite3.Connection) -> set[TaskLeaseKey]:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(sqlite_sql(leases.RENEW), (until_ms, node_id, now_ms))
                rows = db.execute(sqlite_sql(leases.HELD), (node_id, until_ms)).fetchall()
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return {TaskLeaseKey(*row) for row in rows}

        return await self._writer.run(renew)

    async def release(self, key: TaskLeaseKey, node_id: str) -> None:
        values = (key.app_id, key.room_id, key.task_id, node_id)
        await self._writer.run(lambda db: _write(db, leases.RELEASE, values))

    async def release_all(self, node_id: str) -> None:
        await self._writer.run(lambda db: _write(db, leases.RELEASE_ALL, (node_id,)))

    async def holder(self, key: TaskLeaseKey, now_ms: int) -> NodeInfo | None:
        values = (key.app_id, key.room_id, key.task_id, now_ms)
        row = await self._reader.run(
            lambda db: db.execute(sqlite_sql(leases.HOLDER), values).fetchone()
        )
        return leases.to_node(row) if row else None

    async def unleased(
        self,
        statuses: tuple[int, ...],
        now_ms: int,
        limit: int,
        held_by: str = "",
        due_by_ms: int | None = None,
    ) -> list[TaskRecord]:
        values = leases.unleased_params(statuses, now_ms, limit, held_by, due_by_ms)
        rows = await self._reader.run(
            lambda db: db.execute(sqlite_sql(leases.UNLEASED), values).fetchall()
        )
        return [to_record(row) for row in rows]

    async def set_draining(self, node_id: str, draining: bool) -> bool:
        values = (int(draining), node_id)
        return await self._writer.run(lambda db: _write(db, leases.SET_DRAINING, values)) == 1

    async def put_stats(self, node_id: str, written_ms: int, stats: list[TaskStats]) -> None:
        rows = [leases.stats_values(node_id, written_ms, entry) for entry in stats]

        def put(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(sqlite_sql(leases.PUT_STATS), rows)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

        if rows:
            await self._writer.run(put)

    async def get_stats(self, key: TaskLeaseKey) -> TaskStats | None:
        values = (key.app_id, key.room_id, key.task_id)
        row = await self._reader.run(
            lambda db: db.execute(sqlite_sql(leases.GET_STATS), values).fetchone()
        )
        return leases.to_stats(row) if row else None

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()


class _SqliteTransaction:
    """Collects a unit of work's writes; the store commits them when the block ends, so
    a conflict (``TaskExists``, ``StaleVersion``, ``UserTaken``) is raised there."""

    def __init__(self, store: SqliteTaskStore) -> None:
        self._store = store
        self.writes: list[_Write] = []

    async def get(self, app_id: str, room_id: str, task_id: str) -> TaskRecord | None:
        # The last commit; what this unit writes is checked against it again at commit.
        return await self._store.get(app_id, room_id, task_id)

    async def insert(self, record: TaskRecord) -> TaskRecord:
        stored = record.with_version(1)
        self.writes.append(_Insert(stored))
        return stored

    async def update(self, record: TaskRecord) -> TaskRecord:
        self.writes.append(_Update(record))
        return record.with_version(record.version + 1)

    async def add_callback(self, record: CallbackRecord) -> None:
        self.writes.append(record)


def _commit(db: sqlite3.Connection, writes: list[_Write]) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        for write in writes:
            if isinstance(write, _Insert):
                _insert(db, write.record)
            elif isinstance(write, _Update):
                _update(db, write.record)
            else:
                _insert_callback(db, write)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _write(db: sqlite3.Connection, statement: str, values: tuple[Any, ...]) -> int:
    """One statement in autocommit mode; how many rows it changed."""
    return int(db.execute(sqlite_sql(statement), values).rowcount)


def _insert(db: sqlite3.Connection, record: TaskRecord) -> None:
    try:
        db.execute(_INSERT, task_row(record))
    except sqlite3.IntegrityError:
        if db.execute(_EXISTS, (record.app_id, record.room_id, record.task_id)).fetchone():
            raise TaskExists(record_key(record)) from None
        raise UserTaken(record_key(record)) from None


def _update(db: sqlite3.Connection, record: TaskRecord) -> None:
    try:
        cursor = db.execute(
            _UPDATE,
            update_row(record),
        )
    except sqlite3.IntegrityError:
        raise UserTaken(record_key(record)) from None
    if cursor.rowcount != 1:
        raise StaleVersion(f"{record_key(record)} is no longer at version {record.version}")


def _insert_callback(db: sqlite3.Connection, record: CallbackRecord) -> None:
    db.execute(_INSERT_CALLBACK, callback_row(record))


def _write_once(db: sqlite3.Connection, statement: str, params: Sequence[Any]) -> int:
    """One statement in its own write transaction; how many rows it changed."""
    db.execute("BEGIN IMMEDIATE")
    try:
        changed = int(db.execute(statement, params).rowcount)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return changed


def _for_events(
    statement: str, params: list[Any], event_ids: Sequence[str] | None
) -> tuple[str, list[Any]]:
    """``statement`` narrowed to ``event_ids`` when given (only '?' are interpolated)."""
    if event_ids is None:
        return statement, params
    return statement + f" AND event_id IN ({','.join('?' * len(event_ids))})", [
        *params,
        *event_ids,
    ]


def _get(db: sqlite3.Connection, app_id: str, room_id: str, task_id: str) -> TaskRecord | None:
    row = db.execute(_GET, (app_id, room_id, task_id)).fetchone()
    return to_record(row) if row else None


def _schema_version(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT version FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def _migrate(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    for target, statements in enumerate(MIGRATIONS, start=1):
        # The version is read again inside each transaction: another process opening
        # the same file may have applied the migration meanwhile.
        db.execute("BEGIN IMMEDIATE")
        try:
            if _schema_version(db) < target:
                for statement in statements:
                    db.execute(for_sqlite(statement))
                db.execute("DELETE FROM schema_version")
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
