"""The actions: wire request in, TaskService call, wire result out.

Beyond Volcengine's, three operator actions look after the AppId's callback events:
``ListCallbackDeliveries``, ``RedeliverCallbacks`` and ``DiscardCallbacks``. They are
signed like the others and served only to an access key that owns the AppId.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from relaystream.api.control import control_from_wire, control_to_wire, merged_control
from relaystream.api.errors import (
    INVALID_NOT_EXIST_APP_ID,
    NO_PERMISSION_FOR_APP,
    QPS_OVER_LIMIT,
    TASK_NUMBER_OVER_LIMIT,
    ApiError,
    invalid_parameter,
    task_not_found,
)
from relaystream.api.models import (
    CallbackEventsRequest,
    ListCallbackDeliveriesRequest,
    ListRelayStreamRequest,
    StartRelayStreamRequest,
    TaskKeyRequest,
    UpdateRelayStreamRequest,
    parse,
)
from relaystream.api.ratelimit import RateLimiter
from relaystream.api.turns import AppTurns
from relaystream.callbacks.operators import UNDELIVERED, CallbackDeliveries
from relaystream.config import Config
from relaystream.media.source import SourceError, check_scheme
from relaystream.netpolicy import AddressPolicy, AddressRefused
from relaystream.store import CallbackRecord, CallbackState
from relaystream.tasks.control import RelayControl
from relaystream.tasks.limits import TaskLimitReached
from relaystream.tasks.model import RelayTask, TaskKey
from relaystream.tasks.runner import RunStats
from relaystream.tasks.service import StartResult, TaskRequestError, TaskService, TaskView

# A viewer joining mid-stream waits up to one keyframe interval for a picture.
KEYFRAME_INTERVAL_WARN_S = 5.0

# Starts and Updates of one AppId in progress at once; the others wait their turn. A
# few keep the store busy; more would only make other AppIds wait.
WRITES_IN_PROGRESS_PER_APP = 4

ALREADY_STARTED = (
    "The task has been started. Please do not call the startup task interface repeatedly"
)


@dataclass(frozen=True)
class Caller:
    access_key_id: str


Handler = Callable[[Caller, dict[str, Any]], Awaitable[Any]]


class Actions:
    def __init__(
        self,
        config: Config,
        tasks: TaskService,
        stream_urls: AddressPolicy,
        callbacks: CallbackDeliveries,
        live_nodes: Callable[[], int] = lambda: 1,
    ) -> None:
        self._config = config
        self._tasks = tasks
        self._stream_urls = stream_urls
        self._callbacks = callbacks
        self._rate_limiter = RateLimiter()
        # Nodes sharing the store split each AppId's limit evenly (a per-node share: it
        # holds across nodes when a load balancer spreads the requests).
        self._live_nodes = live_nodes
        self._turns = AppTurns(WRITES_IN_PROGRESS_PER_APP)

    def table(self) -> dict[str, Handler]:
        """Action name → handler; GET is allowed only for the read actions."""
        return {
            "StartRelayStream": self.start_relay_stream,
            "StopRelayStream": self.stop_relay_stream,
            "UpdateRelayStream": self.update_relay_stream,
            "GetRelayStream": self.get_relay_stream,
            "ListRelayStream": self.list_relay_stream,
            "ListCallbackDeliveries": self.list_callback_deliveries,
            "RedeliverCallbacks": self.redeliver_callbacks,
            "DiscardCallbacks": self.discard_callbacks,
        }

    read_only_actions = frozenset({"GetRelayStream", "ListRelayStream", "ListCallbackDeliveries"})

    def _authorize_app(self, caller: Caller, app_id: str) -> None:
        app = self._config.app(app_id)
        if app is None:
            raise ApiError(INVALID_NOT_EXIST_APP_ID, f"The AppId {app_id} does not exist.")
        if app_id not in self._config.apps_of(caller.access_key_id):
            raise ApiError(
                NO_PERMISSION_FOR_APP,
                f"The access key {caller.access_key_id} has no permission for AppId {app_id}.",
            )
        share = max(1, math.ceil(app.qps_limit / max(1, self._live_nodes())))
        if not self._rate_limiter.allow(app_id, share):
            raise ApiError(
                QPS_OVER_LIMIT,
                f"AppId {app_id} is over its limit of {app.qps_limit} requests per second.",
            )

    async def start_relay_stream(self, caller: Caller, body: dict[str, Any]) -> str:
        request = parse(StartRelayStreamRequest, body)
        self._authorize_app(caller, request.AppId)
        check_stream_url(request.Control.StreamUrl, self._stream_urls)
        task = _task_from_request(request)
        try:
            async with self._turns.turn(request.AppId):
                result = await self._tasks.start(task)
        except TaskRequestError as exc:
            raise invalid_parameter(exc.field, exc.reason) from None
        except TaskLimitReached as exc:
            raise ApiError(TASK_NUMBER_OVER_LIMIT, f"Cannot start the task: {exc}.") from None
        return ALREADY_STARTED if result is StartResult.ALREADY_ACTIVE else "ok"

    async def update_relay_stream(self, caller: Caller, body: dict[str, Any]) -> str:
        request = parse(UpdateRelayStreamRequest, body)
        self._authorize_app(caller, request.AppId)
        key = TaskKey(request.AppId, request.RoomId, request.TaskId)

        def change(stored: RelayControl) -> RelayControl:
            merged = merged_control(stored, request.Control.model_dump(exclude_none=True))
            check_stream_url(merged.stream_url, self._stream_urls)
            return merged

        async with self._turns.turn(request.AppId):
            updated = await self._tasks.update(key, change)
        if updated is None:
            raise task_not_found(key.app_id, key.room_id, key.task_id)
        return "ok"

    async def stop_relay_stream(self, caller: Caller, body: dict[str, Any]) -> str:
        request = parse(TaskKeyRequest, body)
        self._authorize_app(caller, request.AppId)
        key = TaskKey(request.AppId, request.RoomId, request.TaskId)
        # No turn: a Stop waits for the task's worker to go, which must not hold up the
        # AppId's other writes.
        if await self._tasks.stop(key) is None:
            raise task_not_found(key.app_id, key.room_id, key.task_id)
        return "ok"

    async def get_relay_stream(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        request = parse(TaskKeyRequest, body)
        self._authorize_app(caller, request.AppId)
        key = TaskKey(request.AppId, request.RoomId, request.TaskId)
        view = await self._tasks.get(key)
        if view is None:
            raise task_not_found(key.app_id, key.room_id, key.task_id)
        return {"Task": task_to_wire(view)}

    async def list_relay_stream(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        request = parse(ListRelayStreamRequest, body)
        self._authorize_app(caller, request.AppId)
        found = await self._tasks.list(
            request.AppId,
            request.RoomId or None,
            offset=request.Offset,
            limit=request.Limit,
            newest_first=request.Order == 0,
        )
        return {
            "Total": found.total,
            "Tasks": [task_to_wire(TaskView(task, stats=None)) for task in found.tasks],
        }

    async def list_callback_deliveries(
        self, caller: Caller, body: dict[str, Any]
    ) -> dict[str, Any]:
        request = parse(ListCallbackDeliveriesRequest, body)
        self._authorize_app(caller, request.AppId)
        states = (CallbackState(request.State),) if request.State else UNDELIVERED
        records = await self._callbacks.list(request.AppId, states, request.Limit)
        return {"Deliveries": [delivery_to_wire(record) for record in records]}

    async def redeliver_callbacks(self, caller: Caller, body: dict[str, Any]) -> dict[str, int]:
        request = parse(CallbackEventsRequest, body)
        self._authorize_app(caller, request.AppId)
        return {"Redelivered": await self._callbacks.redeliver(request.AppId, request.EventIds)}

    async def discard_callbacks(self, caller: Caller, body: dict[str, Any]) -> dict[str, int]:
        request = parse(CallbackEventsRequest, body)
        self._authorize_app(caller, request.AppId)
        return {"Discarded": await self._callbacks.discard(request.AppId, request.EventIds)}


def delivery_to_wire(record: CallbackRecord) -> dict[str, Any]:
    """One callback event as operators see it (the body as sent, without signature)."""
    return {
        "EventId": record.event_id,
        "RoomId": record.room_id,
        "TaskId": record.task_id,
        "Sequence": record.seq,
        "State": record.state.value,
        "Attempts": record.attempts,
        "NextAttemptTime": record.next_attempt_ms if record.state is CallbackState.PENDING else 0,
        "LastError": record.last_error,
        "CreateTime": record.created_ms,
        "DeliveredTime": record.delivered_ms,
        "EventData": record.body.get("EventData", ""),
    }


def check_stream_url(url: str, policy: AddressPolicy) -> None:
    """Refuse at once a scheme we never pull from, or a literal non-public address.

    A host name is left to the worker, which resolves, checks and pins it.
    """
    try:
        check_scheme(url)
        policy.refuse_literal(url)
    except SourceError as exc:
        raise invalid_parameter("Control.StreamUrl", exc.detail) from None
    except AddressRefused as exc:
        raise invalid_parameter("Control.StreamUrl", exc.detail) from None


def _task_from_request(request: StartRelayStreamRequest) -> RelayTask:
    return RelayTask(
        key=TaskKey(request.AppId, request.RoomId, request.TaskId),
        user_id=request.UserId,
        token=request.Token,
        business_id=request.BusinessId,
        max_idle_s=request.MaxIdleTime,
        control=control_from_wire(request.Control),
    )


def task_to_wire(view: TaskView) -> dict[str, Any]:
    """A task as List/Get show it (never its Token); Get adds live ``Stats``."""
    task = view.task
    wire: dict[str, Any] = {
        "AppId": task.key.app_id,
        "BusinessId": task.business_id,
        "RoomId": task.key.room_id,
        "TaskId": task.key.task_id,
        "UserId": task.user_id,
        "Status": int(task.status),
        "StopReason": task.stop_reason.value if task.stop_reason else "",
        "StopDetail": task.stop_detail,
        "CreateTime": task.create_time_ms,
        "StartTime": task.start_time_ms,
        "EndTime": task.end_time_ms,
        "MaxIdleTime": task.max_idle_s,
        **control_to_wire(task.control),
    }
    if view.stats is not None:
        wire["Stats"] = {**stats_to_wire(view.stats), "Viewers": view.viewers}
    return wire


def stats_to_wire(stats: RunStats) -> dict[str, Any]:
    fps, kbps = stats.output_rates()
    wire: dict[str, Any] = {
        "Input": _input_to_wire(stats),
        "OutputFrameRate": round(fps, 2),
        "OutputBitrateKbps": round(kbps, 1),
        "VideoFramesSent": stats.video_frames_sent,
        "AudioFramesSent": stats.audio_frames_sent,
        "BytesSent": stats.bytes_sent,
        "ReconnectCount": stats.reconnects,
        "LastError": stats.last_error,
        "WorkerCpuSeconds": round(stats.worker_cpu_s, 3),
        # Where it publishes and whether that link is up (an external SFU can go away).
        "Room": {"Target": stats.room_target, "Healthy": stats.room_link_healthy},
    }
    if stats.progress is not None:
        # Where a VOD is (a restart resumes near it) and how often it has looped.
        wire["SourcePositionSeconds"] = stats.progress.position_s
        wire["Loops"] = stats.progress.loops
    if stats.opened is not None:
        wire["Live"] = stats.opened.live
    if stats.opened is not None and stats.opened.video_output is not None:
        wire["Output"] = {"Video": _pascal_keys(asdict(stats.opened.video_output))}
    return wire


def _input_to_wire(stats: RunStats) -> dict[str, Any]:
    tracks: dict[str, Any] = {}
    opened, progress = stats.opened, stats.progress
    if opened is not None:
        if opened.video is not None:
            tracks["video"] = asdict(opened.video)
        if opened.audio is not None:
            tracks["audio"] = asdict(opened.audio)
    if progress is not None:
        for name in ("video", "audio"):
            counters = getattr(progress, name)
            if counters is not None:
                tracks.setdefault(name, {}).update(asdict(counters))
        if "video" in tracks:
            interval_s = progress.max_keyframe_interval_s
            tracks["video"]["max_keyframe_interval_s"] = interval_s
            tracks["video"]["keyframe_interval_over_limit"] = interval_s > KEYFRAME_INTERVAL_WARN_S
    return _pascal_keys(tracks)  # type: ignore[no-any-return]


def _pascal_keys(value: Any) -> Any:
    """``{"frame_rate": ..}`` → ``{"FrameRate": ..}``, recursively."""
    if isinstance(value, dict):
        return {
            "".join(part.capitalize() for part in str(key).split("_")): _pascal_keys(item)
            for key, item in value.items()
        }
    return value
