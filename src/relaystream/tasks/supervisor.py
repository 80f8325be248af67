"""The TaskSupervisor: owns every running relay, records every state change.

Each task runs as one asyncio task around a RelayRun (whose media work happens in a
worker process). A catch-all at that boundary turns any failure into a SourceError
stop instead of a crashed server. State changes are persisted before they are acted on,
and a shutdown leaves active tasks active so the next start resumes them.
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
from relaystream.tasks.runner import RelayRun, RunOutcome, RunStats, SourcePolicy

logger = logging.getLogger(__name__)

ACTIVE_STATUSES = (int(TaskStatus.STARTING), int(TaskStatus.RUNNING))


class TaskSupervisor:
    def __init__(self, store: TaskStore, connector: RoomConnector, policy: SourcePolicy) -> None:
        self._store = store
        self._connector = connector
        self._policy = policy
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
        """Stop the runs without ending their tasks: they resume on the next start."""
        entries = list(self._runs.values())
        self._runs.clear()
        for _, handle in entries:
            handle.cancel()
        await asyncio.gather(*(handle for _, handle in entries), return_exceptions=True)

    def _spawn(self, task: RelayTask) -> None:
        async def media_flowing() -> None:
            await self._transition(
                task.key, lambda t: t.running() if t.status is TaskStatus.STARTING else t
            )

        run = RelayRun(task, self._connector, self._policy, media_flowing)
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
