"""Prometheus metrics: the ``/metrics`` endpoint and the few calls that feed it.

Two kinds of series live here:
- Event counters (task starts and stops, API requests, callback deliveries), bumped by
  the code where the event happens through the narrow functions below
  (``task_started``, ``task_stopped``, ``callback_delivery``) and the API middleware.
- Live per-task series (status, frames and bytes in and out, viewers, worker CPU and
  memory), read at scrape time from what the server already keeps: the supervisor's
  runs and the rooms. Nothing on the media path counts anything for Prometheus.

All series are in one registry owned by this module; the server process' own CPU and
memory come with it (``process_*``).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

# A *_created series per counter doubles the output for a timestamp nobody graphs.
disable_created_metrics()  # type: ignore[no-untyped-call]
_REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=_REGISTRY)

_TASK_STARTS = Counter(
    "relaystream_task_starts_total",
    "Runs of tasks started, by why: a Start call (api) or a server restart (resume).",
    ["reason"],
    registry=_REGISTRY,
)
_TASK_STOPS = Counter(
    "relaystream_task_stops_total",
    "Tasks ended, by stop reason.",
    ["reason"],
    registry=_REGISTRY,
)
_API_REQUESTS = Counter(
    "relaystream_api_requests_total",
    "OpenAPI requests, by action and answer code (OK or the error code).",
    ["action", "code"],
    registry=_REGISTRY,
)
_API_SECONDS = Histogram(
    "relaystream_api_request_duration_seconds",
    "Time to answer an OpenAPI request, by action.",
    ["action"],
    registry=_REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
_CALLBACK_DELIVERIES = Counter(
    "relaystream_callback_deliveries_total",
    "State callback delivery attempts, by outcome.",
    ["outcome"],
    registry=_REGISTRY,
)


class StartKind(StrEnum):
    API = "api"  # a StartRelayStream call
    RESUME = "resume"  # an active task picked up again when the server starts


class DeliveryOutcome(StrEnum):
    DELIVERED = "delivered"  # the receiver answered 2xx
    RETRYING = "retrying"  # a timeout or a non-2xx: tried again later
    FAILED = "failed"  # the retry window ran out: kept as failed


def task_started(kind: StartKind) -> None:
    _TASK_STARTS.labels(kind.value).inc()


def task_stopped(reason: str) -> None:
    _TASK_STOPS.labels(reason).inc()


def callback_delivery(outcome: DeliveryOutcome) -> None:
    """One delivery attempt of a state callback ended with ``outcome``."""
    _CALLBACK_DELIVERIES.labels(outcome.value).inc()


def api_request(action: str, code: str, seconds: float) -> None:
    _API_REQUESTS.labels(action, code).inc()
    _API_SECONDS.labels(action).observe(seconds)


for _outcome in DeliveryOutcome:  # present at 0 before the first delivery
    _CALLBACK_DELIVERIES.labels(_outcome.value)


# --- live per-task series, sampled at scrape time ---------------------------------------


@dataclass(frozen=True)
class TaskSample:
    """One active task as a scrape sees it."""

    app_id: str
    room_id: str
    task_id: str
    running: bool  # media is flowing into the room (status 2); else starting (status 1)
    # Per track ("video", "audio"): read from the source, and sent into the room.
    frames_in: dict[str, int] = field(default_factory=dict)
    bytes_in: dict[str, int] = field(default_factory=dict)
    frames_out: dict[str, int] = field(default_factory=dict)
    bytes_out: int = 0
    viewers: int = 0
    worker_cpu_s: float = 0.0
    worker_memory_bytes: int = 0


TaskSampler = Callable[[], Iterable[TaskSample]]

_TASK_LABELS = ["app_id", "room_id", "task_id"]


class _LiveTasks(Collector):
    """Yields the per-task series from whatever sampler the server installed."""

    def __init__(self) -> None:
        self.sampler: TaskSampler = tuple

    def collect(self) -> Iterator[Metric]:
        samples = list(self.sampler())
        tasks = GaugeMetricFamily(
            "relaystream_tasks", "Active tasks on this node, by status.", labels=["status"]
        )
        running = sum(1 for s in samples if s.running)
        tasks.add_metric(["starting"], len(samples) - running)
        tasks.add_metric(["running"], running)
        yield tasks

        frames = CounterMetricFamily(
            "relaystream_task_frames",
            "Frames (packets) of a task, read from its source (in) or sent to its room (out).",
            labels=[*_TASK_LABELS, "direction", "track"],
        )
        octets = CounterMetricFamily(
            "relaystream_task_bytes",
            "Bytes of a task, read from its source (in) or sent to its room (out).",
            labels=[*_TASK_LABELS, "direction"],
        )
        viewers = GaugeMetricFamily(
            "relaystream_task_viewers",
            "Viewers watching a task's publication.",
            labels=_TASK_LABELS,
        )
        cpu = CounterMetricFamily(
            "relaystream_task_worker_cpu_seconds",
            "CPU time (user + system) of a task's current media worker.",
            labels=_TASK_LABELS,
        )
        memory = GaugeMetricFamily(
            "relaystream_task_worker_memory_bytes",
            "Resident memory of a task's current media worker.",
            labels=_TASK_LABELS,
        )
        for sample in samples:
            key = [sample.app_id, sample.room_id, sample.task_id]
            for direction, counts in (("in", sample.frames_in), ("out", sample.frames_out)):
                for track, count in sorted(counts.items()):
                    frames.add_metric([*key, direction, track], count)
            octets.add_metric([*key, "in"], sum(sample.bytes_in.values()))
            octets.add_metric([*key, "out"], sample.bytes_out)
            viewers.add_metric(key, sample.viewers)
            cpu.add_metric(key, sample.worker_cpu_s)
            memory.add_metric(key, sample.worker_memory_bytes)
        yield from (frames, octets, viewers, cpu, memory)


_LIVE_TASKS = _LiveTasks()
_REGISTRY.register(_LIVE_TASKS)


# --- HTTP -------------------------------------------------------------------------------

# The answer's code (OK or the error code), left on an API response for the middleware.
API_CODE_KEY = web.ResponseKey("relaystream_api_code", str)
_OTHER_ACTION = "other"  # an unknown Action: one label value, not one per typo


class MetricsEndpoint:
    """``GET /metrics`` (optionally behind a bearer token) and the API timing middleware."""

    def __init__(
        self, sampler: TaskSampler, *, token: str | None, api_actions: Iterable[str]
    ) -> None:
        _LIVE_TASKS.sampler = sampler
        self._token = token
        self._api_actions = frozenset(api_actions)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/metrics", self.scrape)]

    async def scrape(self, request: web.Request) -> web.Response:
        if self._token is not None and not _bearer_matches(request, self._token):
            raise web.HTTPUnauthorized(
                text="a Bearer token is required for /metrics\n",
                headers={"WWW-Authenticate": "Bearer"},
            )
        response = web.Response(body=generate_latest(_REGISTRY))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    @web.middleware
    async def time_api(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Count and time every answer of the OpenAPI endpoint (path ``/``)."""
        if request.path != "/":
            return await handler(request)
        started = time.perf_counter()
        response = await handler(request)
        action = request.query.get("Action", "")
        api_request(
            action if action in self._api_actions else _OTHER_ACTION,
            str(response.get(API_CODE_KEY, response.status)),
            time.perf_counter() - started,
        )
        return response


def _bearer_matches(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())
