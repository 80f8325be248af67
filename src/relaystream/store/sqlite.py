"""The default task store: one SQLite file in the data dir."""

from __future__ import annotations

import json
from pathlib import Path

import aiosqlite

from relaystream.store import TaskRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS relay_tasks (
    app_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    status INTEGER NOT NULL,
    create_time_ms INTEGER NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (app_id, room_id, task_id)
);
CREATE INDEX IF NOT EXISTS relay_tasks_status ON relay_tasks (status);
CREATE INDEX IF NOT EXISTS relay_tasks_created ON relay_tasks (app_id, create_time_ms);
"""

_SELECT = "SELECT app_id, room_id, task_id, status, create_time_ms, document FROM relay_tasks"


class SqliteTaskStore:
    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection

    @classmethod
    async def open(cls, path: Path) -> SqliteTaskStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = await aiosqlite.connect(path)
        try:
            # WAL: readers (List/Get) never wait for a writer; a crash loses no commit.
            await connection.execute("PRAGMA journal_mode=WAL")
            await connection.execute("PRAGMA synchronous=NORMAL")
            await connection.executescript(_SCHEMA)
            await connection.commit()
        except BaseException:
            # The connection's thread would otherwise keep the process alive.
            await connection.close()
            raise
        return cls(connection)

    async def get(self, app_id: str, room_id: str, task_id: str) -> TaskRecord | None:
        async with self._db.execute(
            f"{_SELECT} WHERE app_id = ? AND room_id = ? AND task_id = ?",
            (app_id, room_id, task_id),
        ) as cursor:
            row = await cursor.fetchone()
        return _to_record(row) if row else None

    async def save(self, record: TaskRecord) -> None:
        await self._db.execute(
            "INSERT OR REPLACE INTO relay_tasks"
            " (app_id, room_id, task_id, status, create_time_ms, document)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.app_id,
                record.room_id,
                record.task_id,
                record.status,
                record.create_time_ms,
                json.dumps(record.document),
            ),
        )
        await self._db.commit()

    async def list_with_status(self, statuses: tuple[int, ...]) -> list[TaskRecord]:
        # Only '?' placeholders are interpolated; the values are bound.
        marks = ",".join("?" * len(statuses))
        query = f"{_SELECT} WHERE status IN ({marks}) ORDER BY create_time_ms"
        async with self._db.execute(query, statuses) as cursor:
            rows = await cursor.fetchall()
        return [_to_record(row) for row in rows]

    async def close(self) -> None:
        await self._db.close()


def _to_record(row: aiosqlite.Row | tuple[object, ...]) -> TaskRecord:
    app_id, room_id, task_id, status, create_time_ms, document = tuple(row)
    return TaskRecord(
        app_id=str(app_id),
        room_id=str(room_id),
        task_id=str(task_id),
        status=int(str(status)),
        create_time_ms=int(str(create_time_ms)),
        document=json.loads(str(document)),
    )
