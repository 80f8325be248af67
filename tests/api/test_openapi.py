"""The control API as a Volcengine user meets it: the official SDK (or raw signed HTTP)
against a real server, looking only at what comes back over the wire."""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from volcengine.ApiInfo import ApiInfo
from volcengine.auth.SignerV4 import SignerV4

from relaystream.api.signature import sign_request
from relaystream.rtc.token import Privilege, generate_token
from tests.support.sdk import VERSION, RtcService, VolcengineError
from tests.support.server import (
    ACCESS_KEY_ID,
    APP_ID,
    APP_KEY,
    OTHER_APP_ID,
    SECRET_ACCESS_KEY,
    RelayServer,
)
from tests.support.tasks import task_key

REGION = "cn-north-1"
ALREADY_STARTED = (
    "The task has been started. Please do not call the startup task interface repeatedly"
)


# --- helpers -------------------------------------------------------------------------


def start_body(
    server: RelayServer, room: str, task: str, user: str, stream_url: str, **control: Any
) -> dict[str, Any]:
    return {
        **task_key(room, task),
        "UserId": user,
        "Token": server.publish_token(room, user),
        "Control": {"StreamUrl": stream_url, "StreamMode": 1, **control},
    }


def valid_body(server: RelayServer, room: str = "room-v", user: str = "user-v") -> dict[str, Any]:
    """A StartRelayStream body that passes every check (a source that is never opened:
    tests using it expect a rejection before anything starts)."""
    return start_body(server, room, "task-v", user, "http://127.0.0.1:9/never.flv")


def assert_metadata(envelope: dict[str, Any], action: str, version: str = VERSION) -> None:
    metadata = envelope["ResponseMetadata"]
    assert metadata["RequestId"]
    assert metadata["Action"] == action
    assert metadata["Version"] == version
    assert metadata["Service"] == "rtc"
    assert metadata["Region"] == REGION


def assert_error(
    envelope: dict[str, Any], code: str, *, action: str, version: str = VERSION
) -> str:
    """The envelope is a well-formed error with ``code``; returns its message."""
    assert "Result" not in envelope
    assert_metadata(envelope, action, version)
    error = envelope["ResponseMetadata"]["Error"]
    assert error["Code"] == code, error
    message = str(error["Message"])
    assert "Traceback" not in message
    assert 'File "' not in message
    return message


def sdk_error(rtc: RtcService, action: str, body: dict[str, Any], code: str) -> str:
    """Call through the SDK expecting ``code``; returns the error message."""
    with pytest.raises(VolcengineError) as caught:
        rtc.action(action, body)
    return assert_error(caught.value.envelope, code, action=action)


def raw_post(
    server: RelayServer,
    body: bytes,
    *,
    action: str = "StartRelayStream",
    version: str = VERSION,
    sign: bool = True,
    access_key_id: str = ACCESS_KEY_ID,
    secret: str = SECRET_ACCESS_KEY,
    now: datetime | None = None,
    sent_body: bytes | None = None,
    header_overrides: dict[str, str] | None = None,
) -> requests.Response:
    """POST ``body`` signed with sign_request; ``sent_body`` replaces it after signing."""
    query = {"Action": action, "Version": version}
    headers = {"Content-Type": "application/json"}
    if sign:
        headers = sign_request(
            method="POST",
            host=server.host,
            path="/",
            query=query,
            headers=headers,
            body=body,
            access_key_id=access_key_id,
            secret_access_key=secret,
            region=REGION,
            now=now,
        )
    headers.update(header_overrides or {})
    return requests.post(
        f"{server.base_url}/?{urlencode(query)}",
        data=body if sent_body is None else sent_body,
        headers=headers,
        timeout=10,
    )


