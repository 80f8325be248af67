"""The RelayStreamStateChanged event: made from what a user can see of a task.

A user sees a task's ``(status, reason)`` pair (List, Get, the room). One event is made
per change of that pair: 1 → 2 when media reaches the room, 2 → 1 while a live source is
reconnected, → 3 with its stop reason, and status 1 when a run is started. A change a
user cannot see (an Update, a Loop restart, a saved VOD position) makes none.

The event's body is kept unsigned: ``signing`` adds the signature when it is sent.
"""

from __future__ import annotations

import json
import secrets
import string
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from relaystream.store import CallbackRecord

EVENT_TYPE = "RelayStreamStateChanged"
EVENT_VERSION = "2020-12-01"
NONCE_LENGTH = 4
_NONCE_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class VisibleState:
    """What a user sees of one task, and the fields its events carry."""

    app_id: str
    room_id: str
    task_id: str
    user_id: str
    business_id: str
    stream_url: str
    start_timestamp_s: int
    status: int
    reason: str = ""  # the stop reason of an ended task, else empty
    message: str = ""  # the stop detail, if any

    @property
    def pair(self) -> tuple[int, str]:
        return self.status, self.reason


def makes_event(before: VisibleState | None, after: VisibleState) -> bool:
    """Whether going from ``before`` (None: a new run) to ``after`` is an event."""
    return before is None or before.pair != after.pair


def event_record(state: VisibleState, now_ms: int) -> CallbackRecord:
    """The outbox record of the event that ``state`` was reached at ``now_ms``."""
    event_id = uuid.uuid4().hex
    body: dict[str, Any] = {
        "EventType": EVENT_TYPE,
        "EventData": event_data(state),
        "EventTime": rfc3339(now_ms),
        "EventId": event_id,
        "AppId": state.app_id,
        "Version": EVENT_VERSION,
        "Nonce": "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(NONCE_LENGTH)),
    }
    return CallbackRecord(
        event_id=event_id,
        app_id=state.app_id,
        room_id=state.room_id,
        task_id=state.task_id,
        body=body,
        created_ms=now_ms,
        next_attempt_ms=now_ms,
    )


def event_data(state: VisibleState) -> str:
    """``EventData``: a JSON document carried as a string (and signed as one)."""
    return json.dumps(
        {
            "AppId": state.app_id,
            "BusinessId": state.business_id,
            "RoomId": state.room_id,
            "TaskId": state.task_id,
            "UserId": state.user_id,
            "StreamUrl": state.stream_url,
            "Status": state.status,
            "StartTimeStamp": state.start_timestamp_s,
            "Msg": state.message,
            "Reason": state.reason,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def rfc3339(time_ms: int) -> str:
    """``2026-11-30T03:36:10.123Z``."""
    moment = datetime.fromtimestamp(time_ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
