"""What the API actions do to tasks: validation that needs state, then the supervisor.

Nothing here serialises one Start behind another: two Starts of one task meet in the
store (one insert wins, the other sees an active task), two tasks for one user in one
room meet on the store's uniqueness rule, and the running caps are counters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from relaystream.rtc.token import AppKeyLookup, Privilege, TokenError, verify_token
from relaystream.store import TaskQuery, UserTaken
from relaystream.tasks.control import RelayControl
from relaystream.tasks.limits import TaskLimitReached
from relaystream.tasks.model import RelayTask, StopReason, TaskKey
from relaystream.tasks.runner import RunStats
from relaystream.tasks.supervisor import TaskAlreadyActive, TaskSupervisor


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
    viewers: int = 0  # watching the task's publication now


# How many viewers watch (app_id, room_id, user_id)'s publication.
ViewerCount = Callable[[str, str, str], int]


@dataclass(frozen=True)
class TaskList:
    total: int  # matching tasks in all pages
    tasks: list[RelayTask]


class TaskService:
    def __init__(
        self,
        supervisor: TaskSupervisor,
        app_key_for: AppKeyLookup,
        viewer_count: ViewerCount | None = None,
    ) -> None:
        self._supervisor = supervisor
        self._app_key_for = app_key_for
        self._viewer_count = viewer_count

    async def start(self, task: RelayTask) -> StartResult:
        """Start a new run of ``task``; ``TaskLimitReached`` when the caps are full."""
        try:
            self._check_token(task)
            await self._supervisor.launch(task)
        except (TaskRequestError, TaskLimitReached):
            # A repeated Start of an active task is answered as such, whatever its token
            # and however full the caps (the common path never reads the task first).
            if await self._is_active(task.key):
                return StartResult.ALREADY_ACTIVE
            raise
        except TaskAlreadyActive:
            return StartResult.ALREADY_ACTIVE
        except UserTaken:
            raise TaskRequestError(
                "UserId",
                f"{task.user_id!r} already publishes in room {task.key.room_id!r} "
                "as another active task",
            ) from None
        return StartResult.STARTED

    async def _is_active(self, key: TaskKey) -> bool:
        existing = await self._supervisor.load(key)
        return existing is not None and existing.active

    async def stop(self, key: TaskKey) -> RelayTask | None:
        return await self._supervisor.stop(key, StopReason.API_STOP)

    async def update(
        self, key: TaskKey, change: Callable[[RelayControl], RelayControl]
    ) -> RelayTask | None:
        """Give an active task the Control ``change`` makes from its own; None when the
        task is unknown or ended."""
        return await self._supervisor.update(key, change)

    async def list(
        self, app_id: str, room_id: str | None, *, offset: int, limit: int, newest_first: bool
    ) -> TaskList:
        total, tasks = await self._supervisor.list_tasks(
            TaskQuery(app_id, room_id, offset=offset, limit=limit, newest_first=newest_first)
        )
        return TaskList(total, tasks)

    async def get(self, key: TaskKey) -> TaskView | None:
        task = await self._supervisor.load(key)
        if task is None:
            return None
        if not task.active:
            return TaskView(task, None)
        viewers = self._viewer_count(*key_and_user(task)) if self._viewer_count else 0
        return TaskView(task, await self._supervisor.shared_stats(key), viewers)

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


def key_and_user(task: RelayTask) -> tuple[str, str, str]:
    """(app_id, room_id, user_id): where the task publishes."""
    return task.key.app_id, task.key.room_id, task.user_id