def wait_for(
    rtc: RtcService, room: str, task: str, predicate: Any, timeout_s: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = dict(rtc.action("GetRelayStream", task_key(room, task))["Result"]["Task"])
        if predicate(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def wait_for_status(
    rtc: RtcService, room: str, task: str, status: int, timeout_s: float = 30.0
) -> dict[str, Any]:
    found = wait_for(rtc, room, task, lambda t: t["Status"] == status, timeout_s)
    assert found["Status"] == status, f"task stuck in {found}"
    return found


def stop_quietly(rtc: RtcService, room: str, task: str) -> None:
    try:
        rtc.action("StopRelayStream", task_key(room, task))
    except VolcengineError as exc:
        assert exc.code == "InvalidParameter.ErrorActiveTaskNotFound"


# --- signatures over the wire --------------------------------------------------------


def test_sdk_signed_request_passes_with_full_envelope(
    rtc: RtcService, relay_server: RelayServer
) -> None:
    message = sdk_error(
        rtc,
        "GetRelayStream",
        task_key("room-sig", "no-such-task"),
        "InvalidParameter.ErrorActiveTaskNotFound",
    )
    assert "no-such-task" in message


def test_body_altered_after_signing_is_refused(relay_server: RelayServer) -> None:
    body = json.dumps(task_key("room-sig", "t1")).encode()
    tampered = json.dumps(task_key("room-sig", "t2")).encode()
    response = raw_post(relay_server, body, action="GetRelayStream", sent_body=tampered)
    assert response.status_code == 401
    assert_error(response.json(), "SignatureDoesNotMatch", action="GetRelayStream")

    # Also with the body hash header rewritten to match: the signature still fails.
    response = raw_post(
        relay_server,
        body,
        action="GetRelayStream",
        sent_body=tampered,
        header_overrides={"X-Content-Sha256": hashlib.sha256(tampered).hexdigest()},
    )
    assert response.status_code == 401
    assert_error(response.json(), "SignatureDoesNotMatch", action="GetRelayStream")


def test_raw_request_signed_with_sign_request_passes(relay_server: RelayServer) -> None:
    body = json.dumps(task_key("room-sig", "t1")).encode()
    response = raw_post(relay_server, body, action="GetRelayStream")
    assert response.status_code == 400
    assert_error(
        response.json(), "InvalidParameter.ErrorActiveTaskNotFound", action="GetRelayStream"
    )


def test_wrong_secret_is_signature_mismatch(relay_server: RelayServer) -> None:
    rtc = RtcService(relay_server.host, ACCESS_KEY_ID, "not-the-secret")
    with pytest.raises(VolcengineError) as caught:
        rtc.action("GetRelayStream", task_key("room-sig", "t1"))
    assert_error(caught.value.envelope, "SignatureDoesNotMatch", action="GetRelayStream")


def test_unknown_access_key(relay_server: RelayServer) -> None:
    rtc = RtcService(relay_server.host, "AKLTnobody", SECRET_ACCESS_KEY)
    with pytest.raises(VolcengineError) as caught:
        rtc.action("GetRelayStream", task_key("room-sig", "t1"))
    message = assert_error(caught.value.envelope, "InvalidAccessKey", action="GetRelayStream")
    assert "AKLTnobody" in message
    response = raw_post(relay_server, b"{}", action="GetRelayStream", access_key_id="AKLTnobody")
    assert response.status_code == 401


def test_stale_x_date_is_invalid_timestamp(
    rtc: RtcService, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = (datetime.now(UTC) - timedelta(minutes=20)).strftime("%Y%m%dT%H%M%SZ")
    monkeypatch.setattr(SignerV4, "get_current_format_date", staticmethod(lambda: stale))
    message = sdk_error(rtc, "GetRelayStream", task_key("room-sig", "t1"), "InvalidTimestamp")
    assert stale in message


def test_stale_x_date_over_raw_http_is_401(relay_server: RelayServer) -> None:
    body = json.dumps(task_key("room-sig", "t1")).encode()
    response = raw_post(
        relay_server,
        body,
        action="GetRelayStream",
        now=datetime.now(UTC) - timedelta(minutes=20),
    )
    assert response.status_code == 401
    assert_error(response.json(), "InvalidTimestamp", action="GetRelayStream")


def test_missing_authorization_is_an_error_envelope(relay_server: RelayServer) -> None:
    body = json.dumps(task_key("room-sig", "t1")).encode()
    response = raw_post(relay_server, body, action="GetRelayStream", sign=False)
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("application/json")
    message = assert_error(response.json(), "SignatureDoesNotMatch", action="GetRelayStream")
    assert "Authorization" in message


def test_garbage_authorization_is_an_error_envelope(relay_server: RelayServer) -> None:
    body = json.dumps(task_key("room-sig", "t1")).encode()
    for garbage in (
        "HMAC-SHA256",
        "Bearer x",
        "HMAC-SHA256 Credential=a/b/c",
    ):
        response = raw_post(
            relay_server,
            body,
            action="GetRelayStream",
            header_overrides={"Authorization": garbage},
        )
        assert response.status_code == 401, garbage
        envelope = response.json()
        code = envelope["ResponseMetadata"]["Error"]["Code"]
        assert code in {"SignatureDoesNotMatch", "InvalidTimestamp"}, garbage
        assert_error(envelope, code, action="GetRelayStream")


def test_authorization_that_is_not_utf8_is_named(relay_server: RelayServer) -> None:
    # requests sends str headers as Latin-1: one 0xE9 byte, which is not UTF-8.
    garbage = "HMAC-SHA256 Credential=\u00e9/20240101/cn-north-1/rtc/request"
    body = json.dumps(task_key("room-sig", "t1")).encode()
    response = raw_post(
        relay_server, body, action="GetRelayStream", header_overrides={"Authorization": garbage}
    )
    assert response.status_code == 400
    message = assert_error(response.json(), "InvalidParameter", action="GetRelayStream")
    assert "Authorization" in message and "UTF-8" in message


# --- action, version, body -----------------------------------------------------------


def test_unknown_action(relay_server: RelayServer) -> None:
    response = raw_post(relay_server, b"{}", action="DescribeEverything")
    assert response.status_code == 400
    message = assert_error(response.json(), "InvalidActionOrVersion", action="DescribeEverything")
    assert "DescribeEverything" in message


def test_wrong_version(relay_server: RelayServer) -> None:
    body = json.dumps(task_key("room-a", "t1")).encode()
    response = raw_post(relay_server, body, action="GetRelayStream", version="2020-12-01")
    assert response.status_code == 400
    message = assert_error(
        response.json(), "InvalidActionOrVersion", action="GetRelayStream", version="2020-12-01"
    )
    assert "2020-12-01" in message


def test_empty_body(relay_server: RelayServer) -> None:
    response = raw_post(relay_server, b"")
    assert response.status_code == 400
    assert_error(response.json(), "InvalidParameter.BodyIsEmpty", action="StartRelayStream")


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_body_that_is_not_a_json_object(relay_server: RelayServer, body: bytes) -> None:
    response = raw_post(relay_server, body)
    assert response.status_code == 400
    assert_error(response.json(), "InvalidParameter.Unmarshal", action="StartRelayStream")


def test_deeply_nested_body_is_unmarshal_not_internal_error(relay_server: RelayServer) -> None:
    response = raw_post(relay_server, b"[" * 100_000)
    assert response.status_code == 400
    assert_error(response.json(), "InvalidParameter.Unmarshal", action="StartRelayStream")


def test_oversized_chunked_body_is_refused(relay_server: RelayServer) -> None:
    body = b"{" + b" " * (2 << 20) + b"}"
    headers = sign_request(
        method="POST",
        host=relay_server.host,
        path="/",
        query={"Action": "StartRelayStream", "Version": VERSION},
        headers={"Content-Type": "application/json"},
        body=body,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        region=REGION,
    )
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))  # no Content-Length
    response = requests.post(
        f"{relay_server.base_url}/?Action=StartRelayStream&Version={VERSION}",
        data=chunks,
        headers=headers,
        timeout=10,
    )
    assert response.status_code == 400
    assert_error(response.json(), "InvalidParameter.Unmarshal", action="StartRelayStream")


# --- StartRelayStream validation -----------------------------------------------------


@pytest.mark.parametrize(
    "field", ["AppId", "RoomId", "TaskId", "UserId", "Token", "Control", "Control.StreamUrl"]
)
def test_missing_required_field(rtc: RtcService, relay_server: RelayServer, field: str) -> None:
    body = valid_body(relay_server)
    if field == "Control.StreamUrl":
        del body["Control"]["StreamUrl"]
    else:
        del body[field]
    response_message = sdk_error(rtc, "StartRelayStream", body, "MissingParameter")
    assert field in response_message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("RoomId", "bad room!"),
        ("RoomId", "room\n"),
        ("TaskId", "t" * 129),
        ("UserId", ""),
        ("AppId", "app/1"),
        ("MaxIdleTime", 4),
        ("MaxIdleTime", 601),
        ("MaxIdleTime", "30"),
        ("Control.FrameRate", 31),
        ("Control.FrameRate", 0),
        ("Control.VideoWidth", 15),
        ("Control.VideoHeight", 1921),
        ("Control.StreamMode", 2),
        ("Control.MediaType", 3),
        ("Control.StreamUrl", "file:///etc/passwd"),
        ("Control.StreamUrl", "ftp://example.com/a.flv"),
        ("Control.StreamUrl", "/etc/passwd"),
        ("Control.StreamUrl", "http://[::1/x.flv"),
        ("Control.StreamUrl", ""),
        ("Control.Loop", "yes"),
        ("Control.StartTimeStamp", 2**64),
    ],
)
def test_invalid_field_is_named(
    rtc: RtcService, relay_server: RelayServer, field: str, value: Any
) -> None:
    body = valid_body(relay_server)
    if field.startswith("Control."):
        body["Control"][field.removeprefix("Control.")] = value
    else:
        body[field] = value
    message = sdk_error(rtc, "StartRelayStream", body, "InvalidParameter")
    assert field in message


