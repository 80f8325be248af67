"""What ``relaystream tasks`` and ``watch`` make of the API's answers."""

from __future__ import annotations

from typing import Any

from relaystream.task_table import (
    TASK_COLUMNS,
    format_columns,
    live_row,
    sample_of,
    task_rows,
)


def task(**changes: Any) -> dict[str, Any]:
    return {
        "AppId": "app",
        "RoomId": "room",
        "TaskId": "t1",
        "UserId": "u1",
        "Status": 2,
        "CreateTime": 1_000_000,
        "StreamMode": 1,
        "StreamUrl": "rtmp://live.example/app/stream",
        "StopReason": "",
        "StopDetail": "",
        **changes,
    }


def stats(frames_in: int, frames_out: int, bytes_out: int, cpu_s: float) -> dict[str, Any]:
    return {
        "Input": {"Video": {"Packets": frames_in, "FrameRate": 25.0}},
        "VideoFramesSent": frames_out,
        "BytesSent": bytes_out,
        "WorkerCpuSeconds": cpu_s,
        "OutputFrameRate": 24.0,
        "OutputBitrateKbps": 900.0,
        "Viewers": 3,
    }


def test_watch_rates_come_from_two_refreshes() -> None:
    before = sample_of(stats(100, 90, 1_000_000, 1.0), at_s=10.0)
    now_stats = stats(150, 140, 1_250_000, 1.5)
    row = live_row(task(Stats=now_stats), sample_of(now_stats, at_s=12.0), before)
    assert row.input_fps == 25.0
    assert row.output_fps == 25.0
    assert row.output_kbps == 1000.0  # 250 kB in 2 s
    assert row.cpu_percent == 25.0  # 0.5 s of CPU in 2 s
    assert row.viewers == 3
    assert row.status == "running"


def test_watch_first_refresh_shows_the_tasks_own_averages() -> None:
    first = stats(100, 90, 1_000_000, 1.0)
    row = live_row(task(Stats=first), sample_of(first, at_s=10.0), None)
    assert (row.input_fps, row.output_fps, row.output_kbps) == (25.0, 24.0, 900.0)
    assert row.cpu_percent is None


def test_a_task_without_stats_has_no_rates() -> None:
    row = live_row(task(Status=1), None, None)
    assert row.status == "starting"
    assert row.output_fps is None and row.viewers == 0


def test_tasks_print_as_aligned_columns() -> None:
    rows = task_rows(
        [
            task(),
            task(TaskId="longer-task-id", Status=3, StopReason="SourceError", StopDetail="404"),
        ],
        now_s=1_000 + 75,
    )
    text = format_columns(TASK_COLUMNS, rows)
    lines = text.splitlines()
    assert lines[0].startswith("TASK ID")
    assert lines[1].split()[:4] == ["t1", "room", "u1", "running"]
    assert "1m15s ago" in lines[1]
    assert lines[2].endswith("SourceError 404")
    status_column = lines[0].index("STATUS")
    assert lines[1][status_column:].startswith("running")
    assert lines[2][status_column:].startswith("ended")
