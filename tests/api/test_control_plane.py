"""ListRelayStream, UpdateRelayStream, the running caps and retention, as a Volcengine
user meets them: the official SDK against a real server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from relaystream.api.signature import sign_request
from tests.support.net import silent_tcp_server
from tests.support.sdk import VERSION, RtcService, VolcengineError
from tests.support.server import (
    ACCESS_KEY_ID,
    APP_ID,
    SECOND_APP_ID,
    SECRET_ACCESS_KEY,
    RelayServer,
    start_server,
)

ALREADY_STARTED = (
    "The task has been started. Please do not call the startup task interface repeatedly"
)
LATER = int(time.time()) + 24 * 3600  # scheduled tasks never start during the tests
NEVER_OPENED = "http://127.0.0.1:9/never.flv"


def key(room: str, task: str, app_id: str = APP_ID) -> dict[str, str]:
    return {"AppId": app_id, "RoomId": room, "TaskId": task}


def start(
    rtc: RtcService,
    server: RelayServer,
    room: str,
    task: str,
    *,
    app_id: str = APP_ID,
    user: str | None = None,
    **control: Any,
) -> Any:
    user = user or f"user-{task}"
    body = {
        **key(room, task, app_id),
        "UserId": user,
        "Token": server.publish_token(room, user, app_id=app_id),
        "Control": {"StreamUrl": NEVER_OPENED, "StreamMode": 1, **control},
    }
    return rtc.action("StartRelayStream", body)["Result"]


def get(rtc: RtcService, room: str, task: str, app_id: str = APP_ID) -> dict[str, Any]:
    return dict(rtc.action("GetRelayStream", key(room, task, app_id))["Result"]["Task"])


def refused(rtc: RtcService, action: str, body: dict[str, Any], *, query: bool = False) -> Any:
    with pytest.raises(VolcengineError) as caught:
        if query:
            rtc.query_action(action, body)
        else:
            rtc.action(action, body)
    return caught.value


# --- ListRelayStream -----------------------------------------------------------------

LIST_ROOMS = ("list-a", "list-b")


@pytest.fixture(scope="module")
def listed(relay_server: RelayServer) -> list[tuple[str, str]]:
    """25 scheduled tasks of SECOND_APP_ID in two rooms, (room, task) in creation order."""
    rtc = RtcService(relay_server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    made = []
    for n in range(25):
        room, task = LIST_ROOMS[n % 2], f"t{n:02}"
        assert start(rtc, relay_server, room, task, app_id=SECOND_APP_ID, StartTimeStamp=LATER)
        made.append((room, task))
    return made


def list_tasks(rtc: RtcService, *, query: bool = False, **params: Any) -> dict[str, Any]:
    send = rtc.query_action if query else rtc.action
    return dict(send("ListRelayStream", {"AppId": SECOND_APP_ID, **params})["Result"])


def ids(result: dict[str, Any]) -> list[str]:
    return [task["TaskId"] for task in result["Tasks"]]


def test_list_pages_through_an_apps_tasks_newest_first_by_default(
    rtc: RtcService, listed: list[tuple[str, str]]
) -> None:
    created = [task for _, task in listed]

    first = list_tasks(rtc)
    assert first["Total"] == 25
    assert ids(first) == created[::-1][:10]
    last = list_tasks(rtc, Offset=20, Limit=10)
    assert (last["Total"], ids(last)) == (25, created[::-1][20:])
    everything = list_tasks(rtc, Limit=100, Order=1)
    assert ids(everything) == created
    times = [task["CreateTime"] for task in everything["Tasks"]]
    assert times == sorted(times)

    task = first["Tasks"][0]
    assert task["AppId"] == SECOND_APP_ID
    assert (task["RoomId"], task["TaskId"], task["UserId"]) == ("list-a", "t24", "user-t24")
    assert (task["Status"], task["StopReason"], task["StartTime"], task["EndTime"]) == (
        1,
        "",
        0,
        0,
    )
    assert (task["StreamUrl"], task["StreamMode"], task["MediaType"]) == (NEVER_OPENED, 1, 0)
    assert (task["StartTimeStamp"], task["FrameRate"], task["Loop"]) == (LATER, 15, False)
    assert "Token" not in task and "Stats" not in task


def test_list_by_get_with_numbers_as_decimal_text(
    rtc: RtcService, listed: list[tuple[str, str]]
) -> None:
    in_b = [task for room, task in listed if room == "list-b"]

    page = list_tasks(rtc, query=True, RoomId="list-b", Offset=2, Limit=3, Order=1)

    assert page["Total"] == len(in_b) == 12
    assert ids(page) == in_b[2:5]
    assert all(task["RoomId"] == "list-b" for task in page["Tasks"])
    newest = list_tasks(rtc, query=True, RoomId="list-a", Limit=1)
    assert (newest["Total"], ids(newest)) == (13, ["t24"])


def test_list_filters_by_room_and_sees_an_ended_task(
    rtc: RtcService, relay_server: RelayServer, listed: list[tuple[str, str]]
) -> None:
    rtc.action("StopRelayStream", key("list-a", "t00", SECOND_APP_ID))

    page = list_tasks(rtc, RoomId="list-a", Order=1, Limit=2)

    assert page["Total"] == 13
    assert ids(page) == ["t00", "t02"]
    ended = page["Tasks"][0]
    assert (ended["Status"], ended["StopReason"]) == (3, "ApiStop")
    assert ended["EndTime"] >= ended["CreateTime"] > 0
    assert list_tasks(rtc, RoomId="no-such-room") == {"Total": 0, "Tasks": []}


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"Limit": 0}, "InvalidParameter", "Limit"),
        ({"Limit": 101}, "InvalidParameter", "Limit"),
        ({"Offset": 10000}, "InvalidParameter", "Offset"),
        ({"Offset": -1}, "InvalidParameter", "Offset"),
        ({"Order": 2}, "InvalidParameter", "Order"),
        ({"Limit": "5"}, "InvalidParameter", "Limit"),  # JSON numbers are numbers
        ({"RoomId": "no spaces"}, "InvalidParameter", "RoomId"),
    ],
)
def test_list_checks_its_fields_by_post(
    rtc: RtcService, params: dict[str, Any], code: str, field: str
) -> None:
    error = refused(rtc, "ListRelayStream", {"AppId": SECOND_APP_ID, **params})
    assert error.code == code
    assert field in error.message


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"Limit": "0"}, "Limit"),
        ({"Limit": "abc"}, "Limit"),
        ({"Limit": "1.5"}, "Limit"),
        ({"Offset": "99999999999999999999999"}, "Offset"),
        ({"Order": "-1"}, "Order"),
    ],
)
def test_list_checks_its_fields_by_get(rtc: RtcService, params: dict[str, Any], field: str) -> None:
    error = refused(rtc, "ListRelayStream", {"AppId": SECOND_APP_ID, **params}, query=True)
    assert error.code == "InvalidParameter"
    assert field in error.message


def test_list_needs_an_app_the_caller_owns(rtc: RtcService) -> None:
    assert refused(rtc, "ListRelayStream", {}).code == "MissingParameter"
    other = refused(rtc, "ListRelayStream", {"AppId": "aaaaaaaaaaaaaaaaaaaaaaaa"})
    assert other.code == "AccessDenied.NoPermissionForApp"


# --- UpdateRelayStream ---------------------------------------------------------------


def update(rtc: RtcService, room: str, task: str, **control: Any) -> Any:
    return rtc.action("UpdateRelayStream", {**key(room, task), "Control": control})["Result"]


def test_an_update_is_persisted_and_keeps_what_it_does_not_name(
    rtc: RtcService, relay_server: RelayServer
) -> None:
    start(rtc, relay_server, "upd", "t1", StartTimeStamp=LATER, Bitrate=1500)

    assert (
        update(
            rtc,
            "upd",
            "t1",
            StreamUrl="http://127.0.0.1:9/other.flv",
            StreamMode=0,
            VideoWidth=641,
            VideoHeight=360,
            FrameRate=20,
            StartTimeStamp=5,  # not something an Update changes: ignored
        )
        == "ok"
    )

    task = get(rtc, "upd", "t1")
    assert task["StreamUrl"] == "http://127.0.0.1:9/other.flv"
    assert (task["StreamMode"], task["VideoWidth"], task["VideoHeight"]) == (0, 640, 360)
    assert (task["FrameRate"], task["Bitrate"], task["MediaType"]) == (20, 1500, 0)
    assert (task["StartTimeStamp"], task["Status"]) == (LATER, 1)
    listed = rtc.action("ListRelayStream", {"AppId": APP_ID, "RoomId": "upd"})["Result"]
    assert listed["Tasks"][0]["StreamUrl"] == "http://127.0.0.1:9/other.flv"


@pytest.mark.parametrize(
    ("task_id", "control", "code", "field"),
    [
        ("to-transcode", {"StreamMode": 0}, "MissingParameter", "Control.VideoWidth"),
        ("too-wide", {"VideoWidth": 5000}, "InvalidParameter", "Control.VideoWidth"),
        ("no-frames", {"FrameRate": 0}, "InvalidParameter", "Control.FrameRate"),
        ("bad-media", {"MediaType": 3}, "InvalidParameter", "Control.MediaType"),
        ("ftp", {"StreamUrl": "ftp://127.0.0.1/a.flv"}, "InvalidParameter", "Control.StreamUrl"),
        ("no-url", {"StreamUrl": ""}, "InvalidParameter", "Control.StreamUrl"),
    ],
)
def test_an_update_that_breaks_the_control_is_refused_naming_the_field(
    rtc: RtcService,
    relay_server: RelayServer,
    task_id: str,
    control: dict[str, Any],
    code: str,
    field: str,
) -> None:
    start(rtc, relay_server, "upd-bad", task_id, StartTimeStamp=LATER)
    before = get(rtc, "upd-bad", task_id)

    error = refused(rtc, "UpdateRelayStream", {**key("upd-bad", task_id), "Control": control})

    assert error.code == code
    assert field in error.message
    assert get(rtc, "upd-bad", task_id) == before
    rtc.action("StopRelayStream", key("upd-bad", task_id))


def test_update_of_an_ended_or_unknown_task_is_active_task_not_found(
    rtc: RtcService, relay_server: RelayServer
) -> None:
    start(rtc, relay_server, "upd-end", "t1", StartTimeStamp=LATER)
    rtc.action("StopRelayStream", key("upd-end", "t1"))

    for task in ("t1", "never-started"):
        error = refused(
            rtc, "UpdateRelayStream", {**key("upd-end", task), "Control": {"FrameRate": 10}}
        )
        assert error.code == "InvalidParameter.ErrorActiveTaskNotFound"
        assert task in error.message
    assert get(rtc, "upd-end", "t1")["FrameRate"] == 15


def test_update_needs_a_control_object(rtc: RtcService) -> None:
    assert refused(rtc, "UpdateRelayStream", key("upd", "t1")).code == "MissingParameter"
    error = refused(rtc, "UpdateRelayStream", {**key("upd", "t1"), "Control": "fast"})
    assert (error.code, "Control" in error.message) == ("InvalidParameter", True)


# --- running caps and retention ------------------------------------------------------

CAPS = """
max_running_per_node = 3
max_running_per_app = 2
retention_s = 1
purge_interval_s = 0.2
"""


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayServer]:
    server = start_server(tmp_path_factory.mktemp("capped"), tasks_toml=CAPS)
    yield server
    server.stop()


def post_status(server: RelayServer, action: str, body: dict[str, Any]) -> int:
    """The HTTP status of a signed POST (the SDK hides it)."""
    raw = json.dumps(body).encode()
    query = {"Action": action, "Version": VERSION}
    headers = sign_request(
        method="POST",
        host=server.host,
        path="/",
        query=query,
        headers={"Content-Type": "application/json"},
        body=raw,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        region="cn-north-1",
    )
    url = f"{server.base_url}/?{urlencode(query)}"
    return requests.post(url, data=raw, headers=headers, timeout=10).status_code


def test_running_caps_refuse_a_start_with_task_number_over_limit(
    capped_server: RelayServer,
) -> None:
    rtc = RtcService(capped_server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    # A source that accepts the connection and never answers: each started task holds
    # a worker (waiting for its source) for the whole test.
    with silent_tcp_server() as address:
        source = f"http://{address}/live.flv"
        for n in range(3):  # scheduled tasks do not count
            start(rtc, capped_server, "caps", f"later-{n}", StartTimeStamp=LATER)
        start(rtc, capped_server, "caps", "a1", StreamUrl=source)
        start(rtc, capped_server, "caps", "a2", StreamUrl=source)

        over_app = refused(
            rtc,
            "StartRelayStream",
            {
                **key("caps", "a3"),
                "UserId": "u-a3",
                "Token": capped_server.publish_token("caps", "u-a3"),
                "Control": {"StreamUrl": source, "StreamMode": 1},
            },
        )
        assert over_app.code == "FlowLimitExceeded.TaskNumberOverLimit"
        assert APP_ID in over_app.message and "2" in over_app.message
        refused_body = {
            **key("caps", "a3"),
            "UserId": "u-a3",
            "Token": capped_server.publish_token("caps", "u-a3"),
            "Control": {"StreamUrl": source, "StreamMode": 1},
        }
        assert post_status(capped_server, "StartRelayStream", refused_body) == 429
        # Starting a running task again is still answered as such.
        assert start(rtc, capped_server, "caps", "a1", StreamUrl=source) == ALREADY_STARTED
        assert refused(rtc, "GetRelayStream", key("caps", "a3")).code == (
            "InvalidParameter.ErrorActiveTaskNotFound"
        )
        # A scheduled task of the full app is still welcome.
        start(rtc, capped_server, "caps", "later-3", StartTimeStamp=LATER)

        # Another app has room of its own, up to the node's cap of 3.
        start(rtc, capped_server, "caps", "b1", app_id=SECOND_APP_ID, StreamUrl=source)
        over_node = refused(
            rtc,
            "StartRelayStream",
            {
                **key("caps", "b2", SECOND_APP_ID),
                "UserId": "u-b2",
                "Token": capped_server.publish_token("caps", "u-b2", app_id=SECOND_APP_ID),
                "Control": {"StreamUrl": source, "StreamMode": 1},
            },
        )
        assert over_node.code == "FlowLimitExceeded.TaskNumberOverLimit"
        assert "node" in over_node.message

        # The capped tasks are still there, holding their workers.
        for task in ("a1", "a2"):
            assert get(rtc, "caps", task)["Status"] == 1
        assert get(rtc, "caps", "b1", SECOND_APP_ID)["Status"] == 1

        # Stopping one gives its slot back.
        rtc.action("StopRelayStream", key("caps", "a1"))
        start(rtc, capped_server, "caps", "b2", app_id=SECOND_APP_ID, StreamUrl=source)

        for app_id, task in ((APP_ID, "a2"), (SECOND_APP_ID, "b1"), (SECOND_APP_ID, "b2")):
            rtc.action("StopRelayStream", key("caps", task, app_id))


def test_an_ended_task_is_purged_after_its_retention(capped_server: RelayServer) -> None:
    rtc = RtcService(capped_server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    start(rtc, capped_server, "retention", "kept", StartTimeStamp=LATER)
    start(rtc, capped_server, "retention", "t1", StartTimeStamp=LATER)
    rtc.action("StopRelayStream", key("retention", "t1"))
    assert get(rtc, "retention", "t1")["Status"] == 3  # kept for a while...

    deadline = time.monotonic() + 15
    while True:
        try:
            get(rtc, "retention", "t1")
        except VolcengineError as gone:
            assert gone.code == "InvalidParameter.ErrorActiveTaskNotFound"
            break
        assert time.monotonic() < deadline, "the ended task was never purged"
        time.sleep(0.1)

    # ...then gone, from List too; an active task is not touched.
    listed = rtc.action("ListRelayStream", {"AppId": APP_ID, "RoomId": "retention"})["Result"]
    assert (listed["Total"], [task["TaskId"] for task in listed["Tasks"]]) == (1, ["kept"])
    rtc.action("StopRelayStream", key("retention", "kept"))