def test_transcode_without_video_width(rtc: RtcService, relay_server: RelayServer) -> None:
    body = valid_body(relay_server)
    body["Control"]["StreamMode"] = 0
    message = sdk_error(rtc, "StartRelayStream", body, "MissingParameter")
    assert "Control.VideoWidth" in message


def test_app_id_not_configured(rtc: RtcService, relay_server: RelayServer) -> None:
    body = valid_body(relay_server)
    body["AppId"] = "bbbbbbbbbbbbbbbbbbbbbbbb"
    message = sdk_error(rtc, "StartRelayStream", body, "InvalidParameter.NotExistAppId")
    assert "bbbbbbbbbbbbbbbbbbbbbbbb" in message


def test_app_id_of_another_access_key(relay_server: RelayServer) -> None:
    body = valid_body(relay_server)
    body["AppId"] = OTHER_APP_ID
    raw = json.dumps(body).encode()
    response = raw_post(relay_server, raw)
    assert response.status_code == 403
    message = assert_error(
        response.json(), "AccessDenied.NoPermissionForApp", action="StartRelayStream"
    )
    assert OTHER_APP_ID in message
    # Reading a task of that app is refused the same way.
    response = raw_post(
        relay_server,
        json.dumps({**task_key("r", "t"), "AppId": OTHER_APP_ID}).encode(),
        action="GetRelayStream",
    )
    assert response.status_code == 403


