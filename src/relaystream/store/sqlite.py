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
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from relaystream.store import (
    ENDED_STATUS,
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
    " end_time_ms, version, document) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE = (
    "UPDATE relay_tasks SET user_id = ?, status = ?, create_time_ms = ?, end_time_ms = ?,"
    " version = ?, document = ? WHERE app_id = ? AND room_id = ? AND task_id = ? AND version = ?"
)
_COUNT_APP = "SELECT count(*) FROM relay_tasks WHERE app_id = ?"
_COUNT_ROOM = "SELECT count(*) FROM relay_tasks WHERE app_id = ? AND room_id = ?"
_PAGE_APP = _SELECT + " WHERE app_id = ?"
_PAGE_ROOM = _SELECT + " WHERE app_id = ? AND room_id = ?"
_PURGE = (
    "DELETE FROM relay_tasks WHERE rowid IN (SELECT rowid FROM relay_tasks"
    " WHERE status = ? AND end_time_ms < ? LIMIT ?)"
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
        return [_to_record(row) for row in rows]

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
        return TaskPage(total=total, records=[_to_record(row) for row in rows])

    async def purge_ended(self, ended_before_ms: int) -> int:
        def purge_batch(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            try:
                deleted = db.execute(_PURGE, (ENDED_STATUS, ended_before_ms, _PURGE_BATCH)).rowcount
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return int(deleted)

        purged = 0
        while True:
            deleted = await self._writer.run(purge_batch)
            purged += deleted
            if deleted < _PURGE_BATCH:
                return purged

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
        self, statuses: tuple[int, ...], now_ms: int, limit: int, held_by: str = ""
    ) -> list[TaskRecord]:
        values = leases.unleased_params(statuses, now_ms, limit, held_by)
        rows = await self._reader.run(
            lambda db: db.execute(sqlite_sql(leases.UNLEASED), values).fetchall()
        )
        return [_to_record(row) for row in rows]

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
        self.writes: list[_Insert | _Update] = []

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


def _commit(db: sqlite3.Connection, writes: list[_Insert | _Update]) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        for write in writes:
            if isinstance(write, _Insert):
                _insert(db, write.record)
            else:
                _update(db, write.record)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _write(db: sqlite3.Connection, statement: str, values: tuple[Any, ...]) -> int:
    """One statement in autocommit mode; how many rows it changed."""
    return int(db.execute(sqlite_sql(statement), values).rowcount)


def _insert(db: sqlite3.Connection, record: TaskRecord) -> None:
    try:
        db.execute(_INSERT, _values(record))
    except sqlite3.IntegrityError:
        if db.execute(_EXISTS, (record.app_id, record.room_id, record.task_id)).fetchone():
            raise TaskExists(_key(record)) from None
        raise UserTaken(_key(record)) from None


def _update(db: sqlite3.Connection, record: TaskRecord) -> None:
    try:
        cursor = db.execute(
            _UPDATE,
            (
                record.user_id,
                record.status,
                record.create_time_ms,
                record.end_time_ms,
                record.version + 1,
                json.dumps(record.document),
                record.app_id,
                record.room_id,
                record.task_id,
                record.version,
            ),
        )
    except sqlite3.IntegrityError:
        raise UserTaken(_key(record)) from None
    if cursor.rowcount != 1:
        raise StaleVersion(f"{_key(record)} is no longer at version {record.version}")


def _get(db: sqlite3.Connection, app_id: str, room_id: str, task_id: str) -> TaskRecord | None:
    row = db.execute(_GET, (app_id, room_id, task_id)).fetchone()
    return _to_record(row) if row else None


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


def _key(record: TaskRecord) -> str:
    return f"{record.app_id}/{record.room_id}/{record.task_id}"


def _values(record: TaskRecord) -> tuple[Any, ...]:
    return (
        record.app_id,
        record.room_id,
        record.task_id,
        record.user_id,
        record.status,
        record.create_time_ms,
        record.end_time_ms,
        record.version,
        json.dumps(record.document),
    )


def _to_record(row: tuple[Any, ...]) -> TaskRecord:
    app_id, room_id, task_id, user_id, status, created, ended, version, document = row
    return TaskRecord(
        app_id=str(app_id),
        room_id=str(room_id),
        task_id=str(task_id),
        user_id=str(user_id),
        status=int(status),
        create_time_ms=int(created),
        end_time_ms=int(ended),
        version=int(version),
        document=json.loads(document),
    )
