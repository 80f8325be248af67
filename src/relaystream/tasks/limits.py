"""Caps on running tasks: per node, and per AppId.

A task counts from the moment it holds a worker (its start time has come) until its run
ends; a scheduled task waiting for its start time does not. The counts live in memory,
beside the runs they count, so a Start checks them in constant time whatever the number
of tasks stored. A Start that would go over a cap is refused (``TaskLimitReached``); a
scheduled or resumed task whose time comes while the caps are full waits in status 1
for a slot instead, since there is nobody left to refuse.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class LimitScope(StrEnum):
    NODE = "node"
    APP = "app"


class TaskLimitReached(Exception):
    """Taking a slot would run more tasks than a cap allows."""

    def __init__(self, scope: LimitScope, app_id: str, cap: int) -> None:
        where = "this node" if scope is LimitScope.NODE else f"AppId {app_id}"
        super().__init__(f"{where} already runs its limit of {cap} tasks")
        self.scope = scope
        self.app_id = app_id
        self.cap = cap


@dataclass(eq=False)
class Slot:
    """The right of one run to hold a worker; give it back when the run ends."""

    app_id: str
    _slots: RunningSlots
    _held: bool = True

    def release(self) -> None:
        """Idempotent: a run may end along more than one path."""
        if self._held:
            self._held = False
            self._slots._give_back(self.app_id)


class RunningSlots:
    def __init__(self, per_node: int, per_app: Callable[[str], int]) -> None:
        self._per_node = per_node
        self._per_app = per_app
        self._by_app: Counter[str] = Counter()
        self._total = 0
        # Runs waiting for a slot; all are woken when one is given back, and those that
        # still find no room wait again.
        self._waiters: list[asyncio.Future[None]] = []

    @classmethod
    def unlimited(cls) -> RunningSlots:
        return cls(per_node=1 << 62, per_app=lambda _: 1 << 62)

    @property
    def capacity(self) -> int:
        """Running tasks this node may hold."""
        return self._per_node

    @property
    def running(self) -> int:
        return self._total

    def running_for(self, app_id: str) -> int:
        return self._by_app[app_id]

    def take(self, app_id: str) -> Slot:
        """A slot now, or ``TaskLimitReached`` naming the cap that is full."""
        if self._total >= self._per_node:
            raise TaskLimitReached(LimitScope.NODE, app_id, self._per_node)
        cap = self._per_app(app_id)
        if self._by_app[app_id] >= cap:
            raise TaskLimitReached(LimitScope.APP, app_id, cap)
        self._total += 1
        self._by_app[app_id] += 1
        return Slot(app_id, self)

    async def wait_and_take(self, app_id: str) -> Slot:
        """A slot as soon as one is free for ``app_id``."""
        while not self._has_room(app_id):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return self.take(app_id)

    def _has_room(self, app_id: str) -> bool:
        return self._total < self._per_node and self._by_app[app_id] < self._per_app(app_id)

    def _give_back(self, app_id: str) -> None:
        self._total -= 1
        self._by_app[app_id] -= 1
        if not self._by_app[app_id]:
            del self._by_app[app_id]
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