def _token(room: str, user: str, **kwargs: Any) -> str:
    args: dict[str, Any] = {
        "app_id": APP_ID,
        "app_key": APP_KEY,
        "room_id": room,
        "user_id": user,
        "privileges": [Privilege.PUBLISH_STREAM],
    }
    args.update(kwargs)
    return generate_token(**args)


@pytest.mark.parametrize(
    "token_kind",
    ["wrong-key", "other-room", "other-user", "expired", "subscribe-only", "garbage", "other-app"],
)
def test_bad_token_is_named_but_not_echoed(
    rtc: RtcService, relay_server: RelayServer, token_kind: str
) -> None:
    room, user = "room-token", "user-token"
    token = {
        "wrong-key": lambda: _token(room, user, app_key="f" * 32),
        "other-room": lambda: _token("room-elsewhere", user),
        "other-user": lambda: _token(room, "someone-else"),
        "expired": lambda: _token(room, user, expire_at=int(time.time()) - 60),
        "subscribe-only": lambda: _token(room, user, privileges=[Privilege.SUBSCRIBE_STREAM]),
        "garbage": lambda: "001" + APP_ID + "!!!not-base64!!!",
        "other-app": lambda: _token(room, user, app_id=OTHER_APP_ID),
    }[token_kind]()
    body = start_body(relay_server, room, f"task-{token_kind}", user, "http://127.0.0.1:9/x.flv")
    body["Token"] = token
    message = sdk_error(rtc, "StartRelayStream", body, "InvalidParameter")
    assert "Token" in message
    assert token not in message
    assert token[len("001") + len(APP_ID) :][:16] not in message
    # Nothing was created.
    sdk_error(
        rtc,
        "GetRelayStream",
        task_key(room, f"task-{token_kind}"),
        "InvalidParameter.ErrorActiveTaskNotFound",
    )


