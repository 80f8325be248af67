"""The task store on PostgreSQL, for several nodes sharing one database.

A pool of connections in autocommit mode: a read is one statement on any connection; a
unit of work holds one connection for its whole block, inside a real transaction, so its
compare-and-set writes run (and raise their conflicts) where they are made and commit
together when the block ends. Uniqueness (a task key, an active user id in a room) is
the database's own constraints, so it holds across nodes with no lock of ours.

Migrations take a transaction-scoped advisory lock: nodes that start together apply
each migration once, and the others wait and then see it applied.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors
from psycopg_pool import AsyncConnectionPool

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
from relaystream.store.leases import NodeInfo, TaskLeaseKey, TaskStats
from relaystream.store.migrations import MIGRATIONS, for_postgresql
from relaystream.store.rows import (
    callback_row,
    record_key,
    task_row,
    to_callback,
    to_record,
    update_row,
)

# A fixed key for pg_advisory_xact_lock: "relaystream migrations".
_MIGRATION_LOCK: Final = 0x72656C6179
_PURGE_BATCH: Final = 500
_POOL_MAX: Final = 8
_CONNECT_TIMEOUT_S: Final = 10.0

_KEY_CONSTRAINT: Final = "relay_tasks_pkey"

# Queries are whole literals; only the fixed ORDER BY direction is chosen at run time.
_SELECT = (
    "SELECT app_id, room_id, task_id, user_id, status, create_time_ms, end_time_ms, version,"
    " document FROM relay_tasks"
)
_GET = _SELECT + " WHERE app_id = %s AND room_id = %s AND task_id = %s"
_INSERT = (
    "INSERT INTO relay_tasks (app_id, room_id, task_id, user_id, status, create_time_ms,"
    " end_time_ms, version, document, start_time_ms)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_UPDATE = (
    "UPDATE relay_tasks SET user_id = %s, status = %s, create_time_ms = %s, end_time_ms = %s,"
    " version = %s, document = %s, start_time_ms = %s"
    " WHERE app_id = %s AND room_id = %s AND task_id = %s AND version = %s"
)
_WITH_STATUS = _SELECT + " WHERE status = ANY(%s) ORDER BY create_time_ms"
_COUNT_APP = "SELECT count(*) FROM relay_tasks WHERE app_id = %s"
_COUNT_ROOM = "SELECT count(*) FROM relay_tasks WHERE app_id = %s AND room_id = %s"
_PAGE_APP = _SELECT + " WHERE app_id = %s"
_PAGE_ROOM = _SELECT + " WHERE app_id = %s AND room_id = %s"
# A task with a callback event still pending or failed is kept (SPEC §3 Retention).
_PURGE = (
    "DELETE FROM relay_tasks WHERE (app_id, room_id, task_id) IN"
    " (SELECT app_id, room_id, task_id FROM relay_tasks t"
    " WHERE status = %s AND end_time_ms < %s AND NOT EXISTS (SELECT 1 FROM callback_events c"
    " WHERE c.app_id = t.app_id AND c.room_id = t.room_id AND c.task_id = t.task_id"
    " AND c.state <> 'delivered') LIMIT %s)"
)

# The callback outbox: the same rules as the SQLite store's (see there). A unit of
# work writes its events last, after its compare-and-set updates: the task's row lock
# it then holds makes "max(seq) + 1" safe against another node's unit on the same task.
_SELECT_CALLBACK = (
    "SELECT event_id, app_id, room_id, task_id, seq, body, state, attempts, next_attempt_ms,"
    " last_error, created_ms, delivered_ms, window_start_ms FROM callback_events"
)
_INSERT_CALLBACK = (
    "INSERT INTO callback_events (event_id, app_id, room_id, task_id, seq, body, state,"
    " attempts, next_attempt_ms, last_error, created_ms, delivered_ms, window_start_ms)"
    " SELECT %s, %s, %s, %s, coalesce(max(seq), 0) + 1, %s, %s, %s, %s, %s, %s, %s, %s"
    " FROM callback_events WHERE app_id = %s AND room_id = %s AND task_id = %s"
)
_DUE_CALLBACKS = (
    "SELECT event_id, app_id, room_id, task_id, seq, body, state, attempts, next_attempt_ms,"
    " last_error, created_ms, delivered_ms, window_start_ms FROM callback_events c"
    " WHERE state = 'pending' AND next_attempt_ms <= %s AND NOT (app_id = ANY(%s))"
    " AND NOT EXISTS (SELECT 1 FROM callback_events p WHERE p.app_id = c.app_id"
    " AND p.room_id = c.room_id AND p.task_id = c.task_id AND p.seq < c.seq"
    " AND p.state <> 'delivered')"
    " ORDER BY next_attempt_ms, created_ms LIMIT %s"
)
# The claim that keeps two nodes from sending one event at once: a conditional update
# that only one of them can win (the loser waits for the row lock, then finds the event
# no longer due). Until ``until_ms`` the event is the winner's; a sender that dies
# leaves it due again then, so delivery stays at least once.
_LEASE_CALLBACK = (
    "UPDATE callback_events SET next_attempt_ms = %s"
    " WHERE event_id = %s AND state = 'pending' AND next_attempt_ms <= %s"
)
_SETTLE_CALLBACK = (
    "UPDATE callback_events SET state = %s, attempts = %s, next_attempt_ms = %s,"
    " last_error = %s, delivered_ms = %s, window_start_ms = %s WHERE event_id = %s"
)
_LIST_CALLBACKS = (
    _SELECT_CALLBACK + " WHERE app_id = %s AND state = ANY(%s) ORDER BY created_ms, seq LIMIT %s"
)
_REDELIVER_CALLBACKS = (
    "UPDATE callback_events SET state = 'pending', next_attempt_ms = %s, window_start_ms = 0,"
    " last_error = '' WHERE app_id = %s AND state = 'failed'"
)
_DISCARD_CALLBACKS = "DELETE FROM callback_events WHERE app_id = %s AND state = 'failed'"
_ONLY_EVENTS = " AND event_id = ANY(%s)"
_PURGE_DELIVERED = (
    "DELETE FROM callback_events WHERE event_id IN (SELECT event_id FROM callback_events"
    " WHERE state = 'delivered' AND delivered_ms < %s LIMIT %s)"
)


def redacted_url(url: str) -> str:
    """The URL with its password left out, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


