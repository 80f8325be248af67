"""The default task store: one SQLite file in the data dir.

Two connections: reads outside a transaction go to one, so List and Get never queue
behind writers (WAL lets them read the last commit while a write is under way); the
other carries the transactions, one at a time, each ``BEGIN IMMEDIATE`` so that SQLite
takes its write lock up front and another process on the same file waits for it
(``busy_timeout``) instead of failing halfway.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from relaystream.store import (
    ENDED_STATUS,
    StaleVersion,
    TaskExists,
    TaskPage,
    TaskQuery,
    TaskRecord,
    TaskTransaction,
    UserTaken,
)
from relaystream.store.migrations import MIGRATIONS

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


async def _connect(path: Path) -> aiosqlite.Connection:
    # isolation_level=None: no implicit transactions; each one is begun explicitly.
    connection = await aiosqlite.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
    # WAL: readers never wait for a writer; a crash loses no commit.
    await connection.execute("PRAGMA journal_mode=WAL")
    await connection.execute("PRAGMA synchronous=NORMAL")
    return connection


class SqliteTaskStore:
    def __init__(self, reader: aiosqlite.Connection, writer: aiosqlite.Connection) -> None:
        self._reader = reader
        self._writer = writer
        # One transaction at a time on the writer connection: two interleaved on one
        # connection would be one transaction.
        self._write_turn = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> SqliteTaskStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path)
        try:
            await _migrate(writer)
            reader = await _connect(path)
        except BaseException:
            await writer.close()
            raise
        return cls(reader, writer)

    async def get(self, app_id: str, room_id: str, task_id: str) -> TaskRecord | None:
        return await _get(self._reader, app_id, room_id, task_id)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[TaskTransaction]:
        async with self._write_turn:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTransaction(self._writer)
            except BaseException:
                await self._writer.rollback()
                raise
            await self._writer.commit()

    async def list_with_status(self, statuses: tuple[int, ...]) -> list[TaskRecord]:
        # Only '?' placeholders are interpolated; the values are bound.
        marks = ",".join("?" * len(statuses))
        query = _SELECT + f" WHERE status IN ({marks}) ORDER BY create_time_ms"
        async with self._reader.execute(query, statuses) as cursor:
            rows = await cursor.fetchall()
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
        async with self._reader.execute(count, params) as cursor:
            row = await cursor.fetchone()
        total = int(row[0]) if row else 0
        async with self._reader.execute(page, [*params, query.limit, query.offset]) as cursor:
            rows = await cursor.fetchall()
        return TaskPage(total=total, records=[_to_record(row) for row in rows])

    async def purge_ended(self, ended_before_ms: int) -> int:
        purged = 0
        while True:
            async with self.transaction():
                cursor = await self._writer.execute(
                    "DELETE FROM relay_tasks WHERE rowid IN (SELECT rowid FROM relay_tasks"
                    " WHERE status = ? AND end_time_ms < ? LIMIT ?)",
                    (ENDED_STATUS, ended_before_ms, _PURGE_BATCH),
                )
                deleted = cursor.rowcount
            purged += deleted
            if deleted < _PURGE_BATCH:
                return purged

    async def schema_version(self) -> int:
        return await _schema_version(self._reader)

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()


class _SqliteTransaction:
    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection

    async def get(self, app_id: str, room_id: str, task_id: str) -> TaskRecord | None:
        return await _get(self._db, app_id, room_id, task_id)

    async def insert(self, record: TaskRecord) -> TaskRecord:
        stored = record.with_version(1)
        try:
            await self._db.execute(_INSERT, _values(stored))
        except sqlite3.IntegrityError:
            if await self.get(record.app_id, record.room_id, record.task_id) is not None:
                raise TaskExists(_key(record)) from None
            raise UserTaken(_key(record)) from None
        return stored

    async def update(self, record: TaskRecord) -> TaskRecord:
        stored = record.with_version(record.version + 1)
        try:
            cursor = await self._db.execute(
                _UPDATE,
                (
                    stored.user_id,
                    stored.status,
                    stored.create_time_ms,
                    stored.end_time_ms,
                    stored.version,
                    json.dumps(stored.document),
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
        return stored


async def _get(
    db: aiosqlite.Connection, app_id: str, room_id: str, task_id: str
) -> TaskRecord | None:
    async with db.execute(_GET, (app_id, room_id, task_id)) as cursor:
        row = await cursor.fetchone()
    return _to_record(row) if row else None


async def _schema_version(db: aiosqlite.Connection) -> int:
    async with db.execute("SELECT version FROM schema_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def _migrate(db: aiosqlite.Connection) -> None:
    await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    for target, statements in enumerate(MIGRATIONS, start=1):
        # The version is read again inside each transaction: another process opening
        # the same file may have applied the migration meanwhile.
        await db.execute("BEGIN IMMEDIATE")
        try:
            current = await _schema_version(db)
            if current < target:
                for statement in statements:
                    await db.execute(statement)
                await db.execute("DELETE FROM schema_version")
                await db.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))
        except BaseException:
            await db.rollback()
            raise
        await db.commit()


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


def _to_record(row: aiosqlite.Row | tuple[object, ...]) -> TaskRecord:
    app_id, room_id, task_id, user_id, status, created, ended, version, document = tuple(row)
    return TaskRecord(
        app_id=str(app_id),
        room_id=str(room_id),
        task_id=str(task_id),
        user_id=str(user_id),
        status=int(str(status)),
        create_time_ms=int(str(created)),
        end_time_ms=int(str(ended)),
        version=int(str(version)),
        document=json.loads(str(document)),
    )
