"""The TaskSupervisor: owns every running relay, records every state change.

Each task runs as one asyncio task around a RelayRun (whose media work happens in
worker processes). A catch-all at that boundary turns any failure into a SourceError
stop instead of a crashed server. State changes are persisted before they are acted on,
each a compare-and-set on the stored version (another node, or another coroutine, may
have changed the task since it was read: the change is then applied again to what is
stored now). A change a user can see (its status and stop reason) writes its callback
event in the same unit of work. A shutdown leaves active tasks active so the next start
resumes them: a VOD near its saved position, a live source by reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from relaystream import metrics
from relaystream.callbacks.events import VisibleState
from relaystream.callbacks.outbox import CallbackOutbox
from relaystream.logs import log_event, url_for_log
from relaystream.rtc.publisher import RoomConnector
from relaystream.store import StaleVersion, TaskExists, TaskQuery, TaskStore
from relaystream.tasks.control import RelayControl
from relaystream.tasks.limits import RunningSlots, Slot, TaskLimitReached
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

# Compare-and-set retries before giving up: each lost race means another writer made
# progress, so running out of them means something is badly wrong.
_MAX_ATTEMPTS = 20


class TaskAlreadyActive(Exception):
    """A new run of a task that is not ended."""


class TaskSupervisor:
    def __init__(
        self,
        store: TaskStore,
        connector: RoomConnector,
        policy: SourcePolicy,
        slots: RunningSlots | None = None,
        settings: RunSettings | None = None,
        outbox: CallbackOutbox | None = None,
    ) -> None:
        self._store = store
        self._outbox = outbox or CallbackOutbox.disabled()
        self._connector = connector
        self._policy = policy
        self._slots = slots or RunningSlots.unlimited()
        self._settings = settings or RunSettings()
        self._runs: dict[TaskKey, tuple[RelayRun, asyncio.Task[None]]] = {}

    async def load(self, key: TaskKey) -> RelayTask | None:
        record = await self._store.get(key.app_id, key.room_id, key.task_id)
        return from_record(record) if record else None

    async def list_tasks(self, query: TaskQuery) -> tuple[int, list[RelayTask]]:
        """(how many tasks match in all, this page of them)."""
        page = await self._store.query(query)
        return page.total, [from_record(record) for record in page.records]

    async def active_tasks(self) -> list[RelayTask]:
        return [from_record(r) for r in await self._store.list_with_status(ACTIVE_STATUSES)]

    def stats(self, key: TaskKey) -> RunStats | None:
        entry = self._runs.get(key)
        return entry[0].current_stats() if entry else None

    def runs(self) -> list[RelayRun]:
        """The runs of this node's active tasks, for live statistics."""
        return [run for run, _ in self._runs.values()]

    async def resume(self) -> int:
        """Start the runs of tasks that were active when the server last stopped."""
        tasks = await self.active_tasks()
        resumed = 0
        for task in tasks:
            current = await self._transition(
                task.key, lambda t: t.reconnecting() if t.status is TaskStatus.RUNNING else t
            )
            if current is not None:
                self._spawn(current)
                _log_start(current, metrics.StartKind.RESUME)
                resumed += 1
        return resumed

    async def launch(self, task: RelayTask) -> None:
        """Persist a new run of ``task`` (status 1) and start it.

        A task due now takes a running slot first (``TaskLimitReached`` if the caps are
        full); a scheduled one takes it at its start time. ``TaskAlreadyActive`` if the
        task is not ended, ``UserTaken`` if its user already publishes in the room.
        """
        slot = self._slots.take(task.key.app_id) if _due(task) else None
        try:
            await self._save(task)
        except BaseException:
            if slot is not None:
                slot.release()
            raise
        self._spawn(task, slot)
        _log_start(task, metrics.StartKind.API)

    async def update(
        self, key: TaskKey, change: Callable[[RelayControl], RelayControl]
    ) -> RelayTask | None:
        """Persist a new Control for an active task, then hand it to the task's run.

        ``change`` makes the new Control from the stored one (it may be applied again if
        another writer got there first, and may raise to refuse). None when the task is
        unknown or ended.
        """
        task = await self._transition(key, lambda t: replace(t, control=change(t.control)))
        entry = self._runs.get(key)
        if task is not None and entry is not None:
            entry[0].apply_control(task)
        if task is not None:
            log_event(logger, "task updated", task=key, source=url_for_log(task.control.stream_url))
        return task

    async def stop(self, key: TaskKey, reason: StopReason, detail: str = "") -> RelayTask | None:
        """End an active task; None when it is unknown or already ended."""
        task = await self._transition(key, lambda t: t.stopped(reason, detail))
        entry = self._runs.pop(key, None)
        if entry is not None:
            entry[1].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await entry[1]
        if task is not None:
            _log_stop(task)
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

    def _spawn(self, task: RelayTask, slot: Slot | None = None) -> None:
        run = RelayRun(task, self._connector, self._policy, _Hooks(self, task.key), self._settings)
        handle = asyncio.create_task(self._supervise(run, slot), name=f"relay {task.key}")
        self._runs[task.key] = (run, handle)

    async def _supervise(self, run: RelayRun, slot: Slot | None) -> None:
        key = run.task.key
        try:
            if slot is None:
                slot = await self._slot_when_due(run.task)
            outcome = await run.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("task %s failed", key)
            outcome = RunOutcome(StopReason.SOURCE_ERROR, f"internal error: {type(exc).__name__}")
        finally:
            if slot is not None:
                slot.release()
        if self._runs.get(key, (None,))[0] is run:
            del self._runs[key]
        ended = await self._transition(key, lambda t: t.stopped(outcome.reason, outcome.detail))
        if ended is not None:
            _log_stop(ended)

    async def _slot_when_due(self, task: RelayTask) -> Slot:
        """Wait for a scheduled (or resumed) task's start time, then for a free slot."""
        delay_s = task.control.start_timestamp_s - time.time()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        try:
            return self._slots.take(task.key.app_id)
        except TaskLimitReached as full:
            logger.warning("task %s waits for a running slot: %s", task.key, full)
        return await self._slots.wait_and_take(task.key.app_id)

    async def _transition(
        self, key: TaskKey, change: Callable[[RelayTask], RelayTask]
    ) -> RelayTask | None:
        """Apply ``change`` to the stored task and save it, if it is active; the result
        (None when it is unknown or ended). A lost compare-and-set reads and applies
        ``change`` again."""
        for _ in range(_MAX_ATTEMPTS):
            record = await self._store.get(key.app_id, key.room_id, key.task_id)
            if record is None:
                return None
            task = from_record(record)
            if not task.active:
                return None
            changed = change(task)
            if changed is task:
                return task
            try:
                async with self._store.transaction() as unit:
                    await unit.update(to_record(changed, record.version))
                    event = await self._outbox.record(unit, visible(task), visible(changed))
            except StaleVersion:
                continue
            if event:
                self._outbox.committed()
            return changed
        raise RuntimeError(f"{key}: gave up after {_MAX_ATTEMPTS} conflicting writes")

    async def _save(self, task: RelayTask) -> RelayTask:
        """Store a new run of ``task``: a new key (one write, the common case), or one
        whose last run has ended (compare-and-set on the ended run's version)."""
        new, key = to_record(task), task.key
        for _ in range(_MAX_ATTEMPTS):
            try:
                async with self._store.transaction() as unit:
                    await unit.insert(new)
                    event = await self._outbox.record(unit, None, visible(task))
                if event:
                    self._outbox.committed()
                return task
            except TaskExists:
                pass
            try:
                async with self._store.transaction() as unit:
                    stored = await unit.get(key.app_id, key.room_id, key.task_id)
                    if stored is None:
                        continue  # purged meanwhile: insert again
                    if stored.status != TaskStatus.ENDED:
                        raise TaskAlreadyActive(str(key))
                    await unit.update(new.with_version(stored.version))
                    event = await self._outbox.record(unit, None, visible(task))
                if event:
                    self._outbox.committed()
                return task
            except StaleVersion:
                continue  # changed meanwhile: look again
        raise RuntimeError(f"{key}: gave up after {_MAX_ATTEMPTS} conflicting writes")


def visible(task: RelayTask) -> VisibleState:
    """What a user sees of ``task``, as its callback events carry it."""
    return VisibleState(
        app_id=task.key.app_id,
        room_id=task.key.room_id,
        task_id=task.key.task_id,
        user_id=task.user_id,
        business_id=task.business_id,
        stream_url=task.control.stream_url,
        start_timestamp_s=task.control.start_timestamp_s,
        status=int(task.status),
        reason=task.stop_reason.value if task.stop_reason else "",
        message=task.stop_detail,
    )


def _due(task: RelayTask) -> bool:
    return task.control.start_timestamp_s <= time.time()


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


def _log_start(task: RelayTask, kind: metrics.StartKind) -> None:
    metrics.task_started(kind)
    log_event(
        logger,
        "task resumed" if kind is metrics.StartKind.RESUME else "task started",
        task=task.key,
        user=task.user_id,
        source=url_for_log(task.control.stream_url),
        mode=task.control.stream_mode.name.lower(),
    )


def _log_stop(task: RelayTask) -> None:
    reason = task.stop_reason.value if task.stop_reason else ""
    metrics.task_stopped(reason)
    log_event(logger, "task stopped", task=task.key, reason=reason, detail=task.stop_detail)
