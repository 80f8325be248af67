"""What operators do with the outbox: see what is pending or failed, redeliver, discard.

A redelivered event is pending again, due at once, with a new retry window; it still
waits for the earlier pending events of its task. Only failed events are redelivered or
discarded: a pending one is already being retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from relaystream.callbacks.outbox import CallbackOutbox
from relaystream.store import CallbackRecord, CallbackState, TaskStore

UNDELIVERED = (CallbackState.PENDING, CallbackState.FAILED)


class CallbackDeliveries:
    def __init__(
        self,
        store: TaskStore,
        outbox: CallbackOutbox,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._outbox = outbox
        self._clock = clock

    async def list(
        self, app_id: str, states: Sequence[CallbackState] = UNDELIVERED, limit: int = 50
    ) -> list[CallbackRecord]:
        return await self._store.list_callbacks(app_id, states, limit)

    async def redeliver(self, app_id: str, event_ids: Sequence[str] | None) -> int:
        """Make the AppId's failed events (or the named ones) pending again; how many."""
        count = await self._store.redeliver_callbacks(app_id, event_ids, int(self._clock() * 1000))
        if count:
            self._outbox.committed()
        return count

    async def discard(self, app_id: str, event_ids: Sequence[str] | None) -> int:
        """Delete the AppId's failed events (or the named ones); how many."""
        return await self._store.discard_callbacks(app_id, event_ids)
