"""What the API actions do to tasks: validation that needs state, then the supervisor."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import Enum

from relaystream.rtc.token import AppKeyLookup, Privilege, TokenError, verify_token
from relaystream.tasks.model import RelayTask, StopReason, TaskKey
from relaystream.tasks.runner import RunStats
from relaystream.tasks.supervisor import TaskSupervisor


class TaskRequestError(Exception):
    """A request that is well-formed but cannot be done; names the field at fault."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class StartResult(Enum):
    STARTED = "started"
    ALREADY_ACTIVE = "already_active"


@dataclass(frozen=True)
class TaskView:
    task: RelayTask
    stats: RunStats | None


class TaskService:
    def __init__(self, supervisor: TaskSupervisor, app_key_for: AppKeyLookup) -> None:
        self._supervisor = supervisor
        self._app_key_for = app_key_for
        self._start_lock = asyncio.Lock()

    async def start(self, task: RelayTask) -> StartResult:
        # One start at a time: two concurrent starts of one task (or of two tasks for
        # one user) must not both pass the checks below.
        async with self._start_lock:
            return await self._start(task)

    async def _start(self, task: RelayTask) -> StartResult:
        existing = await self._supervisor.load(task.key)
        if existing is not None and existing.active:
            return StartResult.ALREADY_ACTIVE
        self._check_token(task)
        for other in await self._supervisor.active_tasks():
            same_room = (other.key.app_id, other.key.room_id) == (task.key.app_id, task.key.room_id)
            if same_room and other.user_id == task.user_id:
                raise TaskRequestError(
                    "UserId",
                    f"{task.user_id!r} already publishes in room {task.key.room_id!r} "
                    f"(task {other.key.task_id!r})",
                )
        await self._supervisor.launch(task)
        return StartResult.STARTED

    async def stop(self, key: TaskKey) -> RelayTask | None:
        return await self._supervisor.stop(key, StopReason.API_STOP)

    async def get(self, key: TaskKey) -> TaskView | None:
        task = await self._supervisor.load(key)
        if task is None:
            return None
        return TaskView(task, self._supervisor.stats(key) if task.active else None)

    def _check_token(self, task: RelayTask) -> None:
        app_key = self._app_key_for(task.key.app_id)
        if app_key is None:
            raise TaskRequestError("AppId", f"{task.key.app_id!r} does not exist")
        try:
            verify_token(
                task.token,
                app_id=task.key.app_id,
                app_key=app_key,
                room_id=task.key.room_id,
                user_id=task.user_id,
                privilege=Privilege.PUBLISH_STREAM,
            )
        except TokenError as exc:
            raise TaskRequestError("Token", str(exc)) from exc
