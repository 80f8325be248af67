"""A real callback receiver on 127.0.0.1: an aiohttp app on a thread of its own.

It checks each POST the way a Volcengine customer's receiver would (SPEC §5), with its
own implementation of the signature, not relaystream's: the body's fields and types,
``EventData`` as a JSON string, ``Version``, a 4-character ``Nonce``, an RFC 3339
``EventTime``, and ``Signature = hex(sha256(concat(sorted([EventType, EventData,
EventTime, EventId, AppId, Version, Nonce, secret]))))``. A valid event is answered
200 and kept; an invalid one is answered 401 and kept apart.

A test can take it down and up again on the same port, make it answer 500 for a while,
or make it hang.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from tests.support.net import free_port

_SIGNED = ("EventType", "EventData", "EventTime", "EventId", "AppId", "Version", "Nonce")
_EVENT_DATA_FIELDS = {
    "AppId": str,
    "BusinessId": str,
    "RoomId": str,
    "TaskId": str,
    "UserId": str,
    "StreamUrl": str,
    "Status": int,
    "StartTimeStamp": int,
    "Msg": str,
    "Reason": str,
}


def expected_signature(body: dict[str, Any], secret: str) -> str:
    values = sorted([*(str(body[name]) for name in _SIGNED), secret])
    return hashlib.sha256("".join(values).encode("utf-8")).hexdigest()


def problems_with(body: Any, secret: str) -> list[str]:
    """Why ``body`` is not a valid RelayStreamStateChanged event; empty when it is."""
    if not isinstance(body, dict):
        return ["not a JSON object"]
    problems = [
        f"{name} is not a string"
        for name in (*_SIGNED, "Signature")
        if not isinstance(body.get(name), str)
    ]
    if problems:
        return problems
    if body["EventType"] != "RelayStreamStateChanged":
        problems.append(f"EventType {body['EventType']!r}")
    if body["Version"] != "2020-12-01":
        problems.append(f"Version {body['Version']!r}")
    if len(body["Nonce"]) != 4:
        problems.append(f"Nonce {body['Nonce']!r} is not 4 characters")
    try:
        moment = datetime.fromisoformat(body["EventTime"])
        if moment.tzinfo is None:
            problems.append("EventTime has no time zone")
    except ValueError:
        problems.append(f"EventTime {body['EventTime']!r} is not RFC 3339")
    try:
        data = json.loads(body["EventData"])
    except ValueError:
        return [*problems, "EventData is not JSON"]
    for name, kind in _EVENT_DATA_FIELDS.items():
        if not isinstance(data.get(name), kind):
            problems.append(f"EventData.{name} is not {kind.__name__}")
    if data.get("AppId") != body["AppId"]:
        problems.append("EventData.AppId is not the body's AppId")
    if body["Signature"] != expected_signature(body, secret):
        problems.append("bad signature")
    return problems


@dataclass(frozen=True)
class ReceivedEvent:
    body: dict[str, Any]
    data: dict[str, Any]  # EventData, decoded
    received_at: float  # time.monotonic()

    @property
    def event_id(self) -> str:
        return str(self.body["EventId"])

    @property
    def task_id(self) -> str:
        return str(self.data["TaskId"])

    @property
    def state(self) -> tuple[int, str]:
        return int(self.data["Status"]), str(self.data["Reason"])


class CallbackReceiver:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.port = free_port()
        self.events: list[ReceivedEvent] = []  # valid ones, answered 200
        self.rejected: list[tuple[dict[str, Any], list[str]]] = []  # answered 401
        self.answered_500 = 0
        self.hanging = 0  # requests being held right now
        self.answer_500_times = 0  # answer the next N valid events with 500
        self.hang_s = 0.0  # hold each request this long before answering
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._release: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/relay-events"

    def start(self) -> CallbackReceiver:
        self._thread.start()
        self._run(self._setup())
        self.up()
        return self

    def up(self) -> None:
        self._run(self._listen())

    def down(self) -> None:
        """Stop listening: connections to the port are refused."""
        self._run(self._stop_listening())

    def close(self) -> None:
        self._run(self._cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def wait_for(
        self, predicate: Callable[[CallbackReceiver], bool], timeout_s: float, what: str
    ) -> None:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out waiting for {what}; have {self.summary()}"
                self._changed.wait(left)

    def of_task(self, task_id: str) -> list[ReceivedEvent]:
        with self._changed:
            return [event for event in self.events if event.task_id == task_id]

    def states_of(self, task_id: str) -> list[tuple[int, str]]:
        return [event.state for event in self.of_task(task_id)]

    def summary(self) -> str:
        return (
            f"events={[(e.task_id, e.state) for e in self.events]} "
            f"rejected={[problems for _, problems in self.rejected]} "
            f"answered_500={self.answered_500} hanging={self.hanging}"
        )

    def _run(self, work: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(10)

    async def _setup(self) -> None:
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_post("/relay-events", self._receive)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    async def _stop_listening(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def _cleanup(self) -> None:
        assert self._runner is not None and self._release is not None
        self._release.set()
        await self._runner.cleanup()

    def _record(self, change: Callable[[], None]) -> None:
        with self._changed:
            change()
            self._changed.notify_all()

    async def _receive(self, request: web.Request) -> web.Response:
        assert self._release is not None
        if self.hang_s:
            self._record(lambda: setattr(self, "hanging", self.hanging + 1))
            try:
                await asyncio.wait_for(self._release.wait(), self.hang_s)
            except TimeoutError:
                pass
            finally:
                self._record(lambda: setattr(self, "hanging", self.hanging - 1))
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        problems = problems_with(body, self.secret)
        if problems:
            self._record(lambda: self.rejected.append((body, problems)))
            return web.json_response({"error": problems}, status=401)
        if self.answer_500_times > 0:
            self.answer_500_times -= 1
            self._record(lambda: setattr(self, "answered_500", self.answered_500 + 1))
            return web.json_response({"error": "try again"}, status=500)
        event = ReceivedEvent(body, json.loads(body["EventData"]), time.monotonic())
        self._record(lambda: self.events.append(event))
        return web.json_response({"ok": True})


@contextmanager
def callback_receiver(secret: str) -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver(secret).start()
    try:
        yield receiver
    finally:
        receiver.close()