def test_token_too_long_is_not_echoed(rtc: RtcService, relay_server: RelayServer) -> None:
    body = valid_body(relay_server)
    body["Token"] = "001" + "z" * 5000
    message = sdk_error(rtc, "StartRelayStream", body, "InvalidParameter")
    assert "Token" in message
    assert "zzzzzzzz" not in message


# --- start, stop, get ----------------------------------------------------------------


def test_start_twice_get_stop_and_start_again(
    rtc: RtcService, relay_server: RelayServer, media_url: str
) -> None:
    room, task, user = "room-life", "task-life", "user-life"
    body = start_body(relay_server, room, task, user, f"{media_url}/clip.flv")
    try:
        envelope = rtc.action("StartRelayStream", body)
        assert envelope["Result"] == "ok"
        assert_metadata(envelope, "StartRelayStream")
        running = wait_for_status(rtc, room, task, 2)
        assert running["UserId"] == user
        assert running["StreamUrl"] == f"{media_url}/clip.flv"
        assert running["StreamMode"] == 1

        # A repeated Start answers 200 with the fixed text and changes nothing, even
        # when the repeated request carries other settings.
        again = dict(body, MaxIdleTime=10)
        again["Control"] = {**body["Control"], "StreamUrl": f"{media_url}/clip.mp4"}
        envelope = rtc.action("StartRelayStream", again)
        assert envelope["Result"] == ALREADY_STARTED
        assert_metadata(envelope, "StartRelayStream")
        after = wait_for(rtc, room, task, lambda t: True)
        assert after["CreateTime"] == running["CreateTime"]
        assert after["StartTime"] == running["StartTime"]
        assert after["StreamUrl"] == f"{media_url}/clip.flv"
        assert after["MaxIdleTime"] == running["MaxIdleTime"]
        assert after["Status"] == 2

        # Get never shows the token, anywhere in the envelope.
        envelope = rtc.action("GetRelayStream", task_key(room, task))
        assert_metadata(envelope, "GetRelayStream")
        assert "Token" not in envelope["Result"]["Task"]
        assert body["Token"] not in json.dumps(envelope)

        envelope = rtc.action("StopRelayStream", task_key(room, task))
        assert envelope["Result"] == "ok"
        stopped = wait_for_status(rtc, room, task, 3, timeout_s=10)
        assert stopped["StopReason"] == "ApiStop"
        assert stopped["EndTime"] >= stopped["StartTime"]

        message = sdk_error(
            rtc, "StopRelayStream", task_key(room, task), "InvalidParameter.ErrorActiveTaskNotFound"
        )
        assert task in message

        # Starting the stopped TaskId again is a new run.
        assert rtc.action("StartRelayStream", body)["Result"] == "ok"
        rerun = wait_for(rtc, room, task, lambda t: t["Status"] in (1, 2), timeout_s=5)
        assert rerun["Status"] in (1, 2)
        assert rerun["StopReason"] == ""
        rerun = wait_for_status(rtc, room, task, 2)
        assert rerun["StartTime"] >= stopped["EndTime"]
    finally:
        stop_quietly(rtc, room, task)


def test_concurrent_starts_of_one_task_start_it_once(
    rtc: RtcService, relay_server: RelayServer, media_url: str
) -> None:
    room, task, user = "room-race", "task-race", "user-race"
    body = start_body(relay_server, room, task, user, f"{media_url}/clip.flv")
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(
                pool.map(lambda _: rtc.action("StartRelayStream", body)["Result"], range(4))
            )
        assert sorted(results) == sorted(["ok", *[ALREADY_STARTED] * 3])
        assert wait_for_status(rtc, room, task, 2)["UserId"] == user
    finally:
        stop_quietly(rtc, room, task)


