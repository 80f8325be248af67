"""The TaskSupervisor: owns every running relay, records every state change.

Each task runs as one asyncio task around a RelayRun (whose media work happens in
worker processes). A catch-all at that boundary turns any failure into a SourceError
stop instead of a crashed server. State changes are persisted before they are acted on,
each a compare-and-set on the stored version (another node, or another coroutine, may
have changed the task since it was read: the change is then applied again to what is
stored now). A change a user can see (its status and stop reason) writes its callback
event in the same unit of work. A shutdown leaves active tasks active so the next start
resumes them: a VOD near its saved position, a live source by reconnecting.

Several nodes may share the store (relaystream.tasks.node): a node runs a task only
while it holds its lease. Every ``renew_s`` it renews its leases (a run whose lease was
lost stops here without ending its task: another node has it) and hands its runs the new
fencing deadline; beside that, so that a slow round never delays a renewal, it follows
what other nodes recorded for its tasks (a Stop or an Update made through them) and
takes the unleased active tasks placement gives it, those scheduled for later only
shortly before they are due. A draining node hands all of its tasks back and takes none.
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
from relaystream.store import StaleVersion, TaskExists, TaskQuery
from relaystream.store.leases import NodeInfo, TaskStats
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
from relaystream.tasks.node import (
    NodeSettings,
    SharedTaskStore,
    capacity_of,
    freest_node,
    lease_key,
    now_ms,
)
from relaystream.tasks.runner import RelayRun, RunOutcome, RunSettings, RunStats, SourcePolicy
from relaystream.tasks.stats_snapshot import stats_from_json, stats_to_json

logger = logging.getLogger(__name__)

ACTIVE_STATUSES = (int(TaskStatus.STARTING), int(TaskStatus.RUNNING))

# Compare-and-set retries before giving up: each lost race means another writer made
# progress, so running out of them means something is badly wrong.
_MAX_ATTEMPTS = 20
# Unleased tasks a node looks at past its free slots each round: tasks of rooms other
# nodes host sit among them, and must not hide the ones placed here.
_PLACEMENT_WINDOW = 50


class TaskAlreadyActive(Exception):
    """A new run of a task that is not ended."""


class TaskSupervisor:
    def __init__(
        self,
        store: SharedTaskStore,
        connector: RoomConnector,
        policy: SourcePolicy,
        slots: RunningSlots | None = None,
        settings: RunSettings | None = None,
        outbox: CallbackOutbox | None = None,
        node: NodeSettings | None = None,
    ) -> None:
        self._store = store
        self._outbox = outbox or CallbackOutbox.disabled()
        self._connector = connector
        self._policy = policy
        self._slots = slots or RunningSlots.unlimited()
        self._settings = settings or RunSettings()
        self._node = node or NodeSettings()
        self._runs: dict[TaskKey, tuple[RelayRun, asyncio.Task[None]]] = {}
        self._lease_until_ms = 0
        self._live_nodes = 1
        self._draining = False
        self._keeper: asyncio.Task[None] | None = None

    @property
    def node(self) -> NodeSettings:
        return self._node

    @property
    def live_nodes(self) -> int:
        """Nodes (this one included) whose node lease was current at the last round."""
        return self._live_nodes

    @property
    def lease_until_ms(self) -> int:
        """Until when this node's row (and its leases) were last renewed."""
        return self._lease_until_ms

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

    async def shared_stats(self, key: TaskKey) -> RunStats | None:
        """Live stats: this node's run's, or the snapshot its owner left in the store."""
        local = self.stats(key)
        if local is not None:
            return local
        holder = await self._store.holder(lease_key(key), now_ms())
        snapshot = await self._store.get_stats(lease_key(key))
        if holder is None or snapshot is None or snapshot.node_id != holder.node_id:
            return None
        return stats_from_json(snapshot.stats, max(0, now_ms() - snapshot.written_ms) / 1000)

    def runs(self) -> list[RelayRun]:
        """The runs of this node's active tasks, for live statistics."""
        return [run for run, _ in self._runs.values()]

    async def resume(self) -> int:
        """Take this node's share of the active tasks no node holds (after a restart:
        those it ran itself, whose leases are its own), then keep leases from now on.
        A node that starts is ready for tasks: a drain mark from before is cleared."""
        await self._store.set_draining(self._node.node_id, False)
        await self._heartbeat()
        self._keeper = asyncio.create_task(self._keep_leases(), name="node leases")
        return await self._take_unleased(own=True) + await self._take_unleased()

    async def owner_url(self, app_id: str, room_id: str, user_id: str) -> str | None:
        """The advertised URL of the node that runs the active task publishing as
        ``user_id`` in the room, when that node is another one."""
        return self._elsewhere(await self._room_holder(app_id, room_id, user_id=user_id))

    async def room_owner_url(self, app_id: str, room_id: str) -> str | None:
        """The advertised URL of the node that hosts the room (runs its active tasks),
        when that node is another one: a room lives on one node."""
        return self._elsewhere(await self._room_holder(app_id, room_id))

    def _elsewhere(self, holder: NodeInfo | None) -> str | None:
        if holder is None or holder.node_id == self._node.node_id:
            return None
        return holder.advertise_url

    async def _room_holder(
        self,
        app_id: str,
        room_id: str,
        *,
        user_id: str | None = None,
        besides: TaskKey | None = None,
    ) -> NodeInfo | None:
        """The node holding a lease on an active task of the room (publishing as
        ``user_id``, when given; other than ``besides``), if any."""
        page = await self._store.query(TaskQuery(app_id, room_id=room_id, limit=100))
        for record in page.records:
            if user_id not in (None, record.user_id) or record.status not in ACTIVE_STATUSES:
                continue
            key = TaskKey(record.app_id, record.room_id, record.task_id)
            if key == besides:
                continue
            holder = await self._store.holder(lease_key(key), now_ms())
            if holder is not None:
                return holder
        return None

    async def _placed_here(self, key: TaskKey, nodes: list[NodeInfo], at_ms: int) -> bool:
        """Placement: a task goes to the node that hosts its room, a task of a new room
        to the freest live node (this one when there is none)."""
        host = await self._room_holder(key.app_id, key.room_id, besides=key)
        if host is not None:
            return host.node_id == self._node.node_id
        freest = freest_node(nodes, at_ms)
        return freest is None or freest.node_id == self._node.node_id

    async def _keep_leases(self) -> None:
        chores: asyncio.Task[None] | None = None
        try:
            while True:
                await asyncio.sleep(self._node.renew_s)
                try:
                    await self._renew_leases()
                except Exception:
                    # The store is unreachable or failing: the leases lapse and the
                    # workers fence themselves; the next round tries again.
                    logger.exception("renewing leases of node %s failed", self._node.node_id)
                    continue
                # The rest of a round may take longer than a renew period (a busy store,
                # many tasks): it runs beside the renewals, never delaying the next one,
                # one round of it at a time.
                if chores is None or chores.done():
                    chores = asyncio.create_task(self._chores(), name="node chores")
        finally:
            if chores is not None:
                chores.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await chores

    async def _renew_leases(self) -> None:
        """Extend this node's leases and its row; drop the runs whose leases are gone."""
        now = now_ms()
        until = now + self._node.lease_ms
        # Only runs that existed before the renewal can have lost their lease: one
        # started meanwhile (by the chores, or a Start) holds a lease claimed after it.
        before = dict(self._runs)
        held = await self._store.renew(self._node.node_id, now, until)
        lost = [
            key
            for key, entry in before.items()
            if self._runs.get(key) is entry and lease_key(key) not in held
        ]
        for key in lost:
            log_event(logger, "task lease lost", task=key, node=self._node.node_id)
            await self._drop_run(key)
        deadline_s = until / 1000 - self._node.fence_margin_s
        for run, _ in self._runs.values():
            run.extend_lease(deadline_s)
        await self._heartbeat(until)

    async def _chores(self) -> None:
        """Share live stats, follow what other nodes recorded, take (or hand back) tasks."""
        try:
            await self._share_and_follow()
        except Exception:
            logger.exception("the round of node %s failed", self._node.node_id)

    async def _share_and_follow(self) -> None:
        await self._store.put_stats(
            self._node.node_id,
            now_ms(),
            [
                TaskStats(lease_key(key), self._node.node_id, 0, stats_to_json(run.current_stats()))
                for key, (run, _) in self._runs.items()
            ],
        )
        await self._follow_store()
        if self._draining:
            await self._hand_back_all()
        else:
            await self._take_unleased()

    def _fence_deadline(self, until_ms: int) -> float | None:
        """When workers must stop unless renewed; None before the leases are kept
        (a supervisor that never resumed, as in a unit test, renews nothing)."""
        if self._keeper is None:
            return None
        return until_ms / 1000 - self._node.fence_margin_s

    async def _heartbeat(self, until_ms: int | None = None) -> None:
        until = until_ms if until_ms is not None else now_ms() + self._node.lease_ms
        nodes = await self._store.nodes()
        now = now_ms()
        others = [n for n in nodes if n.node_id != self._node.node_id and n.lease_until_ms >= now]
        self._live_nodes = 1 + len(others)
        mine = [n for n in nodes if n.node_id == self._node.node_id]
        self._draining = bool(mine and mine[0].draining)
        await self._store.heartbeat(
            NodeInfo(
                node_id=self._node.node_id,
                advertise_url=self._node.advertise_url,
                lease_until_ms=until,
                capacity=capacity_of(self._slots.capacity),
                running=len(self._runs),
                draining=self._draining,
            )
        )
        self._lease_until_ms = until

    async def _follow_store(self) -> None:
        """Apply what other nodes recorded for this node's tasks: a Stop, an Update."""
        for key, (run, _) in list(self._runs.items()):
            record = await self._store.get(key.app_id, key.room_id, key.task_id)
            stored = from_record(record) if record else None
            if stored is None or not stored.active:
                await self._drop_run(key)
                await self._store.release(lease_key(key), self._node.node_id)
            elif stored.control != run.task.control:
                run.apply_control(stored)

    async def _take_unleased(self, *, own: bool = False) -> int:
        """Take the unleased active tasks placement gives this node, or (``own``) those
        whose leases this node held before it restarted; how many."""
        now = now_ms()
        free = capacity_of(self._slots.capacity) - len(self._runs)
        if free <= 0:
            return 0
        nodes = await self._store.nodes()
        held_by = self._node.node_id if own else ""
        taken = 0
        # A window past this node's free slots: those ahead in it may be other nodes'.
        for record in await self._store.unleased(
            ACTIVE_STATUSES, now, free + _PLACEMENT_WINDOW, held_by, self._due_by_ms(now)
        ):
            if taken >= free:
                break
            key = TaskKey(record.app_id, record.room_id, record.task_id)
            if key in self._runs:
                continue
            if not own and not await self._placed_here(key, nodes, now):
                continue  # another node takes it
            until = now_ms() + self._node.lease_ms
            if not await self._store.claim(lease_key(key), self._node.node_id, now, until):
                continue  # another node took it first
            current = await self._transition(
                key, lambda t: t.reconnecting() if t.status is TaskStatus.RUNNING else t
            )
            if current is None:
                await self._store.release(lease_key(key), self._node.node_id)
                continue
            self._spawn(current, lease_deadline_s=self._fence_deadline(until))
            _log_start(current, metrics.StartKind.RESUME)
            taken += 1
        return taken

    def _due_by_ms(self, now: int) -> int:
        """Tasks due before this are taken now: two renew periods ahead, so that a
        scheduled task's run is waiting for its start time when it comes."""
        return now + 2 * int(self._node.renew_s * 1000)

    async def drain(self) -> int:
        """Hand every task of this node to the others (before maintenance); how many."""
        self._draining = True
        await self._store.set_draining(self._node.node_id, True)
        return await self._hand_back_all()

    async def _hand_back_all(self) -> int:
        keys = list(self._runs)
        for key in keys:
            await self._drop_run(key)
            await self._store.release(lease_key(key), self._node.node_id)
            log_event(logger, "task handed over", task=key, node=self._node.node_id)
        return len(keys)

    async def _drop_run(self, key: TaskKey) -> None:
        """Stop this node's run of ``key`` without ending the task."""
        entry = self._runs.pop(key, None)
        if entry is not None:
            entry[1].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await entry[1]

    async def launch(self, task: RelayTask) -> None:
        """Persist a new run of ``task`` (status 1) and start it.

        A task due now takes a running slot first (``TaskLimitReached`` if the caps are
        full); a scheduled one takes it at its start time. ``TaskAlreadyActive`` if the
        task is not ended, ``UserTaken`` if its user already publishes in the room.
        """
        if task.key in self._runs:
            raise TaskAlreadyActive(str(task.key))
        now = now_ms()
        if task.control.start_timestamp_s * 1000 > self._due_by_ms(now) or not (
            await self._placed_here(task.key, await self._store.nodes(), now)
        ):
            # Placement: the room's node (or the freest) takes it within one renew
            # period. A task scheduled for later is taken (leased, run) only shortly
            # before it is due: until then it costs no node anything each renew period.
            await self._save(task)
            _log_start(task, metrics.StartKind.API)
            return
        slot = self._slots.take(task.key.app_id) if _due(task) else None
        until = now + self._node.lease_ms
        try:
            # The lease first: no other node may take the task between its save and
            # its run.
            if not await self._store.claim(lease_key(task.key), self._node.node_id, now, until):
                raise TaskAlreadyActive(str(task.key))
            try:
                await self._save(task)
            except BaseException:
                await self._store.release(lease_key(task.key), self._node.node_id)
                raise
        except BaseException:
            if slot is not None:
                slot.release()
            raise
        self._spawn(task, slot, lease_deadline_s=self._fence_deadline(until))
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
        # Run here: stopped now. Run on another node: it sees the ended task within one
        # renew period, and its workers are fenced by their lease deadline regardless.
        if key in self._runs:
            await self._drop_run(key)
            await self._store.release(lease_key(key), self._node.node_id)
        if task is not None:
            _log_stop(task)
        return task

    async def shutdown(self) -> None:
        """Stop the runs without ending their tasks: they resume on the next start.

        The runs stop side by side, so shutting down takes one worker's stop grace,
        not one per task. Their leases are released: another node (or this one, when it
        starts again) takes the tasks at once."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        entries = list(self._runs.values())
        self._runs.clear()
        for _, handle in entries:
            handle.cancel()
        await asyncio.gather(*(handle for _, handle in entries), return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._store.release_all(self._node.node_id)

    def _spawn(
        self, task: RelayTask, slot: Slot | None = None, *, lease_deadline_s: float | None = None
    ) -> None:
        run = RelayRun(task, self._connector, self._policy, _Hooks(self, task.key), self._settings)
        if lease_deadline_s is not None:
            run.extend_lease(lease_deadline_s)
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
        holder = await self._store.holder(lease_key(key), now_ms())
        if (holder is not None and holder.node_id != self._node.node_id) or (
            holder is None and run.lease_lapsed
        ):
            # The lease went while this node could not renew it: the task is not ours
            # to end; whoever holds it (or takes it next) runs it.
            log_event(logger, "task lease lost", task=key, node=self._node.node_id)
            return
        ended = await self._transition(key, lambda t: t.stopped(outcome.reason, outcome.detail))
        await self._store.release(lease_key(key), self._node.node_id)
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
