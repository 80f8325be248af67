"""Driving relay tasks through the SDK from async tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from tests.support.sdk import RtcService
from tests.support.server import APP_ID, RelayServer


def task_key(room_id: str, task_id: str) -> dict[str, str]:
    return {"AppId": APP_ID, "RoomId": room_id, "TaskId": task_id}


async def call(rtc: RtcService, action: str, body: dict[str, Any]) -> Any:
    """The action's Result; the SDK is blocking, so it runs off the event loop."""
    envelope = await asyncio.to_thread(rtc.action, action, body)
    return envelope["Result"]


async def get_task(rtc: RtcService, room_id: str, task_id: str) -> dict[str, Any]:
    result = await call(rtc, "GetRelayStream", task_key(room_id, task_id))
    return dict(result["Task"])


async def wait_for_status(
    rtc: RtcService, room_id: str, task_id: str, status: int, timeout_s: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    task = await get_task(rtc, room_id, task_id)
    while task["Status"] != status and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        task = await get_task(rtc, room_id, task_id)
    assert task["Status"] == status, f"task stuck in {task}"
    return task


@contextlib.asynccontextmanager
async def running_relay(
    rtc: RtcService, server: RelayServer, source_url: str, room_id: str, user_id: str = "relay"
) -> AsyncIterator[str]:
    """A remux relay of ``source_url`` publishing in ``room_id``; yields its WHEP URL."""
    task_id = f"{room_id}-task"
    start = {
        **task_key(room_id, task_id),
        "UserId": user_id,
        "Token": server.publish_token(room_id, user_id),
        "Control": {"StreamUrl": source_url, "StreamMode": 1},
    }
    assert await call(rtc, "StartRelayStream", start) == "ok"
    try:
        await wait_for_status(rtc, room_id, task_id, 2)
        yield f"{server.base_url}/whep/{APP_ID}/{room_id}/{user_id}"
    finally:
        await call(rtc, "StopRelayStream", task_key(room_id, task_id))
