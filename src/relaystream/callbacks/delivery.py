"""The delivery worker: sends due outbox records to their AppId's callback URL.

Guarantees (SPEC §5):
- At least once: a record is settled (delivered, or rescheduled) only after its POST
  ended; a record whose sender died (a crash, SIGKILL) is due again when its lease
  runs out, and the next server process sends it.
- In order per task: the store hands out a task's next event only when no earlier one
  of the task is pending or failed, so one task's events go out one at a time and
  never overtake a failed one (it holds them until it is redelivered or discarded).
- Retries: a timeout, a refused connection or a non-2xx answer is retried with
  exponential backoff and jitter (``backoff_base_s`` doubling up to ``backoff_cap_s``)
  until ``retry_window_s`` after its first attempt; then the record is kept as
  failed, for an operator to redeliver or discard.
- Isolation: at most ``max_in_flight`` sends at once, and ``max_in_flight_per_app`` of
  one AppId, so a receiver that hangs or is down holds only its own AppId's slots;
  every other AppId's events keep flowing.

The worker wakes as soon as a unit of work with an event commits (``CallbackOutbox``)
or a send settles, and otherwise polls for records whose retry is due.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from relaystream.callbacks.outbox import CallbackOutbox
from relaystream.callbacks.sender import CallbackSender, DeliveryError
from relaystream.callbacks.signing import signed
from relaystream.store import CallbackRecord, CallbackState, TaskStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallbackTarget:
    url: str
    secret: str


@dataclass(frozen=True)
class DeliverySettings:
    timeout_s: float = 5.0
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0
    retry_window_s: float = 3600.0
    poll_interval_s: float = 1.0
    max_in_flight: int = 32
    max_in_flight_per_app: int = 4

    @property
    def lease_s(self) -> float:
        """How long a record being sent is nobody else's: the POST's deadline and a
        margin to settle it. A record whose sender died is sent again after it."""
        return self.timeout_s * 2 + 5.0


def backoff_s(attempts: int, settings: DeliverySettings) -> float:
    """The wait before the next try after ``attempts`` failed ones: the base doubling
    up to the cap, spread by ±20 % so that many events of one receiver do not retry in
    lockstep."""
    doublings = min(max(attempts - 1, 0), 30)
    delay = min(settings.backoff_cap_s, settings.backoff_base_s * float(2**doublings))
    return min(settings.backoff_cap_s, delay * random.uniform(0.8, 1.2))


class CallbackDelivery:
    def __init__(
        self,
        store: TaskStore,
        outbox: CallbackOutbox,
        sender: CallbackSender,
        targets: Callable[[str], CallbackTarget | None],
        settings: DeliverySettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._outbox = outbox
        self._sender = sender
        self._targets = targets
        self._settings = settings or DeliverySettings()
        self._clock = clock
        self._sends: dict[str, asyncio.Task[None]] = {}
        self._per_app: Counter[str] = Counter()

    async def run_forever(self) -> None:
        try:
            while True:
                try:
                    await self.start_due()
                except Exception:
                    logger.exception("looking for due callback events failed")
                await self._outbox.wait_for_events(self._settings.poll_interval_s)
        finally:
            for send in self._sends.values():
                send.cancel()
            await asyncio.gather(*self._sends.values(), return_exceptions=True)

    async def start_due(self) -> int:
        """Start sending the due records that the concurrency limits allow; how many."""
        free = self._settings.max_in_flight - len(self._sends)
        if free <= 0:
            return 0
        per_app = self._settings.max_in_flight_per_app
        full = [app for app, sending in self._per_app.items() if sending >= per_app]
        now_ms = self._now_ms()
        started = 0
        for record in await self._store.due_callbacks(now_ms, free, full):
            if started >= free or record.event_id in self._sends:
                continue
            if self._per_app[record.app_id] >= per_app:
                continue
            until_ms = now_ms + int(self._settings.lease_s * 1000)
            if not await self._store.lease_callback(record.event_id, now_ms, until_ms):
                continue  # another sender took it
            self._per_app[record.app_id] += 1
            self._sends[record.event_id] = asyncio.create_task(
                self._deliver(record, now_ms), name=f"callback {record.event_id}"
            )
            started += 1
        return started

    async def _deliver(self, record: CallbackRecord, started_ms: int) -> None:
        try:
            error = await self._send(record)
            settled = self._settled(
                replace(record, window_start_ms=record.window_start_ms or started_ms), error
            )
            await self._store.settle_callback(settled)
            _log_outcome(settled, error)
        except Exception:
            # The lease runs out and the record is sent again: at least once.
            logger.exception("callback %s: settling the send failed", record.event_id)
        finally:
            del self._sends[record.event_id]
            self._per_app[record.app_id] -= 1
            if not self._per_app[record.app_id]:
                del self._per_app[record.app_id]
            # The task's next event, or a waiting one of this AppId, may go now.
            self._outbox.committed()

    async def _send(self, record: CallbackRecord) -> str:
        """The POST of one record; an empty string when it was delivered, else why not."""
        target = self._targets(record.app_id)
        if target is None:
            return "the AppId has no callback_url configured"
        body = json.dumps(signed(record.body, target.secret), ensure_ascii=False)
        try:
            await self._sender.send(target.url, body.encode("utf-8"))
        except DeliveryError as exc:
            return exc.detail
        return ""

    def _settled(self, record: CallbackRecord, error: str) -> CallbackRecord:
        """``record`` after one more attempt (whose window start is set)."""
        now_ms = self._now_ms()
        attempts = record.attempts + 1
        if not error:
            return replace(
                record, state=CallbackState.DELIVERED, attempts=attempts, delivered_ms=now_ms
            )
        window_end_ms = record.window_start_ms + int(self._settings.retry_window_s * 1000)
        if now_ms >= window_end_ms:
            return replace(record, state=CallbackState.FAILED, attempts=attempts, last_error=error)
        # The last try falls on the window's end rather than past it.
        retry_ms = now_ms + int(backoff_s(attempts, self._settings) * 1000)
        return replace(
            record,
            attempts=attempts,
            last_error=error,
            next_attempt_ms=min(retry_ms, window_end_ms),
        )

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _log_outcome(record: CallbackRecord, error: str) -> None:
    """One line per send; the place to count ``relaystream_callback_deliveries_total``
    by outcome (delivered, retry, failed). Never the URL: it may carry a credential."""
    where = f"callback {record.event_id} ({record.app_id}/{record.room_id}/{record.task_id})"
    if record.state is CallbackState.DELIVERED:
        logger.info("%s: delivered on attempt %d", where, record.attempts)
    elif record.state is CallbackState.FAILED:
        logger.warning(
            "%s: failed after %d attempts, kept for an operator: %s", where, record.attempts, error
        )
    else:
        logger.info(
            "%s: attempt %d failed (%s); retry at %s",
            where,
            record.attempts,
            error,
            time.strftime("%H:%M:%S", time.gmtime(record.next_attempt_ms / 1000)),
        )