def test_same_user_cannot_publish_twice_in_a_room(
    rtc: RtcService, relay_server: RelayServer, media_url: str
) -> None:
    room, user = "room-dup", "user-dup"
    first = start_body(relay_server, room, "task-a", user, f"{media_url}/clip.flv")
    second = start_body(relay_server, room, "task-b", user, f"{media_url}/clip.flv")
    try:
        assert rtc.action("StartRelayStream", first)["Result"] == "ok"
        message = sdk_error(rtc, "StartRelayStream", second, "InvalidParameter")
        assert "UserId" in message
        assert user in message
        sdk_error(
            rtc,
            "GetRelayStream",
            task_key(room, "task-b"),
            "InvalidParameter.ErrorActiveTaskNotFound",
        )
        # Another room, or another user in this room, is fine.
        other_room = start_body(relay_server, "room-dup-2", "task-a", user, f"{media_url}/clip.flv")
        assert rtc.action("StartRelayStream", other_room)["Result"] == "ok"
    finally:
        stop_quietly(rtc, room, "task-a")
        stop_quietly(rtc, "room-dup-2", "task-a")
    # Once the first has stopped, the user id is free again.
    try:
        assert rtc.action("StartRelayStream", second)["Result"] == "ok"
    finally:
        stop_quietly(rtc, room, "task-b")


def test_stop_and_get_of_unknown_task(rtc: RtcService) -> None:
    for action in ("StopRelayStream", "GetRelayStream"):
        message = sdk_error(
            rtc,
            action,
            task_key("room-none", "task-none"),
            "InvalidParameter.ErrorActiveTaskNotFound",
        )
        assert "task-none" in message


def test_stop_and_get_validate_their_fields(rtc: RtcService) -> None:
    body = task_key("room-none", "task-none")
    del body["TaskId"]
    message = sdk_error(rtc, "StopRelayStream", body, "MissingParameter")
    assert "TaskId" in message
    message = sdk_error(rtc, "GetRelayStream", {**body, "TaskId": "bad task"}, "InvalidParameter")
    assert "TaskId" in message


@pytest.fixture
def rtc_with_get(relay_server: RelayServer) -> RtcService:
    """The SDK with GET entries, as a user would declare them for read actions."""
    rtc = RtcService(relay_server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    for action in ("GetRelayStream", "StopRelayStream"):
        rtc.api_info[f"{action}ByGet"] = ApiInfo(
            "GET", "/", {"Action": action, "Version": VERSION}, {}, {}
        )
    return rtc


def _sdk_get(rtc: RtcService, api: str, params: dict[str, str]) -> dict[str, Any]:
    try:
        return dict(json.loads(rtc.get(api, dict(params))))
    except Exception as exc:
        raw = exc.args[0] if exc.args else ""
        envelope = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
        raise VolcengineError(envelope) from None


def test_get_with_query_parameters(
    rtc: RtcService, rtc_with_get: RtcService, relay_server: RelayServer, media_url: str
) -> None:
    room, task, user = "room@get.x-1_", "task-get", "user-get"
    body = start_body(relay_server, room, task, user, f"{media_url}/clip.flv")
    try:
        assert rtc.action("StartRelayStream", body)["Result"] == "ok"
        envelope = _sdk_get(rtc_with_get, "GetRelayStreamByGet", task_key(room, task))
        assert_metadata(envelope, "GetRelayStream")
        found = envelope["Result"]["Task"]
        assert (found["AppId"], found["RoomId"], found["TaskId"]) == (APP_ID, room, task)
        assert found["Status"] in (1, 2)
        assert "Token" not in found

        with pytest.raises(VolcengineError) as caught:
            _sdk_get(rtc_with_get, "StopRelayStreamByGet", task_key(room, task))
        assert_error(caught.value.envelope, "InvalidActionOrVersion", action="StopRelayStream")
        # The refused GET did not stop it.
        assert wait_for(rtc, room, task, lambda t: True)["Status"] in (1, 2)

        with pytest.raises(VolcengineError) as caught:
            _sdk_get(rtc_with_get, "GetRelayStreamByGet", {"AppId": APP_ID, "RoomId": room})
        message = assert_error(caught.value.envelope, "MissingParameter", action="GetRelayStream")
        assert "TaskId" in message
    finally:
        stop_quietly(rtc, room, task)


# --- sources that fail ---------------------------------------------------------------


def test_missing_source_ends_with_source_error(
    rtc: RtcService, relay_server: RelayServer, media_url: str
) -> None:
    room, task = "room-404", "task-404"
    body = start_body(relay_server, room, task, "user-404", f"{media_url}/missing.flv")
    try:
        assert rtc.action("StartRelayStream", body)["Result"] == "ok"
        ended = wait_for_status(rtc, room, task, 3, timeout_s=30)
        assert ended["StopReason"] == "SourceError"
        assert "404" in ended["StopDetail"]
    finally:
        stop_quietly(rtc, room, task)
