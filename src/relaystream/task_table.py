"""``relaystream tasks`` and ``relaystream watch``: what runs, seen through the API.

Both speak only the public API (ListRelayStream, then GetRelayStream for live
statistics), so they work against any relaystream node the credentials can reach.
``watch`` turns counters into rates between two refreshes: input and output frames per
second, output bitrate and the worker's share of a CPU core.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from relaystream.client import RelayStreamClient

LIST_PAGE = 100  # ListRelayStream's largest Limit
LIST_MAX_OFFSET = 9999


class Status(IntEnum):
    STARTING = 1
    RUNNING = 2
    ENDED = 3


@dataclass(frozen=True)
class TaskFilter:
    app_ids: tuple[str, ...]
    room_id: str | None = None
    statuses: frozenset[Status] = frozenset({Status.STARTING, Status.RUNNING})
    last: int | None = None  # at most this many, newest first


def list_tasks(client: RelayStreamClient, wanted: TaskFilter) -> list[dict[str, Any]]:
    """Tasks of every AppId in ``wanted``, newest first, filtered by status."""
    found: list[dict[str, Any]] = []
    for app_id in wanted.app_ids:
        found.extend(t for t in _pages(client, app_id, wanted.room_id) if _kept(t, wanted))
    found.sort(key=lambda t: int(t.get("CreateTime", 0)), reverse=True)
    return found[: wanted.last] if wanted.last is not None else found


def _pages(client: RelayStreamClient, app_id: str, room_id: str | None) -> Iterator[dict[str, Any]]:
    offset = 0
    while offset <= LIST_MAX_OFFSET:
        body: dict[str, Any] = {"AppId": app_id, "Offset": offset, "Limit": LIST_PAGE}
        if room_id:
            body["RoomId"] = room_id
        result = client.call("ListRelayStream", body)
        page = result.get("Tasks") or []
        yield from page
        offset += len(page)
        if not page or offset >= int(result.get("Total", 0)):
            return


def _kept(task: dict[str, Any], wanted: TaskFilter) -> bool:
    return Status(int(task["Status"])) in wanted.statuses


def task_rows(tasks: list[dict[str, Any]], now_s: float) -> list[list[str]]:
    """The rows of ``relaystream tasks``; see ``TASK_COLUMNS``."""
    return [
        [
            task["TaskId"],
            task["RoomId"],
            task["UserId"],
            Status(int(task["Status"])).name.lower(),
            _since(task, now_s),
            "remux" if int(task.get("StreamMode", 0)) == 1 else "transcode",
            task.get("StreamUrl", ""),
            " ".join(filter(None, (task.get("StopReason", ""), task.get("StopDetail", "")))),
        ]
        for task in tasks
    ]


TASK_COLUMNS = ("TASK ID", "ROOM", "USER", "STATUS", "CREATED", "MODE", "SOURCE", "STOP REASON")


def format_columns(header: tuple[str, ...], rows: list[list[str]]) -> str:
    """Plain aligned columns, like ``docker ps``: easy to read and to ``grep``/``awk``."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = [
        "   ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in (list(header), *rows)
    ]
    return "\n".join(lines)


def _since(task: dict[str, Any], now_s: float) -> str:
    created_ms = int(task.get("CreateTime", 0))
    return f"{_duration(now_s - created_ms / 1000)} ago" if created_ms else "-"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


# --- watch ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """Counters of one task at one moment, from GetRelayStream's ``Stats``."""

    at_s: float
    frames_in: int
    frames_out: int
    bytes_out: int
    cpu_s: float


@dataclass(frozen=True)
class LiveRow:
    task_id: str
    room_id: str
    status: str
    input_fps: float | None
    output_fps: float | None
    output_kbps: float | None
    viewers: int
    cpu_percent: float | None


def sample_of(stats: dict[str, Any], at_s: float) -> Sample:
    video_in = stats.get("Input", {}).get("Video", {})
    return Sample(
        at_s=at_s,
        frames_in=int(video_in.get("Packets", 0)),
        frames_out=int(stats.get("VideoFramesSent", 0)),
        bytes_out=int(stats.get("BytesSent", 0)),
        cpu_s=float(stats.get("WorkerCpuSeconds", 0.0)),
    )


