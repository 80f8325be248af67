"""The RelayTask and its state machine.

Status follows Volcengine: 1 starting (scheduled, connecting, reconnecting), 2 running
(media is flowing into the room), 3 ended, with a stop reason.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from enum import IntEnum, StrEnum
from typing import Any

from relaystream.media.spec import MediaType, StreamMode
from relaystream.store import TaskRecord


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


@dataclass(frozen=True)
class RelayControl:
    """What to relay and how (Volcengine ``Control``)."""

    stream_url: str
    media_type: MediaType = MediaType.AUDIO_AND_VIDEO
    stream_mode: StreamMode = StreamMode.TRANSCODE
    start_timestamp_s: int = 0
    loop: bool = False
    video_width: int | None = None
    video_height: int | None = None
    frame_rate: int = 15
    bitrate_kbps: int | None = None


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


def to_record(task: RelayTask) -> TaskRecord:
    document: dict[str, Any] = asdict(task)
    del document["key"]
    return TaskRecord(
        app_id=task.key.app_id,
        room_id=task.key.room_id,
        task_id=task.key.task_id,
        status=int(task.status),
        create_time_ms=task.create_time_ms,
        document=document,
    )


def from_record(record: TaskRecord) -> RelayTask:
    document = dict(record.document)
    control = dict(document.pop("control"))
    control["media_type"] = MediaType(control["media_type"])
    control["stream_mode"] = StreamMode(control["stream_mode"])
    reason = document.pop("stop_reason")
    return RelayTask(
        key=TaskKey(record.app_id, record.room_id, record.task_id),
        control=RelayControl(**control),
        status=TaskStatus(document.pop("status")),
        stop_reason=StopReason(reason) if reason else None,
        **document,
    )
