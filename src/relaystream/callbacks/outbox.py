"""The callback outbox: events written with the state change they report.

``CallbackOutbox.record`` adds the event to the task's unit of work (so a visible
change is never committed without its event, nor an event without its change); the
caller calls ``committed`` once the unit has committed, which wakes the delivery
worker at once instead of at its next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from relaystream.callbacks.events import VisibleState, event_record, makes_event
from relaystream.store import TaskTransaction


class CallbackOutbox:
    def __init__(
        self,
        enabled_for: Callable[[str], bool],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``enabled_for(app_id)``: whether the AppId has a callback URL."""
        self._enabled_for = enabled_for
        self._clock = clock
        self._new_events = asyncio.Event()

    @classmethod
    def disabled(cls) -> CallbackOutbox:
        """An outbox that records nothing: no AppId has callbacks."""
        return cls(lambda _: False)

    async def record(
        self, unit: TaskTransaction, before: VisibleState | None, after: VisibleState
    ) -> bool:
        """Add the event of ``before`` → ``after`` to ``unit``, if it is one (and the
        AppId wants callbacks); whether it added one."""
        if not makes_event(before, after) or not self._enabled_for(after.app_id):
            return False
        await unit.add_callback(event_record(after, int(self._clock() * 1000)))
        return True

    def committed(self) -> None:
        """A unit with an event has committed: the delivery worker looks now."""
        self._new_events.set()

    async def wait_for_events(self, timeout_s: float) -> None:
        """Until ``committed`` is called (or was, since the last wait), or ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._new_events.wait(), timeout_s)
        self._new_events.clear()