def live_row(task: dict[str, Any], now: Sample | None, before: Sample | None) -> LiveRow:
    """A row of ``watch``: rates between two samples, or the task's own averages on the
    first refresh (and the input's nominal frame rate)."""
    stats = task.get("Stats") or {}
    input_fps = output_fps = output_kbps = cpu_percent = None
    if now is not None and before is not None and now.at_s > before.at_s:
        span_s = now.at_s - before.at_s
        input_fps = max(0, now.frames_in - before.frames_in) / span_s
        output_fps = max(0, now.frames_out - before.frames_out) / span_s
        output_kbps = max(0, now.bytes_out - before.bytes_out) * 8 / 1000 / span_s
        cpu_percent = max(0.0, now.cpu_s - before.cpu_s) / span_s * 100
    elif stats:
        nominal = stats.get("Input", {}).get("Video", {}).get("FrameRate")
        input_fps = float(nominal) if nominal is not None else None
        output_fps = float(stats.get("OutputFrameRate", 0.0))
        output_kbps = float(stats.get("OutputBitrateKbps", 0.0))
    return LiveRow(
        task_id=task["TaskId"],
        room_id=task["RoomId"],
        status=Status(int(task["Status"])).name.lower(),
        input_fps=input_fps,
        output_fps=output_fps,
        output_kbps=output_kbps,
        viewers=int(stats.get("Viewers", 0)),
        cpu_percent=cpu_percent,
    )


def live_table(rows: list[LiveRow], title: str) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for name in ("TASK ID", "ROOM", "STATUS"):
        table.add_column(name, no_wrap=True)
    for name in ("IN FPS", "OUT FPS", "OUT KBPS", "VIEWERS", "CPU %"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            row.task_id,
            row.room_id,
            row.status,
            _number(row.input_fps),
            _number(row.output_fps),
            _number(row.output_kbps, 0),
            str(row.viewers),
            _number(row.cpu_percent),
        )
    if not rows:
        table.add_row("(no active tasks)", "", "", "", "", "", "", "")
    return table


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class Watcher:
    """Refreshes: List the active tasks, Get each one, compute rates since last time."""

    def __init__(
        self,
        client: RelayStreamClient,
        wanted: TaskFilter,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._wanted = wanted
        self._clock = clock
        self._previous: dict[tuple[str, str, str], Sample] = {}

    def rows(self) -> list[LiveRow]:
        rows, seen = [], {}
        for listed in list_tasks(self._client, self._wanted):
            key = (listed["AppId"], listed["RoomId"], listed["TaskId"])
            task = self._client.call(
                "GetRelayStream", {"AppId": key[0], "RoomId": key[1], "TaskId": key[2]}
            )["Task"]
            stats = task.get("Stats")
            now = sample_of(stats, self._clock()) if stats else None
            rows.append(live_row(task, now, self._previous.get(key)))
            if now is not None:
                seen[key] = now
        self._previous = seen
        return rows


def watch(
    client: RelayStreamClient,
    wanted: TaskFilter,
    *,
    interval_s: float,
    refreshes: int | None,
    console: Console | None = None,
) -> None:
    """Show the live table until Ctrl-C (or ``refreshes`` refreshes); both end it normally."""
    watcher = Watcher(client, wanted)
    # Ctrl-C is how one quits, even when started with SIGINT ignored (as a background
    # job of a non-interactive shell is): Python would then never raise KeyboardInterrupt.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _refresh_until_quit(watcher, interval_s, refreshes, console)
    finally:
        signal.signal(signal.SIGINT, previous)


def _refresh_until_quit(
    watcher: Watcher, interval_s: float, refreshes: int | None, console: Console | None
) -> None:
    done = 0
    with Live(console=console, auto_refresh=False, transient=False) as live:
        try:
            while refreshes is None or done < refreshes:
                title = f"relaystream tasks at {time.strftime('%H:%M:%S')} (Ctrl-C to quit)"
                live.update(live_table(watcher.rows(), title), refresh=True)
                done += 1
                if refreshes is None or done < refreshes:
                    time.sleep(interval_s)
        except KeyboardInterrupt:
            pass  # how one quits watching: not an error
