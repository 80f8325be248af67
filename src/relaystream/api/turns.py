"""Starts and Updates of one AppId take turns, so its burst queues behind itself.

The server answers every request on one event loop. Without turns, a burst of Starts
for one AppId puts all of its requests into the store's commit queue and the loop's
ready queue at once, and another AppId's single Start waits behind all of them. With
at most ``per_app`` of an AppId's writes in progress, the rest wait (costing nothing)
for their own AppId's turn, and another AppId's Start only ever waits behind a few.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class AppTurns:
    def __init__(self, per_app: int) -> None:
        self._per_app = per_app
        self._gates: dict[str, asyncio.Semaphore] = {}

    @asynccontextmanager
    async def turn(self, app_id: str) -> AsyncIterator[None]:
        # One gate per configured AppId (only authorised AppIds get here), kept for
        # the life of the server.
        gate = self._gates.get(app_id)
        if gate is None:
            gate = self._gates[app_id] = asyncio.Semaphore(self._per_app)
        async with gate:
            yield
