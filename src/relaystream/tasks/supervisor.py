"""The TaskSupervisor: owns every running relay, records every state change.

Each task runs as one asyncio task around a RelayRun (whose media work happens in
worker processes). A catch-all at that boundary turns any failure into a SourceError
stop instead of a crashed server. State changes are persisted before they are acted on,
and a shutdown leaves active tasks active so the next start resumes them: a VOD near
its saved position, a live source by reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from relaystream.rtc.publisher import RoomConnector
from relaystream.store import TaskStore
from relaystream.tasks.model import (
    RelayTask,
    StopReason,
    TaskKey,
    TaskStatus,
    from_record,
    to_record,
)
from relaystream.tasks.runner import RelayRun, RunOutcome, RunSettings, RunStats, SourcePolicy

logger = logging.getLogger(__name__)

ACTIVE_STATUSES = (int(TaskStatus.STARTING), int(TaskStatus.RUNNING))


class TaskSupervisor:
    def __init__(
        self,
        store: TaskStore,
        connector: RoomConnector,
        policy: SourcePolicy,
        settings: RunSettings | None = None,
    ) -> None:
        self._store = store
        self._connector = connector
        self._policy = policy
        self._settings = settings or RunSettings()
        self._runs: dict[TaskKey, tuple[RelayRun, asyncio.Task[None]]] = {}
        self._lock = asyncio.Lock()

    async def load(self, key: TaskKey) -> RelayTask | None:
        record = await self._store.get(key.app_id, key.room_id, key.task_id)
        return from_record(record) if record else None

    async def active_tasks(self) -> list[RelayTask]:
        return [from_record(r) for r in await self._store.list_with_status(ACTIVE_STATUSES)]

    def stats(self, key: TaskKey) -> RunStats | None:
        entry = self._runs.get(key)
        return entry[0].current_stats() if entry else None

    async def resume(self) -> int:
        """Start the runs of tasks that were active when the server last stopped."""
        tasks = await self.active_tasks()
        for task in tasks:
            if task.status is TaskStatus.RUNNING:
                task = await self._save(task.reconnecting())
            self._spawn(task)
        return len(tasks)

    async def launch(self, task: RelayTask) -> None:
        """Persist a new run of ``task`` (status 1) and start it."""
        await self._save(task)
        self._spawn(task)

    async def stop(self, key: TaskKey, reason: StopReason, detail: str = "") -> RelayTask | None:
        """End an active task; None when it is unknown or already ended."""
        task = await self._transition(key, lambda t: t.stopped(reason, detail))
        entry = self._runs.pop(key, None)
        if entry is not None:
            entry[1].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await entry[1]
        return task

    async def shutdown(self) -> None:
        """Stop the runs without ending their tasks: they resume on the next start.

        The runs stop side by side, so shutting down takes one worker's stop grace,
        not one per task."""
        entries = list(self._runs.values())
        self._runs.clear()
        for _, handle in entries:
            handle.cancel()
        await asyncio.gather(*(handle for _, handle in entries), return_exceptions=True)

    def _spawn(self, task: RelayTask) -> None:
        run = RelayRun(task, self._connector, self._policy, _Hooks(self, task.key), self._settings)
        handle = asyncio.create_task(self._supervise(run), name=f"relay {task.key}")
        self._runs[task.key] = (run, handle)

    async def _supervise(self, run: RelayRun) -> None:
        key = run.task.key
        try:
            outcome = await run.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("task %s failed", key)
            outcome = RunOutcome(StopReason.SOURCE_ERROR, f"internal error: {type(exc).__name__}")
        if self._runs.get(key, (None,))[0] is run:
            del self._runs[key]
        await self._transition(key, lambda t: t.stopped(outcome.reason, outcome.detail))
        logger.info("task %s ended: %s %s", key, outcome.reason, outcome.detail)

    async def _transition(
        self, key: TaskKey, change: Callable[[RelayTask], RelayTask]
    ) -> RelayTask | None:
        async with self._lock:
            task = await self.load(key)
            if task is None or not task.active:
                return None
            changed = change(task)
            if changed is not task:
                await self._store.save(to_record(changed))
            return changed

    async def _save(self, task: RelayTask) -> RelayTask:
        async with self._lock:
            await self._store.save(to_record(task))
        return task


class _Hooks:
    """What one run reports, persisted as transitions of its task."""

    def __init__(self, supervisor: TaskSupervisor, key: TaskKey) -> None:
        self._supervisor = supervisor
        self._key = key

    async def media_flowing(self) -> None:
        await self._supervisor._transition(
            self._key, lambda t: t.running() if t.status is TaskStatus.STARTING else t
        )

    async def reconnecting(self, detail: str) -> None:
        await self._supervisor._transition(
            self._key, lambda t: t.reconnecting() if t.status is TaskStatus.RUNNING else t
        )

    async def position(self, position_s: float) -> None:
        await self._supervisor._transition(self._key, lambda t: t.at_position(position_s))
