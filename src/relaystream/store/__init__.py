"""Persistence of relay tasks behind one small interface (SQLite by default).

The store knows a task only as a ``TaskRecord``: the columns it indexes on plus a JSON
document it does not interpret, so the task model can grow without schema changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class TaskRecord:
    app_id: str
    room_id: str
    task_id: str
    status: int
    create_time_ms: int
    document: dict[str, Any]


class TaskStore(Protocol):
    """Where tasks live; every state change is saved here before it is acted on."""

    async def get(self, app_id: str, room_id: str, task_id: str) -> TaskRecord | None: ...

    async def save(self, record: TaskRecord) -> None:
        """Insert the record, or replace the stored one with the same key."""
        ...

    async def list_with_status(self, statuses: tuple[int, ...]) -> list[TaskRecord]: ...

    async def close(self) -> None: ...
