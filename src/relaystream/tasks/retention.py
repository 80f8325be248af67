"""Retention: ended tasks are kept for ``retention_s``, then purged, so that the store
does not grow for ever. Active tasks are never touched, nor tasks with a callback event
still pending or failed (the store's purge checks its outbox). Delivered callback
events go after ``delivered_callbacks_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from relaystream.store import TaskStore

logger = logging.getLogger(__name__)


class RetentionJob:
    def __init__(
        self,
        store: TaskStore,
        *,
        retention_s: float,
        interval_s: float,
        delivered_callbacks_s: float = 24 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._retention_s = retention_s
        self._interval_s = interval_s
        self._delivered_callbacks_s = delivered_callbacks_s
        self._clock = clock

    async def purge_once(self) -> int:
        """Purge the tasks that ended more than ``retention_s`` ago; how many went."""
        now = self._clock()
        events_cutoff_ms = int((now - self._delivered_callbacks_s) * 1000)
        events = await self._store.purge_delivered_callbacks(events_cutoff_ms)
        if events:
            logger.info("purged %d delivered callback event(s)", events)
        purged = await self._store.purge_ended(int((now - self._retention_s) * 1000))
        if purged:
            logger.info("purged %d task(s) ended over %.0f s ago", purged, self._retention_s)
        return purged

    async def run_forever(self) -> None:
        """Purge every ``interval_s``; a failed purge is logged and tried again later."""
        while True:
            try:
                await self.purge_once()
            except Exception:
                logger.exception("purging ended tasks failed")
            await asyncio.sleep(self._interval_s)
