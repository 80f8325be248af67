"""The delivery worker against a real receiver on 127.0.0.1 and the real store: retries
back off, stop at the end of the window (the event is kept as failed), and a callback
URL the address policy refuses is never connected to."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from relaystream.callbacks.delivery import (
    CallbackDelivery,
    CallbackTarget,
    DeliverySettings,
    backoff_s,
)
from relaystream.callbacks.events import VisibleState, event_record
from relaystream.callbacks.outbox import CallbackOutbox
from relaystream.callbacks.sender import HttpCallbackSender
from relaystream.store import CallbackRecord, CallbackState
from relaystream.store.sqlite import SqliteTaskStore
from tests.support.callbacks import CallbackReceiver, callback_receiver

APP = "5f8a1c2b3d4e5f6a7b8c9d0e"
SECRET = "delivery-secret"
FAST = DeliverySettings(
    timeout_s=2.0, backoff_base_s=0.1, backoff_cap_s=0.2, retry_window_s=0.8, poll_interval_s=0.1
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteTaskStore]:
    store = await SqliteTaskStore.open(tmp_path / "tasks.db")
    yield store
    await store.close()


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with callback_receiver(SECRET) as receiver:
        yield receiver


async def add_event(store: SqliteTaskStore, task_id: str) -> CallbackRecord:
    state = VisibleState(APP, "room-1", task_id, "user", "", "rtmp://a/b", 0, status=1)
    record = event_record(state, int(time.time() * 1000))
    async with store.transaction() as unit:
        await unit.add_callback(record)
    return record


async def settled(store: SqliteTaskStore, state: CallbackState) -> list[CallbackRecord]:
    deadline = time.monotonic() + 10
    while not (records := await store.list_callbacks(APP, [state], 10)):
        assert time.monotonic() < deadline, f"no {state.value} event"
        await asyncio.sleep(0.05)
    return records


async def run_delivery(
    store: SqliteTaskStore, url: str, *, allow_private: bool = True
) -> tuple[asyncio.Task[None], HttpCallbackSender]:
    sender = HttpCallbackSender(allow_private=allow_private, timeout_s=FAST.timeout_s, threads=4)
    delivery = CallbackDelivery(
        store, CallbackOutbox(lambda _: True), sender, lambda _: CallbackTarget(url, SECRET), FAST
    )
    return asyncio.create_task(delivery.run_forever()), sender


async def test_an_event_nobody_takes_fails_at_the_end_of_its_window(
    store: SqliteTaskStore, receiver: CallbackReceiver
) -> None:
    receiver.down()
    record = await add_event(store, "unheard")
    worker, sender = await run_delivery(store, receiver.url)
    try:
        [failed] = await settled(store, CallbackState.FAILED)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        sender.close()
    assert failed.event_id == record.event_id
    # Backed off from 0.1 s to 0.2 s within a 0.8 s window: a handful of tries, not a storm.
    assert 3 <= failed.attempts <= 9
    assert "refused" in failed.last_error.lower()


async def test_a_callback_url_the_policy_refuses_is_never_sent_to(
    store: SqliteTaskStore, receiver: CallbackReceiver
) -> None:
    await add_event(store, "private")
    # The receiver listens on loopback, which callbacks may not reach by default.
    worker, sender = await run_delivery(store, receiver.url, allow_private=False)
    try:
        [failed] = await settled(store, CallbackState.FAILED)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        sender.close()
    assert "callbacks.allow_private" in failed.last_error
    assert receiver.events == [] and receiver.rejected == []


async def test_a_delivered_event_is_signed_and_settled(
    store: SqliteTaskStore, receiver: CallbackReceiver
) -> None:
    record = await add_event(store, "heard")
    worker, sender = await run_delivery(store, receiver.url)
    try:
        [delivered] = await settled(store, CallbackState.DELIVERED)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        sender.close()
    assert delivered.attempts == 1 and delivered.delivered_ms > 0
    assert [event.event_id for event in receiver.events] == [record.event_id]


def test_backoff_doubles_from_the_base_up_to_the_cap_with_jitter() -> None:
    settings = DeliverySettings(backoff_base_s=1.0, backoff_cap_s=300.0)
    for attempts, nominal in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0)):
        waits = [backoff_s(attempts, settings) for _ in range(50)]
        assert all(0.8 * nominal <= wait <= 1.2 * nominal for wait in waits)
        assert len(set(waits)) > 1  # jittered
    assert all(backoff_s(n, settings) <= 300.0 for n in (9, 10, 100, 10_000))
    assert max(backoff_s(20, settings) for _ in range(50)) == pytest.approx(300.0, rel=0.2)
