"""The task store's schema, as an ordered list of migrations.

A database records how many migrations it has applied (``schema_version``); opening it
applies the rest, each in its own transaction, so a file made by any earlier release
is brought up to date in place. Append new migrations; never edit an applied one.

The statements are plain SQL that SQLite and PostgreSQL both accept; where the two
differ, a ``Dialects`` statement holds one text for each. PostgreSQL needs BIGINT for
millisecond times (its INTEGER is 32 bits); SQLite stores any integer in INTEGER.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Dialects:
    sqlite: str
    postgresql: str


Statement = str | Dialects
Migration = tuple[Statement, ...]


def for_sqlite(statement: Statement) -> str:
    return statement.sqlite if isinstance(statement, Dialects) else statement


def for_postgresql(statement: Statement) -> str:
    return statement.postgresql if isinstance(statement, Dialects) else statement


_CREATE_TASKS = """CREATE TABLE IF NOT EXISTS relay_tasks (
            app_id TEXT NOT NULL,
            room_id TEXT NOT NULL,
            task_id TEXT NOT NULL,
            status INTEGER NOT NULL,
            create_time_ms {time} NOT NULL,
            document TEXT NOT NULL,
            PRIMARY KEY (app_id, room_id, task_id)
        )"""

MIGRATIONS: Final[tuple[Migration, ...]] = (
    # 1: the first release's table. IF NOT EXISTS, because databases made before
    # migrations existed have it already (and no schema_version table).
    (
        Dialects(
            sqlite=_CREATE_TASKS.format(time="INTEGER"),
            postgresql=_CREATE_TASKS.format(time="BIGINT"),
        ),
        "CREATE INDEX IF NOT EXISTS relay_tasks_status ON relay_tasks (status)",
        "CREATE INDEX IF NOT EXISTS relay_tasks_created ON relay_tasks (app_id, create_time_ms)",
    ),
    # 2: versions for compare-and-set, the user id for the one-publisher-per-user rule,
    # the end time for retention, and the indexes List pages through.
    (
        "ALTER TABLE relay_tasks ADD COLUMN user_id TEXT NOT NULL DEFAULT ''",
        Dialects(
            sqlite="ALTER TABLE relay_tasks ADD COLUMN end_time_ms INTEGER NOT NULL DEFAULT 0",
            postgresql="ALTER TABLE relay_tasks ADD COLUMN end_time_ms BIGINT NOT NULL DEFAULT 0",
        ),
        "ALTER TABLE relay_tasks ADD COLUMN version INTEGER NOT NULL DEFAULT 1",
        # Rows written before this migration hold both values in their document only.
        Dialects(
            sqlite="""UPDATE relay_tasks SET
            user_id = coalesce(json_extract(document, '$.user_id'), ''),
            end_time_ms = coalesce(json_extract(document, '$.end_time_ms'), 0)""",
            postgresql="""UPDATE relay_tasks SET
            user_id = coalesce(document::json ->> 'user_id', ''),
            end_time_ms = coalesce((document::json ->> 'end_time_ms')::bigint, 0)""",
        ),
        "DROP INDEX IF EXISTS relay_tasks_created",
        """CREATE INDEX relay_tasks_app_order
            ON relay_tasks (app_id, create_time_ms, room_id, task_id)""",
        """CREATE INDEX relay_tasks_room_order
            ON relay_tasks (app_id, room_id, create_time_ms, task_id)""",
        # Two active tasks may not publish as the same user in one room, on any node.
        """CREATE UNIQUE INDEX relay_tasks_active_user
            ON relay_tasks (app_id, room_id, user_id) WHERE status <> 3""",
        # Status lookups (resume) and the retention purge (ended, by end time).
        "DROP INDEX IF EXISTS relay_tasks_status",
        "CREATE INDEX relay_tasks_status_end ON relay_tasks (status, end_time_ms)",
    ),
    # 3: the callback outbox. A record is written in the same transaction as the task
    # change it reports; ``seq`` orders one task's events (max + 1 of the task, safe
    # because that transaction also compare-and-sets the task's row); the body is stored
    # unsigned. ``window_start_ms`` is the first attempt (0 before it; a redelivery
    # sets it back to 0). Times are BIGINT: unix milliseconds overflow PostgreSQL's
    # 32-bit INTEGER.
    (
        """CREATE TABLE callback_events (
            event_id TEXT PRIMARY KEY,
            app_id TEXT NOT NULL,
            room_id TEXT NOT NULL,
            task_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_ms BIGINT NOT NULL,
            last_error TEXT NOT NULL DEFAULT '',
            created_ms BIGINT NOT NULL,
            delivered_ms BIGINT NOT NULL DEFAULT 0,
            window_start_ms BIGINT NOT NULL DEFAULT 0,
            UNIQUE (app_id, room_id, task_id, seq)
        )""",
        # The delivery worker's scan: pending events by due time.
        "CREATE INDEX callback_events_due ON callback_events (state, next_attempt_ms)",
        # Operators list an AppId's events by state; the purge finds delivered ones.
        "CREATE INDEX callback_events_app ON callback_events (app_id, state, created_ms)",
    ),
    # 4: several nodes on one database: the nodes that are up, and which node runs
    # each active task until when (a lease it renews; an expired one may be taken).
    (
        """CREATE TABLE nodes (
            node_id TEXT PRIMARY KEY,
            advertise_url TEXT NOT NULL,
            lease_until_ms BIGINT NOT NULL,
            capacity INTEGER NOT NULL,
            running INTEGER NOT NULL,
            draining INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE task_leases (
            app_id TEXT NOT NULL,
            room_id TEXT NOT NULL,
            task_id TEXT NOT NULL,
            node_id TEXT NOT NULL,
            lease_until_ms BIGINT NOT NULL,
            PRIMARY KEY (app_id, room_id, task_id)
        )""",
        "CREATE INDEX task_leases_node ON task_leases (node_id, lease_until_ms)",
        # The latest live statistics of each running task, written by its node.
        """CREATE TABLE task_stats (
            app_id TEXT NOT NULL,
            room_id TEXT NOT NULL,
            task_id TEXT NOT NULL,
            node_id TEXT NOT NULL,
            written_ms BIGINT NOT NULL,
            stats TEXT NOT NULL,
            PRIMARY KEY (app_id, room_id, task_id)
        )""",
    ),
    # 5: when each task is due (its StartTimeStamp, in ms; 0 for "at once"), so that
    # nodes take a scheduled task only when it is due, and the scan for unleased tasks
    # reads the due active ones by index, not every active task.
    (
        Dialects(
            sqlite="ALTER TABLE relay_tasks ADD COLUMN start_time_ms INTEGER NOT NULL DEFAULT 0",
            postgresql="ALTER TABLE relay_tasks ADD COLUMN start_time_ms BIGINT NOT NULL DEFAULT 0",
        ),
        Dialects(
            sqlite="""UPDATE relay_tasks SET start_time_ms =
            coalesce(json_extract(document, '$.control.start_timestamp_s'), 0) * 1000""",
            postgresql="""UPDATE relay_tasks SET start_time_ms = coalesce(
            (document::json -> 'control' ->> 'start_timestamp_s')::bigint, 0) * 1000""",
        ),
        "CREATE INDEX relay_tasks_status_due ON relay_tasks (status, start_time_ms)",
    ),
)

LATEST_VERSION: Final = len(MIGRATIONS)
