"""Stories for the RelayTask state machine and its stored form."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from relaystream.media.spec import MediaType, StreamMode
from relaystream.tasks.model import (
    InvalidTransition,
    RelayControl,
    RelayTask,
    StopReason,
    TaskKey,
    TaskStatus,
    from_record,
    to_record,
)


def new_task(**control: object) -> RelayTask:
    settings = RelayControl(stream_url="rtmp://live.example.com/app/s", **control)  # type: ignore[arg-type]
    return RelayTask(
        key=TaskKey("5f8a1c2b3d4e5f6a7b8c9d0e", "room-1", "task-1"),
        user_id="relay-user",
        token="001token",
        control=settings,
    )


def test_a_new_task_is_starting_and_active() -> None:
    task = new_task()

    assert task.status is TaskStatus.STARTING
    assert task.active
    assert task.stop_reason is None
    assert task.create_time_ms > 0
    assert (task.start_time_ms, task.end_time_ms) == (0, 0)


def test_a_task_runs_reconnects_runs_again_and_stops() -> None:
    starting = new_task()

    running = starting.running()
    reconnecting = running.reconnecting()
    running_again = reconnecting.running()
    ended = running_again.stopped(StopReason.SOURCE_ERROR, "404 not found")

    assert [t.status for t in (starting, running, reconnecting, running_again, ended)] == [
        TaskStatus.STARTING,
        TaskStatus.RUNNING,
        TaskStatus.STARTING,
        TaskStatus.RUNNING,
        TaskStatus.ENDED,
    ]
    assert running.start_time_ms >= starting.create_time_ms
    assert ended.end_time_ms >= running_again.start_time_ms
    assert (ended.stop_reason, ended.stop_detail) == (StopReason.SOURCE_ERROR, "404 not found")
    assert not ended.active
    # Each change is a new value; the old ones still say what they said.
    assert starting.status is TaskStatus.STARTING and running.status is TaskStatus.RUNNING


def test_a_task_may_stop_before_it_ever_ran() -> None:
    ended = new_task().stopped(StopReason.TOKEN_INVALID, "signature mismatch")

    assert ended.status is TaskStatus.ENDED
    assert ended.start_time_ms == 0
    assert ended.stop_reason is StopReason.TOKEN_INVALID


@pytest.mark.parametrize(
    ("task", "change"),
    [
        (new_task().running(), RelayTask.running),
        (new_task(), RelayTask.reconnecting),
        (new_task().stopped(StopReason.API_STOP), RelayTask.running),
        (new_task().stopped(StopReason.API_STOP), RelayTask.reconnecting),
        (new_task().stopped(StopReason.API_STOP), lambda t: t.stopped(StopReason.API_STOP)),
    ],
    ids=["running-twice", "reconnect-before-running", "run-ended", "reconnect-ended", "stop-ended"],
)
def test_changes_the_state_machine_does_not_allow(task: RelayTask, change: object) -> None:
    with pytest.raises(InvalidTransition, match="task-1"):
        change(task)  # type: ignore[operator]


def test_a_task_survives_its_stored_form() -> None:
    task = new_task(
        media_type=MediaType.VIDEO_ONLY,
        stream_mode=StreamMode.REMUX,
        start_timestamp_s=1_700_000_000,
        loop=True,
        video_width=1280,
        video_height=720,
        frame_rate=25,
        bitrate_kbps=2500,
    )
    ended = task.running().stopped(StopReason.IDLE_TIMEOUT, "no media for 300 s")

    for original in (task, ended):
        record = to_record(original)
        # What the store sees: indexed columns and a JSON document it does not interpret.
        assert (record.app_id, record.room_id, record.task_id) == (
            "5f8a1c2b3d4e5f6a7b8c9d0e",
            "room-1",
            "task-1",
        )
        assert record.status == int(original.status)
        assert record.create_time_ms == original.create_time_ms
        document = json.loads(json.dumps(record.document))

        restored = from_record(replace(record, document=document))

        assert restored == original
        assert restored.control.media_type is MediaType.VIDEO_ONLY
        assert restored.control.stream_mode is StreamMode.REMUX
        assert isinstance(restored.status, TaskStatus)
    assert from_record(to_record(ended)).stop_reason is StopReason.IDLE_TIMEOUT
