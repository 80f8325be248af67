"""Persistence of relay tasks behind one small interface (SQLite by default).

The store knows a task only as a ``TaskRecord``: the columns it indexes on plus a JSON
document it does not interpret, so the task model can grow without schema changes.

Several nodes may share one store, so nothing here trusts what a caller read earlier:
every change is a compare-and-set on the record's ``version``, made inside a
``TaskTransaction``, the unit of work that also carries the callback outbox record of
the same state change (no visible change without its event, no event without its
change). A writer whose version is stale loses with ``StaleVersion`` and
reads again.

    StoreConflict
     ├─ StaleVersion    the record changed (or went) since it was read
     ├─ TaskExists      an insert of a key that is already stored
     └─ UserTaken       another active task of the room publishes as that user id
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

# Status numbers are Volcengine's (1 starting, 2 running, 3 ended). The store needs to
# know one of them: an ended task frees its user id in its room and may be purged.
ENDED_STATUS = 3


@dataclass(frozen=True)
class TaskRecord:
    app_id: str
    room_id: str
    task_id: str
    user_id: str
    status: int
    create_time_ms: int
    document: dict[str, Any]
    end_time_ms: int = 0
    # 0 for a record not stored yet; the store sets 1 on insert and adds 1 on each update.
    version: int = 0

    def with_version(self, version: int) -> TaskRecord:
        return replace(self, version=version)


@dataclass(frozen=True)
class TaskQuery:
    """One page of an AppId's tasks, optionally of one room, by creation time."""

    app_id: str
    room_id: str | None = None
    offset: int = 0
    limit: int = 10
    newest_first: bool = True


@dataclass(frozen=True)
class TaskPage:
    total: int  # matching tasks in all pages
    records: list[TaskRecord]


class CallbackState(StrEnum):
    PENDING = "pending"  # to be sent (again) at ``next_attempt_ms``
    DELIVERED = "delivered"  # a receiver answered 2xx; purged after a while
    FAILED = "failed"  # the retry window is over; kept until redelivered or discarded


@dataclass(frozen=True)
class CallbackRecord:
    """One state-change event of a task, as the outbox keeps it.

    ``body`` is the event without its signature: it is signed when sent, with the
    secret configured then, so no secret is ever stored. ``seq`` orders one task's
    events; the store sets it when the record is committed. The retry window runs from
    ``window_start_ms``, the first attempt (0 until then): an event held back behind an
    earlier one of its task loses none of its window.
    """

    event_id: str
    app_id: str
    room_id: str
    task_id: str
    body: dict[str, Any]
    created_ms: int
    state: CallbackState = CallbackState.PENDING
    seq: int = 0
    attempts: int = 0
    next_attempt_ms: int = 0
    last_error: str = ""
    delivered_ms: int = 0
    window_start_ms: int = 0


class StoreConflict(Exception):
    """A write that the stored state refuses; the caller reads again and decides."""


class StaleVersion(StoreConflict):
    """The record's version is no longer the one the writer read."""


class TaskExists(StoreConflict):
    """An insert of a task key that is already stored."""


class UserTaken(StoreConflict):
    """Another active task of the same room publishes as this user id."""


class TaskTransaction(Protocol):
    """One unit of work: all of its writes commit together, or none does.

    A conflict is raised by the write itself or, for a store that sends its writes at
    commit (SQLite), when the ``transaction()`` block ends: callers handle
    ``StoreConflict`` around the whole block.
    """

    async def get(self, app_id: str, room_id: str, task_id: str) -> TaskRecord | None: ...

    async def insert(self, record: TaskRecord) -> TaskRecord:
        """Store a new task at version 1; ``TaskExists`` or ``UserTaken`` if it cannot be."""
        ...

    async def update(self, record: TaskRecord) -> TaskRecord:
        """Replace the stored task if it is still at ``record.version``, and return it at
        the next version; ``StaleVersion`` if it is not, ``UserTaken`` as for insert."""
        ...

    async def add_callback(self, record: CallbackRecord) -> None:
        """Queue a callback event; it is stored (with the next ``seq`` of its task) only
        if the unit commits."""
        ...


class TaskStore(Protocol):
    """Where tasks live; every state change is saved here before it is acted on."""

    async def get(self, app_id: str, room_id: str, task_id: str) -> TaskRecord | None: ...

    def transaction(self) -> AbstractAsyncContextManager[TaskTransaction]:
        """A unit of work; it commits when the block ends, and rolls back if it raises."""
        ...

    async def list_with_status(self, statuses: tuple[int, ...]) -> list[TaskRecord]: ...

    async def query(self, query: TaskQuery) -> TaskPage: ...

    async def purge_ended(self, ended_before_ms: int) -> int:
        """Delete tasks that ended before ``ended_before_ms`` and have no callback event
        pending or failed; how many went."""
        ...

    # The callback outbox (see ``relaystream.callbacks``).

    async def due_callbacks(
        self, now_ms: int, limit: int, skip_apps: Sequence[str] = ()
    ) -> list[CallbackRecord]:
        """Pending events due by ``now_ms`` that no earlier undelivered (pending or
        failed) event of the same task holds back, oldest due first; none of the
        ``skip_apps``."""
        ...

    async def lease_callback(self, event_id: str, now_ms: int, until_ms: int) -> bool:
        """Take a pending event due by ``now_ms`` for sending: nobody else picks it before
        ``until_ms`` (a crashed sender's event is due again then). False if it is no
        longer pending and due (another sender took it)."""
        ...

    async def settle_callback(self, record: CallbackRecord) -> None:
        """Store the outcome of a send: ``state``, ``attempts``, ``next_attempt_ms``,
        ``last_error``, ``delivered_ms``, ``window_start_ms`` of ``record``."""
        ...

    async def list_callbacks(
        self, app_id: str, states: Sequence[CallbackState], limit: int
    ) -> list[CallbackRecord]:
        """An AppId's events in those states, oldest first."""
        ...

    async def redeliver_callbacks(
        self, app_id: str, event_ids: Sequence[str] | None, now_ms: int
    ) -> int:
        """Make failed events (all of the AppId's, or those named) pending again, due now,
        with a new retry window from their next attempt; how many."""
        ...

    async def discard_callbacks(self, app_id: str, event_ids: Sequence[str] | None) -> int:
        """Delete failed events (all of the AppId's, or those named); how many."""
        ...

    async def purge_delivered_callbacks(self, delivered_before_ms: int) -> int:
        """Delete events delivered before ``delivered_before_ms``; how many."""
        ...

    async def close(self) -> None: ...
