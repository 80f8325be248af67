"""The outside probe of the API, replayed: each request that once got a wrong answer,
with the exact code and status it gets now. Raw bytes over a socket, so nothing is
tidied up by a client library on the way."""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest

from relaystream.api.signature import sign_request
from tests.support.rawhttp import RawResponse, build_request, exchange
from tests.support.sdk import VERSION, RtcService
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, RelayServer
from tests.support.tasks import task_key

REGION = "cn-north-1"
ROOM = "room-probe"
SCHEDULED_TASK = "scheduled"  # starts in an hour: active, and never touches a source


def signed_request(
    server: RelayServer,
    method: str,
    action: str,
    body: bytes = b"",
    *,
    region: str = REGION,
    extra_headers: dict[str, str | bytes] | None = None,
    extra_query: str = "",
) -> bytes:
    query = {"Action": action, "Version": VERSION}
    headers = sign_request(
        method=method,
        host=server.host,
        path="/",
        query=query,
        headers={"Content-Type": "application/json"},
        body=body,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        region=region,
    )
    sent: dict[str, str | bytes] = {**headers, **(extra_headers or {})}
    return build_request(method, f"/?{urlencode(query)}{extra_query}", sent, body)


def start_body(server: RelayServer, **control: Any) -> bytes:
    body = {
        **task_key(ROOM, "probe-task"),
        "UserId": "probe-user",
        "Token": server.publish_token(ROOM, "probe-user"),
        "Control": {"StreamUrl": "http://127.0.0.1:9/never.flv", "StreamMode": 1, **control},
    }
    return json.dumps(body).encode()


@dataclass(frozen=True)
class Probe:
    name: str
    request: Callable[[RelayServer], bytes]
    status: int
    code: str | None  # None: no body at all (HEAD)
    message_names: str = ""  # a word the error message must contain


def _stop_scheduled(server: RelayServer) -> bytes:
    return json.dumps(task_key(ROOM, SCHEDULED_TASK)).encode()


PROBES = [
    Probe(
        "signed HEAD of a write action",
        lambda s: signed_request(s, "HEAD", "StopRelayStream", _stop_scheduled(s)),
        405,
        None,
    ),
    *(
        Probe(
            f"signed {method} on /",
            lambda s, m=method: signed_request(s, m, "StopRelayStream", _stop_scheduled(s)),
            405,
            "InvalidActionOrVersion",
            m_name,
        )
        for method, m_name in (
            ("PUT", "PUT"),
            ("DELETE", "DELETE"),
            ("PATCH", "PATCH"),
            ("OPTIONS", "OPTIONS"),
        )
    ),
    Probe(
        "a non-UTF-8 byte in a signed header",
        lambda s: signed_request(
            s, "POST", "StopRelayStream", _stop_scheduled(s), extra_headers={"X-Note": b"\xff"}
        ),
        400,
        "InvalidParameter",
        "X-Note",
    ),
    Probe(
        "a percent-encoded non-UTF-8 byte in the query",
        lambda s: signed_request(s, "GET", "GetRelayStream", extra_query="&Note=%FF"),
        400,
        "InvalidParameter",
        "query",
    ),
    Probe(
        "a raw non-ASCII byte in the request line",
        lambda s: build_request("GET", "/?Action=GetRelayStream&Note=\xff", {}),
        400,
        "InvalidParameter",
        "request target",
    ),
    Probe(
        "a body that is not UTF-8",
        lambda s: signed_request(s, "POST", "StopRelayStream", b'{"AppId": "\xff"}'),
        400,
        "InvalidParameter.Unmarshal",
        "UTF-8",
    ),
    Probe(
        "StreamMode true",
        lambda s: signed_request(s, "POST", "StartRelayStream", start_body(s, StreamMode=True)),
        400,
        "InvalidParameter",
        "Control.StreamMode",
    ),
    Probe(
        "StreamMode 1.0",
        lambda s: signed_request(s, "POST", "StartRelayStream", start_body(s, StreamMode=1.0)),
        400,
        "InvalidParameter",
        "Control.StreamMode",
    ),
    Probe(
        "MediaType true",
        lambda s: signed_request(s, "POST", "StartRelayStream", start_body(s, MediaType=True)),
        400,
        "InvalidParameter",
        "Control.MediaType",
    ),
    Probe(
        "FrameRate 15.0",
        lambda s: signed_request(s, "POST", "StartRelayStream", start_body(s, FrameRate=15.0)),
        400,
        "InvalidParameter",
        "Control.FrameRate",
    ),
    Probe(
        "StreamMode NaN (not JSON)",
        lambda s: signed_request(s, "POST", "StartRelayStream", start_body(s, StreamMode=math.nan)),
        400,
        "InvalidParameter.Unmarshal",
        "NaN",
    ),
    Probe(
        "a signature scoped to another region",
        lambda s: signed_request(
            s, "POST", "StopRelayStream", _stop_scheduled(s), region="cn-beijing"
        ),
        401,
        "SignatureDoesNotMatch",
        "cn-beijing",
    ),
    Probe(
        "a request line over 8 KiB",
        lambda s: build_request("GET", "/?Action=GetRelayStream&Pad=" + "x" * 9000, {}),
        400,
        "InvalidParameter",
        "longer than",
    ),
    Probe(
        "a header over 8 KiB",
        lambda s: build_request("GET", "/?Action=GetRelayStream", {"X-Pad": "x" * 9000}),
        400,
        "InvalidParameter",
        "longer than",
    ),
    Probe(
        "too many headers",
        lambda s: build_request(
            "GET", "/?Action=GetRelayStream", {f"X-Pad-{i}": "x" for i in range(200)}
        ),
        400,
        "InvalidParameter",
        "too many headers",
    ),
    Probe(
        "a body over 1 MiB",
        lambda s: signed_request(s, "POST", "StartRelayStream", b" " * (2 << 20)),
        400,
        "InvalidParameter.Unmarshal",
        "exceeds",
    ),
    Probe(
        "bytes that are not HTTP",
        lambda s: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        400,
        "InvalidParameter",
        "HTTP",
    ),
]


