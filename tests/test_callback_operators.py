"""Operators see failed callback events, redeliver or discard them with the
``relaystream callbacks`` command, and a task is kept while one of its events is
undelivered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.callbacks import CallbackReceiver, callback_receiver
from tests.support.sdk import RtcService, VolcengineError
from tests.support.server import (
    ACCESS_KEY_ID,
    APP_ID,
    SECOND_APP_ID,
    SECRET_ACCESS_KEY,
    RelayServer,
    start_server,
)

ROOM = "room-operators"
SECRET = "operator-story-secret"


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with callback_receiver(SECRET) as receiver:
        yield receiver


@pytest.fixture
def server(tmp_path: Path, receiver: CallbackReceiver) -> Iterator[RelayServer]:
    server = start_server(
        tmp_path / "server",
        app_toml={APP_ID: f'callback_url = "{receiver.url}"\ncallback_secret = "{SECRET}"\n'},
        # Events fail after a 1 s window; ended tasks go after 0.5 s unless held.
        callbacks_toml=(
            "allow_private = true\nbackoff_base_s = 0.2\nbackoff_cap_s = 0.4\n"
            "retry_window_s = 1.0\npoll_interval_s = 0.2\n"
        ),
        tasks_toml="retention_s = 0.5\npurge_interval_s = 0.3\n",
    )
    yield server
    server.stop()


def cli(server: RelayServer, *args: str, access_key: str = ACCESS_KEY_ID) -> Any:
    secret = SECRET_ACCESS_KEY if access_key == ACCESS_KEY_ID else "other-secret"
    env = {
        **os.environ,
        "RELAYSTREAM_AK": access_key,
        "RELAYSTREAM_SK": secret,
        "RELAYSTREAM_ENDPOINT": server.base_url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "relaystream", "callbacks", *args, "--app-id", APP_ID],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode:
        return done.stderr
    return json.loads(done.stdout)


def failed_events(server: RelayServer) -> list[dict[str, Any]]:
    return list(cli(server, "list", "--state", "failed")["Deliveries"])


def wait_until(condition: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return result


def get_task(server: RelayServer, task_id: str, app_id: str = APP_ID) -> dict[str, Any] | None:
    rtc = RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    try:
        key = {"AppId": app_id, "RoomId": ROOM, "TaskId": task_id}
        return dict(rtc.action("GetRelayStream", key)["Result"]["Task"])
    except VolcengineError as exc:
        assert exc.code == "InvalidParameter.ErrorActiveTaskNotFound"
        return None


def start_and_stop(server: RelayServer, task_id: str, app_id: str = APP_ID) -> None:
    rtc = RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    key = {"AppId": app_id, "RoomId": ROOM, "TaskId": task_id}
    rtc.action(
        "StartRelayStream",
        {
            **key,
            "UserId": task_id,
            "Token": server.publish_token(ROOM, task_id, app_id=app_id),
            "Control": {
                "StreamUrl": "http://127.0.0.1:9/never.mp4",
                "StreamMode": 1,
                "StartTimeStamp": int(time.time()) + 3600,
            },
        },
    )
    rtc.action("StopRelayStream", key)


def test_failed_events_are_kept_listed_and_redelivered(
    server: RelayServer, receiver: CallbackReceiver
) -> None:
    receiver.down()
    start_and_stop(server, "held")
    [failed] = wait_until(lambda: failed_events(server), 15, "a failed event")
    assert failed["TaskId"] == "held" and json.loads(failed["EventData"])["Status"] == 1
    assert failed["Attempts"] >= 2 and "refused" in failed["LastError"].lower()
    # The stop's event waits behind the failed one: never sent out of order.
    [held_back] = cli(server, "list", "--state", "pending")["Deliveries"]
    assert json.loads(held_back["EventData"])["Status"] == 3
    assert held_back["Attempts"] == 0
    # A task of an AppId without callbacks, ended later, is purged; the one whose
    # events failed is kept.
    start_and_stop(server, "unheld", app_id=SECOND_APP_ID)
    wait_until(lambda: get_task(server, "unheld", SECOND_APP_ID) is None, 10, "a purge")
    assert get_task(server, "held") is not None

    receiver.up()
    assert cli(server, "redeliver") == {"Redelivered": 1}
    receiver.wait_for(lambda r: len(r.states_of("held")) == 2, 10, "the redelivered events")
    assert receiver.states_of("held") == [(1, ""), (3, "ApiStop")]
    sent = [failed["EventId"], held_back["EventId"]]
    assert [event.event_id for event in receiver.events] == sent
    assert cli(server, "list")["Deliveries"] == []
    # Delivered, the events no longer hold the task back.
    wait_until(lambda: get_task(server, "held") is None, 10, "the task's purge")


def test_failed_events_are_discarded(server: RelayServer, receiver: CallbackReceiver) -> None:
    receiver.down()
    start_and_stop(server, "dropped")
    [first] = wait_until(lambda: failed_events(server), 15, "a failed event")
    assert cli(server, "discard", "--event-id", first["EventId"]) == {"Discarded": 1}
    # Discarded, it no longer holds the stop's event back, which gets its own window.
    [second] = wait_until(lambda: failed_events(server), 15, "the next failed event")
    assert second["EventId"] != first["EventId"] and second["Attempts"] >= 2
    assert cli(server, "discard") == {"Discarded": 1}
    assert cli(server, "list")["Deliveries"] == []
    wait_until(lambda: get_task(server, "dropped") is None, 10, "the task's purge")


def test_only_the_apps_own_access_key_sees_its_events(server: RelayServer) -> None:
    answer = cli(server, "list", access_key="AKLTother")
    assert "AccessDenied.NoPermissionForApp" in answer
