"""RelayStreamStateChanged callbacks reach a real receiver: signed, in order, at least
once, through a receiver's outage, a server's SIGKILL, 500s and a hanging receiver.

Every story runs a real server and a real HTTP receiver on 127.0.0.1 that checks each
event the way a customer's would (tests/support/callbacks.py), and drives tasks
through the official SDK.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relaystream.media.testsrc import ClipSpec, make_test_clip
from tests.support.callbacks import CallbackReceiver, callback_receiver, problems_with
from tests.support.net import static_http_server
from tests.support.sdk import RtcService
from tests.support.server import (
    ACCESS_KEY_ID,
    APP_ID,
    SECOND_APP_ID,
    SECRET_ACCESS_KEY,
    RelayServer,
    start_server,
)

ROOM = "room-callbacks"
SECRET = "callback-secret-1"
SECOND_SECRET = "callback-secret-2"
# Short retries, so that a story about an outage takes seconds, not minutes.
FAST_RETRIES = "allow_private = true\nbackoff_base_s = 0.2\nbackoff_cap_s = 1.0\n"


@pytest.fixture(scope="module")
def clip_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 3 s VOD clip over HTTP: it runs, then ends with SourceEnded."""
    root: Path = tmp_path_factory.mktemp("callback-media")
    spec = ClipSpec(duration_s=3.0, width=320, height=180, frame_rate=15, audio_codec=None)
    make_test_clip(root / "three.mp4", spec)
    with static_http_server(root) as base_url:
        yield f"{base_url}/three.mp4"


def app_callbacks(receiver: CallbackReceiver, secret: str) -> str:
    return f'callback_url = "{receiver.url}"\ncallback_secret = "{secret}"\n'


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with callback_receiver(SECRET) as receiver:
        yield receiver


@pytest.fixture
def server(tmp_path: Path, receiver: CallbackReceiver) -> Iterator[RelayServer]:
    server = start_server(
        tmp_path / "server",
        app_toml={APP_ID: app_callbacks(receiver, SECRET)},
        callbacks_toml=FAST_RETRIES,
    )
    yield server
    server.stop()


def sdk(server: RelayServer) -> RtcService:
    return RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)


def start(
    server: RelayServer,
    task_id: str,
    url: str,
    *,
    app_id: str = APP_ID,
    start_at_s: int = 0,
) -> None:
    body = {
        "AppId": app_id,
        "RoomId": ROOM,
        "TaskId": task_id,
        "UserId": task_id,
        "Token": server.publish_token(ROOM, task_id, app_id=app_id),
        "Control": {"StreamUrl": url, "StreamMode": 1, "StartTimeStamp": start_at_s},
    }
    assert sdk(server).action("StartRelayStream", body)["Result"] == "ok"


def stop(server: RelayServer, task_id: str, *, app_id: str = APP_ID) -> None:
    key = {"AppId": app_id, "RoomId": ROOM, "TaskId": task_id}
    assert sdk(server).action("StopRelayStream", key)["Result"] == "ok"


def status_of(server: RelayServer, task_id: str) -> int:
    key = {"AppId": APP_ID, "RoomId": ROOM, "TaskId": task_id}
    return int(sdk(server).action("GetRelayStream", key)["Result"]["Task"]["Status"])


def has_states(task_id: str, count: int) -> Any:
    return lambda receiver: len(receiver.states_of(task_id)) >= count


def test_a_task_life_yields_signed_events_in_order(
    server: RelayServer, receiver: CallbackReceiver, clip_url: str
) -> None:
    # One task is scheduled, runs, and is stopped by the API; the other ends by itself.
    start(server, "scheduled", clip_url, start_at_s=int(time.time()) + 2)
    start(server, "vod", clip_url)
    receiver.wait_for(has_states("vod", 3), 30, "the VOD's three events")
    receiver.wait_for(has_states("scheduled", 2), 30, "the scheduled task running")
    stop(server, "scheduled")
    receiver.wait_for(has_states("scheduled", 3), 10, "the scheduled task's stop")

    assert receiver.states_of("vod") == [(1, ""), (2, ""), (3, "SourceEnded")]
    assert receiver.states_of("scheduled") == [(1, ""), (2, ""), (3, "ApiStop")]
    assert receiver.rejected == []
    event_ids = [event.event_id for event in receiver.events]
    assert len(set(event_ids)) == len(event_ids) == 6
    first = receiver.of_task("scheduled")[0]
    assert first.data["UserId"] == "scheduled" and first.data["RoomId"] == ROOM
    assert first.data["StreamUrl"] == clip_url and first.data["StartTimeStamp"] > 0
    # Every event of a task is acknowledged before the next one is sent.
    for task_id in ("vod", "scheduled"):
        times = [event.received_at for event in receiver.of_task(task_id)]
        assert times == sorted(times)