@pytest.fixture(scope="module")
def scheduled_task(relay_server: RelayServer) -> None:
    """An active task the write probes would stop if they ran an action."""
    rtc = RtcService(relay_server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    body = {
        **task_key(ROOM, SCHEDULED_TASK),
        "UserId": "scheduled-user",
        "Token": relay_server.publish_token(ROOM, "scheduled-user"),
        "Control": {
            "StreamUrl": "http://127.0.0.1:9/never.flv",
            "StreamMode": 1,
            "StartTimeStamp": int(time.time()) + 3600,
        },
    }
    assert rtc.action("StartRelayStream", body)["Result"] == "ok"


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_probe_gets_its_exact_answer(
    relay_server: RelayServer, scheduled_task: None, probe: Probe
) -> None:
    response = exchange("127.0.0.1", relay_server.port, probe.request(relay_server))
    assert response.status == probe.status, response.body[:300]
    if probe.status == 405:
        assert response.headers["allow"] == "GET, POST"
    if probe.code is None:
        assert response.body == b""
    else:
        assert_envelope(response, probe.code, probe.message_names)
    # Nothing a probe sends runs an action: the scheduled task is still active.
    rtc = RtcService(relay_server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    task = rtc.action("GetRelayStream", task_key(ROOM, SCHEDULED_TASK))["Result"]["Task"]
    assert task["Status"] == 1


def assert_envelope(response: RawResponse, code: str, names: str) -> None:
    assert response.headers["content-type"].startswith("application/json")
    envelope = response.json()
    assert "Result" not in envelope
    metadata = envelope["ResponseMetadata"]
    assert metadata["RequestId"]
    assert metadata["Service"] == "rtc"
    assert metadata["Region"] == REGION
    assert metadata["Error"]["Code"] == code
    message = metadata["Error"]["Message"]
    assert names.lower() in message.lower(), message
    assert "Traceback" not in message


def test_client_gone_mid_body_is_one_info_line(relay_server: RelayServer) -> None:
    body = _stop_scheduled(relay_server)
    request = signed_request(relay_server, "POST", "StopRelayStream", body)
    with socket.create_connection(("127.0.0.1", relay_server.port), timeout=5) as sock:
        sock.sendall(request[: -len(body) // 2])  # headers and half the body, then hang up
    deadline = time.monotonic() + 10
    while "the client disconnected" not in relay_server.log():
        assert time.monotonic() < deadline, relay_server.log()[-2000:]
        time.sleep(0.05)
    log = relay_server.log()
    assert "InternalError" not in log
    assert "Traceback" not in log
    assert "Error handling request" not in log  # aiohttp's own traceback line