class PostgresTaskStore:
    def __init__(self, pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str) -> PostgresTaskStore:
        """Connect and migrate; ``psycopg.Error`` or ``PoolTimeout`` when it cannot."""
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=_POOL_MAX,
            open=False,
            kwargs={"autocommit": True},
            timeout=_CONNECT_TIMEOUT_S,
        )
        try:
            await pool.open(wait=True, timeout=_CONNECT_TIMEOUT_S)
            async with pool.connection() as conn:
                await _migrate(conn)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def get(self, app_id: str, room_id: str, task_id: str) -> TaskRecord | None:
        async with self._pool.connection() as conn:
            return await _get(conn, app_id, room_id, task_id)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[TaskTransaction]:
        async with self._pool.connection() as conn, conn.transaction():
            unit = _PostgresTransaction(conn)
            yield unit
            # Reached only when the block did not raise: its events, then the commit.
            for record in unit.callbacks:
                await conn.execute(_INSERT_CALLBACK, callback_row(record))

    async def list_with_status(self, statuses: tuple[int, ...]) -> list[TaskRecord]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_WITH_STATUS, (list(statuses),))
            return [to_record(row) for row in await cursor.fetchall()]

    async def query(self, query: TaskQuery) -> TaskPage:
        if query.room_id is None:
            count, page, params = _COUNT_APP, _PAGE_APP, [query.app_id]
        else:
            count, page, params = _COUNT_ROOM, _PAGE_ROOM, [query.app_id, query.room_id]
        direction = "DESC" if query.newest_first else "ASC"
        page += (
            f" ORDER BY create_time_ms {direction}, room_id {direction}, task_id {direction}"
            " LIMIT %s OFFSET %s"
        )
        async with self._pool.connection() as conn, conn.transaction():
            # One snapshot for the total and the page.
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            total_row = await (await conn.execute(count, params)).fetchone()
            rows = await (await conn.execute(page, [*params, query.limit, query.offset])).fetchall()
        total = int(total_row[0]) if total_row else 0
        return TaskPage(total=total, records=[to_record(row) for row in rows])

    async def purge_ended(self, ended_before_ms: int) -> int:
        return await self._purge(_PURGE, (ENDED_STATUS, ended_before_ms, _PURGE_BATCH))

    async def _purge(self, statement: str, params: tuple[Any, ...]) -> int:
        purged = 0
        async with self._pool.connection() as conn:
            while True:
                # Each batch commits on its own (autocommit): no long-held row locks.
                cursor = await conn.execute(statement, params)
                purged += cursor.rowcount
                if cursor.rowcount < _PURGE_BATCH:
                    return purged

    async def due_callbacks(
        self, now_ms: int, limit: int, skip_apps: Sequence[str] = ()
    ) -> list[CallbackRecord]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_DUE_CALLBACKS, (now_ms, list(skip_apps), limit))
            return [to_callback(row) for row in await cursor.fetchall()]

    async def lease_callback(self, event_id: str, now_ms: int, until_ms: int) -> bool:
        return await self._write(_LEASE_CALLBACK, (until_ms, event_id, now_ms)) == 1

    async def settle_callback(self, record: CallbackRecord) -> None:
        await self._write(
            _SETTLE_CALLBACK,
            (
                record.state.value,
                record.attempts,
                record.next_attempt_ms,
                record.last_error,
                record.delivered_ms,
                record.window_start_ms,
                record.event_id,
            ),
        )

    async def list_callbacks(
        self, app_id: str, states: Sequence[CallbackState], limit: int
    ) -> list[CallbackRecord]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                _LIST_CALLBACKS, (app_id, [state.value for state in states], limit)
            )
            return [to_callback(row) for row in await cursor.fetchall()]

    async def redeliver_callbacks(
        self, app_id: str, event_ids: Sequence[str] | None, now_ms: int
    ) -> int:
        if event_ids is None:
            return await self._write(_REDELIVER_CALLBACKS, (now_ms, app_id))
        return await self._write(
            _REDELIVER_CALLBACKS + _ONLY_EVENTS, (now_ms, app_id, list(event_ids))
        )

    async def discard_callbacks(self, app_id: str, event_ids: Sequence[str] | None) -> int:
        if event_ids is None:
            return await self._write(_DISCARD_CALLBACKS, (app_id,))
        return await self._write(_DISCARD_CALLBACKS + _ONLY_EVENTS, (app_id, list(event_ids)))

    async def purge_delivered_callbacks(self, delivered_before_ms: int) -> int:
        return await self._purge(_PURGE_DELIVERED, (delivered_before_ms, _PURGE_BATCH))

    async def _write(self, statement: str, params: tuple[Any, ...]) -> int:
        async with self._pool.connection() as conn:
            return int((await conn.execute(statement, params)).rowcount)

    async def schema_version(self) -> int:
        async with self._pool.connection() as conn:
            return await _schema_version(conn)

    # Leases (relaystream.store.leases): each is one statement, atomic on its own.

    async def heartbeat(self, node: NodeInfo) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                leases.HEARTBEAT,
                (
                    node.node_id,
                    node.advertise_url,
                    node.lease_until_ms,
                    node.capacity,
                    node.running,
                    int(node.draining),
                ),
            )

    async def nodes(self) -> list[NodeInfo]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(leases.NODES, (_now_ms(),))
            return [leases.to_node(row) for row in await cursor.fetchall()]

    async def claim(self, key: TaskLeaseKey, node_id: str, now_ms: int, until_ms: int) -> bool:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                leases.CLAIM, (key.app_id, key.room_id, key.task_id, node_id, until_ms, now_ms)
            )
            return cursor.rowcount == 1

    async def renew(self, node_id: str, now_ms: int, until_ms: int) -> set[TaskLeaseKey]:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(leases.RENEW, (until_ms, node_id, now_ms))
            cursor = await conn.execute(leases.HELD, (node_id, until_ms))
            return {TaskLeaseKey(*row) for row in await cursor.fetchall()}

    async def release(self, key: TaskLeaseKey, node_id: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(leases.RELEASE, (key.app_id, key.room_id, key.task_id, node_id))

    async def release_all(self, node_id: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(leases.RELEASE_ALL, (node_id,))

    async def holder(self, key: TaskLeaseKey, now_ms: int) -> NodeInfo | None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                leases.HOLDER, (key.app_id, key.room_id, key.task_id, now_ms)
            )
            row = await cursor.fetchone()
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
        async with self._pool.connection() as conn:
            cursor = await conn.execute(leases.UNLEASED, values)
            return [to_record(row) for row in await cursor.fetchall()]

    async def set_draining(self, node_id: str, draining: bool) -> bool:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(leases.SET_DRAINING, (int(draining), node_id))
            return cursor.rowcount == 1

    async def put_stats(self, node_id: str, written_ms: int, stats: list[TaskStats]) -> None:
        if not stats:
            return
        rows = [leases.stats_values(node_id, written_ms, entry) for entry in stats]
        async with (
            self._pool.connection() as conn,
            conn.transaction(),
            conn.cursor() as cursor,
        ):
            await cursor.executemany(leases.PUT_STATS, rows)

    async def get_stats(self, key: TaskLeaseKey) -> TaskStats | None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(leases.GET_STATS, (key.app_id, key.room_id, key.task_id))
            row = await cursor.fetchone()
            return leases.to_stats(row) if row else None

    async def close(self) -> None:
        await self._pool.close()


class _PostgresTransaction:
    """Writes run at once inside the open transaction, so conflicts raise here."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn
        self.callbacks: list[CallbackRecord] = []

    async def add_callback(self, record: CallbackRecord) -> None:
        self.callbacks.append(record)

    async def get(self, app_id: str, room_id: str, task_id: str) -> TaskRecord | None:
        return await _get(self._conn, app_id, room_id, task_id)

    async def insert(self, record: TaskRecord) -> TaskRecord:
        stored = record.with_version(1)
        try:
            await self._conn.execute(_INSERT, task_row(stored))
        except errors.UniqueViolation as exc:
            if exc.diag.constraint_name == _KEY_CONSTRAINT:
                raise TaskExists(record_key(record)) from None
            raise UserTaken(record_key(record)) from None
        return stored

    async def update(self, record: TaskRecord) -> TaskRecord:
        try:
            cursor = await self._conn.execute(
                _UPDATE,
                update_row(record),
            )
        except errors.UniqueViolation:
            raise UserTaken(record_key(record)) from None
        if cursor.rowcount != 1:
            raise StaleVersion(f"{record_key(record)} is no longer at version {record.version}")
        return record.with_version(record.version + 1)


async def _get(
    conn: psycopg.AsyncConnection[Any], app_id: str, room_id: str, task_id: str
) -> TaskRecord | None:
    row = await (await conn.execute(_GET, (app_id, room_id, task_id))).fetchone()
    return to_record(row) if row else None


async def _schema_version(conn: psycopg.AsyncConnection[Any]) -> int:
    row = await (await conn.execute("SELECT version FROM schema_version")).fetchone()
    return int(row[0]) if row else 0


async def _migrate(conn: psycopg.AsyncConnection[Any]) -> None:
    for target, statements in enumerate(MIGRATIONS, start=1):
        async with conn.transaction():
            # Held to the end of this transaction: one node migrates, the others wait.
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            if await _schema_version(conn) < target:
                for statement in statements:
                    await conn.execute(for_postgresql(statement))
                await conn.execute("DELETE FROM schema_version")
                await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (target,))


def _now_ms() -> int:
    return int(time.time() * 1000)
