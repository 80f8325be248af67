"""Which node runs which task: node rows and task leases, in the shared store.

A node renews its row and the leases of its tasks every few seconds. A lease is taken
with one atomic upsert that succeeds only when the task has no lease, the lease is the
taker's own, or it has expired — so two nodes never hold one task at once, on either
backend, with no lock held across calls. A node that stops renewing (dead, frozen,
cut off) loses its leases when they expire; its workers were told the same deadline
and stop themselves before then (fencing), so the next holder never overlaps them.

Times are Unix milliseconds from the nodes' clocks; nodes must keep them in sync (NTP),
and the fencing margin covers small skew.

The SQL is shared by both stores: written with ``%s`` placeholders (PostgreSQL), and
``sqlite_sql`` turns them into SQLite's ``?``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from relaystream.store import TaskRecord


@dataclass(frozen=True)
class TaskLeaseKey:
    app_id: str
    room_id: str
    task_id: str


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    advertise_url: str
    lease_until_ms: int
    capacity: int  # running slots of the node
    running: int  # tasks it runs now
    draining: bool = False
    leases: int = 0  # task leases it holds (filled in by ``nodes()``)


@dataclass(frozen=True)
class TaskStats:
    key: TaskLeaseKey
    node_id: str
    written_ms: int
    stats: dict[str, Any]


class LeaseStore(Protocol):
    async def heartbeat(self, node: NodeInfo) -> None:
        """Insert or refresh this node's row."""
        ...

    async def nodes(self) -> list[NodeInfo]:
        """Every node row, with how many leases it holds, by id."""
        ...

    async def claim(self, key: TaskLeaseKey, node_id: str, now_ms: int, until_ms: int) -> bool:
        """Take (or extend) the task's lease; False when another node holds it."""
        ...

    async def renew(self, node_id: str, now_ms: int, until_ms: int) -> set[TaskLeaseKey]:
        """Extend this node's unexpired leases; the keys it still holds."""
        ...

    async def release(self, key: TaskLeaseKey, node_id: str) -> None: ...

    async def release_all(self, node_id: str) -> None: ...

    async def holder(self, key: TaskLeaseKey, now_ms: int) -> NodeInfo | None:
        """The node holding an unexpired lease on the task, if any."""
        ...

    async def unleased(
        self,
        statuses: tuple[int, ...],
        now_ms: int,
        limit: int,
        held_by: str = "",
        due_by_ms: int | None = None,
    ) -> list[TaskRecord]:
        """Tasks with one of ``statuses``, due by ``due_by_ms`` (``now_ms`` when
        None), and no unexpired lease (or one ``held_by`` that node: its own, from
        before a restart), oldest first."""
        ...

    async def set_draining(self, node_id: str, draining: bool) -> bool:
        """Mark a node as draining (or not); False when there is no such node."""
        ...

    async def put_stats(self, node_id: str, written_ms: int, stats: list[TaskStats]) -> None:
        """Replace the stats snapshots of these tasks (one transaction)."""
        ...

    async def get_stats(self, key: TaskLeaseKey) -> TaskStats | None: ...


HEARTBEAT = (
    "INSERT INTO nodes (node_id, advertise_url, lease_until_ms, capacity, running, draining)"
    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (node_id) DO UPDATE SET"
    " advertise_url = excluded.advertise_url, lease_until_ms = excluded.lease_until_ms,"
    " capacity = excluded.capacity, running = excluded.running"
)
NODES = (
    "SELECT n.node_id, n.advertise_url, n.lease_until_ms, n.capacity, n.running, n.draining,"
    " (SELECT count(*) FROM task_leases l WHERE l.node_id = n.node_id"
    " AND l.lease_until_ms >= %s) FROM nodes n ORDER BY n.node_id"
)
CLAIM = (
    "INSERT INTO task_leases (app_id, room_id, task_id, node_id, lease_until_ms)"
    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (app_id, room_id, task_id) DO UPDATE SET"
    " node_id = excluded.node_id, lease_until_ms = excluded.lease_until_ms"
    " WHERE task_leases.node_id = excluded.node_id OR task_leases.lease_until_ms < %s"
)
RENEW = "UPDATE task_leases SET lease_until_ms = %s WHERE node_id = %s AND lease_until_ms >= %s"
HELD = "SELECT app_id, room_id, task_id FROM task_leases WHERE node_id = %s AND lease_until_ms = %s"
RELEASE = (
    "DELETE FROM task_leases WHERE app_id = %s AND room_id = %s AND task_id = %s AND node_id = %s"
)
RELEASE_ALL = "DELETE FROM task_leases WHERE node_id = %s"
HOLDER = (
    "SELECT n.node_id, n.advertise_url, n.lease_until_ms, n.capacity, n.running, n.draining, 0"
    " FROM task_leases l JOIN nodes n ON n.node_id = l.node_id"
    " WHERE l.app_id = %s AND l.room_id = %s AND l.task_id = %s AND l.lease_until_ms >= %s"
)
# The status list is bound as single values: a fixed maximum of two statuses is enough
# for "active" (starting, running), and keeps the statement a literal on both backends.
UNLEASED = (
    "SELECT t.app_id, t.room_id, t.task_id, t.user_id, t.status, t.create_time_ms,"
    " t.end_time_ms, t.version, t.document FROM relay_tasks t LEFT JOIN task_leases l"
    " ON l.app_id = t.app_id AND l.room_id = t.room_id AND l.task_id = t.task_id"
    " WHERE t.status IN (%s, %s) AND t.start_time_ms <= %s"
    " AND (l.node_id IS NULL OR l.lease_until_ms < %s OR l.node_id = %s)"
    " ORDER BY t.create_time_ms LIMIT %s"
)
SET_DRAINING = "UPDATE nodes SET draining = %s WHERE node_id = %s"
PUT_STATS = (
    "INSERT INTO task_stats (app_id, room_id, task_id, node_id, written_ms, stats)"
    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (app_id, room_id, task_id) DO UPDATE SET"
    " node_id = excluded.node_id, written_ms = excluded.written_ms, stats = excluded.stats"
)
GET_STATS = (
    "SELECT app_id, room_id, task_id, node_id, written_ms, stats FROM task_stats"
    " WHERE app_id = %s AND room_id = %s AND task_id = %s"
)


def stats_values(node_id: str, written_ms: int, entry: TaskStats) -> tuple[Any, ...]:
    key = entry.key
    return (key.app_id, key.room_id, key.task_id, node_id, written_ms, json.dumps(entry.stats))


def to_stats(row: tuple[Any, ...]) -> TaskStats:
    app_id, room_id, task_id, node_id, written_ms, stats = row
    key = TaskLeaseKey(str(app_id), str(room_id), str(task_id))
    return TaskStats(key, str(node_id), int(written_ms), json.loads(stats))


def unleased_params(
    statuses: tuple[int, ...], now_ms: int, limit: int, held_by: str, due_by_ms: int | None
) -> tuple[int | str, ...]:
    if not 1 <= len(statuses) <= 2:
        raise ValueError("one or two statuses")
    due = now_ms if due_by_ms is None else due_by_ms
    return (statuses[0], statuses[-1], due, now_ms, held_by, limit)


def sqlite_sql(statement: str) -> str:
    return statement.replace("%s", "?")


def to_node(row: tuple[object, ...]) -> NodeInfo:
    node_id, url, until, capacity, running, draining, leases = row
    return NodeInfo(
        node_id=str(node_id),
        advertise_url=str(url),
        lease_until_ms=int(str(until)),
        capacity=int(str(capacity)),
        running=int(str(running)),
        draining=bool(draining),
        leases=int(str(leases)),
    )
