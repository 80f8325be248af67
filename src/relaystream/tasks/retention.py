"""Retention: ended tasks are kept for ``retention_s``, then purged, so that the store
does not grow for ever. Active tasks are never touched.

(When callbacks are persisted, a task with an event still pending or failed must be
kept too: that condition belongs in the store's purge, beside the outbox table.)
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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._retention_s = retention_s
        self._interval_s = interval_s
        self._clock = clock

    async def purge_once(self) -> int:
        """Purge the tasks that ended more than ``retention_s`` ago; how many went."""
        cutoff_ms = int((self._clock() - self._retention_s) * 1000)
        purged = await self._store.purge_ended(cutoff_ms)
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