def test_events_wait_out_a_receiver_outage_and_arrive_in_order(
    server: RelayServer, receiver: CallbackReceiver
) -> None:
    receiver.down()
    later = int(time.time()) + 3600  # scheduled: Start and Stop make two events each
    for task_id in ("outage-a", "outage-b"):
        start(server, task_id, "http://127.0.0.1:9/never.mp4", start_at_s=later)
        stop(server, task_id)
    time.sleep(5)  # the length of the outage this story is about
    assert receiver.events == []
    receiver.up()
    receiver.wait_for(lambda r: len(r.events) >= 4, 15, "the four events after the outage")
    for task_id in ("outage-a", "outage-b"):
        assert receiver.states_of(task_id) == [(1, ""), (3, "ApiStop")]
    assert "attempt 1 failed" in server.log()


def test_undelivered_events_survive_a_sigkill(
    server: RelayServer, receiver: CallbackReceiver
) -> None:
    receiver.down()
    start(server, "crash", "http://127.0.0.1:9/never.mp4", start_at_s=int(time.time()) + 3600)
    stop(server, "crash")
    # Both events are committed (the API answered) and none can have been delivered.
    server.kill()
    receiver.up()
    restarted = server.restart()
    try:
        receiver.wait_for(has_states("crash", 2), 15, "the events after the restart")
        assert receiver.states_of("crash") == [(1, ""), (3, "ApiStop")]
    finally:
        restarted.stop()


def test_a_receiver_answering_500_gets_retries_until_200(
    server: RelayServer, receiver: CallbackReceiver
) -> None:
    receiver.answer_500_times = 3
    start(server, "flaky", "http://127.0.0.1:9/never.mp4", start_at_s=int(time.time()) + 3600)
    receiver.wait_for(has_states("flaky", 1), 15, "the event after three 500s")
    assert receiver.answered_500 == 3
    assert receiver.states_of("flaky") == [(1, "")]
    assert "HTTP 500" in server.log()


def test_a_receiver_with_another_secret_rejects_every_event(
    tmp_path: Path, receiver: CallbackReceiver
) -> None:
    # The server signs with another secret than the receiver checks with.
    server = start_server(
        tmp_path / "server",
        app_toml={APP_ID: app_callbacks(receiver, "not-the-receivers-secret")},
        callbacks_toml=FAST_RETRIES,
    )
    try:
        start(server, "forged", "http://127.0.0.1:9/never.mp4", start_at_s=int(time.time()) + 3600)
        receiver.wait_for(lambda r: len(r.rejected) >= 2, 15, "two rejected attempts")
    finally:
        server.stop()
    assert receiver.events == []
    for body, problems in receiver.rejected:
        assert problems == ["bad signature"]
        # The signature is real: it is the one the server's secret makes.
        assert problems_with(body, "not-the-receivers-secret") == []
    assert len({body["EventId"] for body, _ in receiver.rejected}) == 1  # one event, retried


def test_a_hanging_receiver_does_not_delay_another_apps_events(tmp_path: Path) -> None:
    with (
        callback_receiver(SECRET) as hanging,
        callback_receiver(SECOND_SECRET) as healthy,
    ):
        hanging.hang_s = 30
        server = start_server(
            tmp_path / "server",
            app_toml={
                APP_ID: app_callbacks(hanging, SECRET),
                SECOND_APP_ID: app_callbacks(healthy, SECOND_SECRET),
            },
            callbacks_toml=FAST_RETRIES,
        )
        try:
            later = int(time.time()) + 3600
            for n in range(6):  # more stuck events than one app may send at once
                start(server, f"stuck-{n}", "http://127.0.0.1:9/never.mp4", start_at_s=later)
            hanging.wait_for(lambda r: r.hanging >= 1, 10, "a request held by the receiver")
            asked_at = time.monotonic()
            start(
                server,
                "healthy",
                "http://127.0.0.1:9/never.mp4",
                app_id=SECOND_APP_ID,
                start_at_s=later,
            )
            stop(server, "healthy", app_id=SECOND_APP_ID)
            healthy.wait_for(has_states("healthy", 2), 3, "the other app's events")
            assert time.monotonic() - asked_at < 3
            assert healthy.states_of("healthy") == [(1, ""), (3, "ApiStop")]
            assert hanging.hanging >= 1, "the hanging receiver is still hanging"
            assert hanging.events == []
        finally:
            server.stop()
