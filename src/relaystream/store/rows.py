"""How records become row values and back, the same for every backend: the column
order of the task and callback tables, and the key a conflict names."""

from __future__ import annotations

import json
from typing import Any

from relaystream.store import CallbackRecord, CallbackState, TaskRecord


def record_key(record: TaskRecord) -> str:
    return f"{record.app_id}/{record.room_id}/{record.task_id}"


def task_row(record: TaskRecord) -> tuple[Any, ...]:
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
        start_time_ms(record),
    )


def start_time_ms(record: TaskRecord) -> int:
    """When the task is due (its Control's StartTimeStamp; 0 for at once), as stored in
    its own column for the scan of due unleased tasks."""
    control = record.document.get("control")
    seconds = control.get("start_timestamp_s", 0) if isinstance(control, dict) else 0
    return int(seconds or 0) * 1000


def callback_row(record: CallbackRecord) -> tuple[Any, ...]:
    return (
        record.event_id,
        record.app_id,
        record.room_id,
        record.task_id,
        json.dumps(record.body),
        record.state.value,
        record.attempts,
        record.next_attempt_ms,
        record.last_error,
        record.created_ms,
        record.delivered_ms,
        record.window_start_ms,
        record.app_id,
        record.room_id,
        record.task_id,
    )


def to_callback(row: tuple[Any, ...]) -> CallbackRecord:
    return CallbackRecord(
        event_id=str(row[0]),
        app_id=str(row[1]),
        room_id=str(row[2]),
        task_id=str(row[3]),
        seq=int(row[4]),
        body=json.loads(row[5]),
        state=CallbackState(row[6]),
        attempts=int(row[7]),
        next_attempt_ms=int(row[8]),
        last_error=str(row[9]),
        created_ms=int(row[10]),
        delivered_ms=int(row[11]),
        window_start_ms=int(row[12]),
    )


def to_record(row: tuple[Any, ...]) -> TaskRecord:
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


def update_row(record: TaskRecord) -> tuple[Any, ...]:
    """The parameters of a backend's compare-and-set UPDATE: new values, key, old version."""
    return (
        record.user_id,
        record.status,
        record.create_time_ms,
        record.end_time_ms,
        record.version + 1,
        json.dumps(record.document),
        start_time_ms(record),
        record.app_id,
        record.room_id,
        record.task_id,
        record.version,
    )
