"""The RelayTask and its state machine.

Status follows Volcengine: 1 starting (scheduled, connecting, reconnecting), 2 running
(media is flowing into the room), 3 ended, with a stop reason.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from enum import IntEnum, StrEnum
from typing import Any

from relaystream.store import TaskRecord
from relaystream.tasks.control import RelayControl, control_from_plain, control_to_plain

__all__ = [
    "InvalidTransition",
    "RelayControl",
    "RelayTask",
    "StopReason",
    "TaskKey",
    "TaskStatus",
    "from_record",
    "now_ms",
    "to_record",
]


class TaskStatus(IntEnum):
    STARTING = 1
    RUNNING = 2
    ENDED = 3


class StopReason(StrEnum):
    API_STOP = "ApiStop"
    IDLE_TIMEOUT = "IdleTimeout"
    EXPIRED = "Expired"
    SOURCE_ENDED = "SourceEnded"
    SOURCE_ERROR = "SourceError"
    TOKEN_INVALID = "TokenInvalid"  # noqa: S105 - a reason, not a secret


class InvalidTransition(Exception):
    """A state change the state machine does not allow (a bug, not a user error)."""


@dataclass(frozen=True, order=True)
class TaskKey:
    app_id: str
    room_id: str
    task_id: str

    def __str__(self) -> str:
        return f"{self.app_id}/{self.room_id}/{self.task_id}"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class RelayTask:
    """One relay task; immutable, each state change makes a new value."""

    key: TaskKey
    user_id: str
    token: str
    control: RelayControl
    business_id: str = ""
    max_idle_s: int = 300
    status: TaskStatus = TaskStatus.STARTING
    stop_reason: StopReason | None = None
    stop_detail: str = ""
    create_time_ms: int = field(default_factory=now_ms)
    start_time_ms: int = 0
    end_time_ms: int = 0
    # Where a VOD had got to, saved now and then, so a restarted run resumes near it.
    resume_position_s: float = 0.0

    @property
    def active(self) -> bool:
        return self.status is not TaskStatus.ENDED

    def running(self) -> RelayTask:
        """Media has started flowing into the room."""
        if self.status is not TaskStatus.STARTING:
            raise InvalidTransition(f"{self.key}: {self.status.name} -> RUNNING")
        # StartTime is when media first flowed; reconnects and restarts keep it.
        return replace(
            self, status=TaskStatus.RUNNING, start_time_ms=self.start_time_ms or now_ms()
        )

    def at_position(self, position_s: float) -> RelayTask:
        return replace(self, resume_position_s=position_s)

    def reconnecting(self) -> RelayTask:
        if self.status is not TaskStatus.RUNNING:
            raise InvalidTransition(f"{self.key}: {self.status.name} -> STARTING")
        return replace(self, status=TaskStatus.STARTING)

    def stopped(self, reason: StopReason, detail: str = "") -> RelayTask:
        if self.status is TaskStatus.ENDED:
            raise InvalidTransition(f"{self.key}: already ended")
        return replace(
            self,
            status=TaskStatus.ENDED,
            stop_reason=reason,
            stop_detail=detail,
            end_time_ms=now_ms(),
        )


def to_record(task: RelayTask, version: int = 0) -> TaskRecord:
    """The task as the store keeps it; ``version`` is the one it was read at."""
    document: dict[str, Any] = asdict(task)
    del document["key"]
    document["control"] = control_to_plain(task.control)
    return TaskRecord(
        app_id=task.key.app_id,
        room_id=task.key.room_id,
        task_id=task.key.task_id,
        user_id=task.user_id,
        status=int(task.status),
        create_time_ms=task.create_time_ms,
        end_time_ms=task.end_time_ms,
        document=document,
        version=version,
    )


def from_record(record: TaskRecord) -> RelayTask:
    document = dict(record.document)
    control = control_from_plain(document.pop("control"))
    reason = document.pop("stop_reason")
    return RelayTask(
        key=TaskKey(record.app_id, record.room_id, record.task_id),
        control=control,
        status=TaskStatus(document.pop("status")),
        stop_reason=StopReason(reason) if reason else None,
        **document,
    )
