"""Signature V4: requests signed by the official SDK verify, and ours match the SDK's."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from volcengine.ApiInfo import ApiInfo
from volcengine.auth.SignerV4 import SignerV4
from volcengine.base.Service import Service
from volcengine.Credentials import Credentials
from volcengine.ServiceInfo import ServiceInfo

from relaystream.api.errors import (
    INVALID_ACCESS_KEY,
    INVALID_TIMESTAMP,
    SIGNATURE_DOES_NOT_MATCH,
    ApiError,
)
from relaystream.api.signature import (
    SERVICE,
    HttpRequestParts,
    VerifiedCaller,
    sign_request,
    verify_request,
)

AK = "AKLTexampleaccesskey"
SK = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ=="
REGION = "cn-north-1"
HOST = "127.0.0.1:18080"
FIXED = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
FIXED_X_DATE = "20240506T070809Z"
BODY = json.dumps({"AppId": "app-1", "RoomId": "room 1", "TaskId": "t-1"})


def secrets(ak: str) -> str | None:
    return {AK: SK}.get(ak)


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Service:
    # The SDK replaces the given credentials with ones from the environment or from
    # ~/.volc if it finds any; keep it on the ones the test hands it.
    monkeypatch.delenv("VOLC_ACCESSKEY", raising=False)
    monkeypatch.delenv("VOLC_SECRETKEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return _service(HOST)


@pytest.fixture
def frozen_sdk_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(SignerV4, "get_current_format_date", staticmethod(lambda: FIXED_X_DATE))
    yield


def _service(host: str) -> Service:
    info = ServiceInfo(
        host,
        {"Accept": "application/json"},
        Credentials(AK, SK, SERVICE, REGION),
        5,
        5,
        scheme="http",
    )
    api_info = {
        "StartRelayStream": ApiInfo(
            "POST", "/", {"Action": "StartRelayStream", "Version": "2023-11-01"}, {}, {}
        ),
        "GetRelayStream": ApiInfo(
            "GET", "/", {"Action": "GetRelayStream", "Version": "2023-11-01"}, {}, {}
        ),
    }
    return Service(info, api_info)


def _received(method: str, url: str, headers: dict[str, str], body: bytes) -> HttpRequestParts:
    parts = urlsplit(url)
    # A real client adds headers the SDK does not sign; they must not matter.
    sent = {**headers, "Content-Length": str(len(body)), "Accept-Encoding": "gzip, deflate"}
    return HttpRequestParts(
        method=method, path=parts.path, query_string=parts.query, headers=sent, body=body
    )


def sdk_json(service: Service, api: str, params: dict[str, Any], body: str) -> HttpRequestParts:
    """What ``Service.json()`` would send, captured instead of sent."""
    r = service.prepare_request(service.api_info[api], params)
    r.headers["Content-Type"] = "application/json"
    r.body = body
    SignerV4.sign(r, service.service_info.credentials)
    return _received(r.method, r.build(), dict(r.headers), body.encode())


def sdk_get(service: Service, api: str, params: dict[str, Any], doseq: int) -> HttpRequestParts:
    """What ``Service.get()`` would send, captured instead of sent."""
    r = service.prepare_request(service.api_info[api], params, doseq)
    SignerV4.sign(r, service.service_info.credentials)
    return _received(r.method, r.build(doseq), dict(r.headers), b"")


def with_headers(req: HttpRequestParts, **changes: str | None) -> HttpRequestParts:
    headers = {k: v for k, v in req.headers.items() if k not in changes}
    headers.update({k: v for k, v in changes.items() if v is not None})
    return HttpRequestParts(req.method, req.path, req.query_string, headers, req.body)


def signed_post(secret: str = SK, ak: str = AK, body: str = BODY) -> HttpRequestParts:
    headers = sign_request(
        method="POST",
        host=HOST,
        path="/",
        query={"Action": "StartRelayStream", "Version": "2023-11-01"},
        headers={"Content-Type": "application/json"},
        body=body.encode(),
        access_key_id=ak,
        secret_access_key=secret,
        region=REGION,
        now=FIXED,
    )
    return HttpRequestParts(
        "POST", "/", "Action=StartRelayStream&Version=2023-11-01", headers, body.encode()
    )


def rejection(req: HttpRequestParts, now: datetime = FIXED, max_skew_s: int = 900) -> ApiError:
    with pytest.raises(ApiError) as caught:
        verify_request(req, secret_for=secrets, region=REGION, now=now, max_skew_s=max_skew_s)
    return caught.value


# --- the official SDK signs, we verify -------------------------------------------------


def test_sdk_signed_json_post_verifies(sdk: Service) -> None:
    req = sdk_json(sdk, "StartRelayStream", {}, BODY)

    assert "Authorization" in req.headers
    assert verify_request(req, secret_for=secrets, region=REGION) == VerifiedCaller(AK, REGION)


@pytest.mark.parametrize("doseq", [0, 1], ids=["lists-joined", "lists-repeated"])
def test_sdk_signed_get_with_escaped_query_verifies(sdk: Service, doseq: int) -> None:
    params: dict[str, Any] = {
        "AppId": "app-1",
        "RoomId": "room 1@edge-a.b",
        "UserId": "用户~ü",
        "Note": "a+b=c&d/e",
        "Empty": "",
        "TaskIds": ["t 2", "t-1", "t.3"],
        "Limit": 10,
    }
    req = sdk_get(sdk, "GetRelayStream", params, doseq)

    assert "+" in req.query_string  # urlencode sent the spaces as '+'
    assert verify_request(req, secret_for=secrets, region=REGION).access_key_id == AK


def test_sdk_signed_host_on_default_port_verifies(sdk: Service) -> None:
    # The SDK signs "host" without ":443" but sends the Host header with it.
    req = sdk_json(_service("rtc.example.com:443"), "StartRelayStream", {}, BODY)

    assert req.headers["Host"] == "rtc.example.com:443"
    assert verify_request(req, secret_for=secrets, region=REGION).region == REGION
    # ...and the port only disappears from the signature when it is 80 or 443.
    moved = with_headers(req, Host="rtc.example.com:8443")
    assert rejection(moved, now=datetime.now(UTC)).kind == SIGNATURE_DOES_NOT_MATCH


def test_received_header_names_are_matched_case_insensitively(sdk: Service) -> None:
    req = sdk_json(sdk, "StartRelayStream", {}, BODY)
    lowered = HttpRequestParts(
        req.method,
        req.path,
        req.query_string,
        {name.lower(): value for name, value in req.headers.items()},
        req.body,
    )

    assert verify_request(lowered, secret_for=secrets, region=REGION).access_key_id == AK


def test_a_changed_signed_header_is_caught(sdk: Service) -> None:
    req = sdk_json(sdk, "StartRelayStream", {}, BODY)
    retyped = with_headers(req, **{"Content-Type": "text/plain"})

    assert rejection(retyped, now=datetime.now(UTC)).kind == SIGNATURE_DOES_NOT_MATCH


def test_a_changed_query_is_caught(sdk: Service) -> None:
    req = sdk_json(sdk, "StartRelayStream", {}, BODY)
    other = HttpRequestParts(
        req.method,
        req.path,
        req.query_string.replace("StartRelayStream", "StopRelayStream"),
        req.headers,
        req.body,
    )

    assert rejection(other, now=datetime.now(UTC)).kind == SIGNATURE_DOES_NOT_MATCH


# --- rejections ------------------------------------------------------------------------


def test_tampered_body_is_rejected(sdk: Service, frozen_sdk_clock: None) -> None:
    req = sdk_json(sdk, "StartRelayStream", {}, BODY)
    tampered = HttpRequestParts(
        req.method, req.path, req.query_string, req.headers, BODY.replace("t-1", "t-2").encode()
    )

    err = rejection(tampered)
    assert err.kind == SIGNATURE_DOES_NOT_MATCH
    assert "X-Content-Sha256" in err.message


def test_tampered_body_with_recomputed_hash_is_rejected(
    sdk: Service, frozen_sdk_clock: None
) -> None:
    req = sdk_json(sdk, "StartRelayStream", {}, BODY)
    body = BODY.replace("t-1", "t-2").encode()
    tampered = with_headers(req, **{"X-Content-Sha256": hashlib.sha256(body).hexdigest()})
    tampered = HttpRequestParts(
        tampered.method, tampered.path, tampered.query_string, tampered.headers, body
    )

    assert rejection(tampered).kind == SIGNATURE_DOES_NOT_MATCH


def test_wrong_secret_is_rejected() -> None:
    err = rejection(signed_post(secret="not-" + SK))

    assert err.kind == SIGNATURE_DOES_NOT_MATCH
    assert "Authorization" in err.message


def test_unknown_access_key_is_rejected() -> None:
    err = rejection(signed_post(ak="AKLTsomeoneelse"))

    assert err.kind == INVALID_ACCESS_KEY
    assert "AKLTsomeoneelse" in err.message


def test_request_signed_20_minutes_ago_is_rejected() -> None:
    err = rejection(signed_post(), now=FIXED + timedelta(minutes=20))

    assert err.kind == INVALID_TIMESTAMP
    assert "X-Date" in err.message


def test_request_signed_20_minutes_ahead_is_rejected() -> None:
    err = rejection(signed_post(), now=FIXED - timedelta(minutes=20))

    assert err.kind == INVALID_TIMESTAMP
    assert "X-Date" in err.message


def test_skew_within_the_window_is_accepted_and_the_window_is_configurable() -> None:
    req = signed_post()

    assert verify_request(
        req, secret_for=secrets, region=REGION, now=FIXED + timedelta(minutes=14)
    ).region
    assert verify_request(
        req, secret_for=secrets, region=REGION, now=FIXED - timedelta(minutes=14)
    ).region
    assert rejection(req, now=FIXED + timedelta(seconds=61), max_skew_s=60).kind == (
        INVALID_TIMESTAMP
    )


@pytest.mark.parametrize("x_date", [None, "", "yesterday", "20240506T0708Z", "20241306T070809Z"])
def test_missing_or_unparsable_x_date_is_rejected(x_date: str | None) -> None:
    err = rejection(with_headers(signed_post(), **{"X-Date": x_date}))

    assert err.kind == INVALID_TIMESTAMP
    assert "X-Date" in err.message


def test_x_date_on_another_day_than_the_credential_scope_is_rejected() -> None:
    req = signed_post()
    auth = req.headers["Authorization"].replace("/20240506/", "/20240505/")

    err = rejection(with_headers(req, Authorization=auth))
    assert err.kind == INVALID_TIMESTAMP
    assert "Credential" in err.message


def test_missing_authorization_is_rejected() -> None:
    err = rejection(with_headers(signed_post(), Authorization=None))

    assert err.kind == SIGNATURE_DOES_NOT_MATCH
    assert "Authorization" in err.message


def test_credential_for_another_service_is_rejected() -> None:
    headers = sign_request(
        method="GET",
        host=HOST,
        path="/",
        query={},
        headers={},
        body=b"",
        access_key_id=AK,
        secret_access_key=SK,
        region=REGION,
        service="iam",
        now=FIXED,
    )

    err = rejection(HttpRequestParts("GET", "/", "", headers, b""))
    assert err.kind == SIGNATURE_DOES_NOT_MATCH
    assert "iam" in err.message


def test_header_named_in_signed_headers_but_absent_is_rejected() -> None:
    req = signed_post()

    err = rejection(with_headers(req, **{"Content-Type": None}))
    assert err.kind == SIGNATURE_DOES_NOT_MATCH
    assert "content-type" in err.message


GOOD_AUTH = signed_post().headers["Authorization"]


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "   ",
        "HMAC-SHA256",
        "HMAC-SHA256 ",
        "Bearer abc",
        "hmac-sha256 Credential=a/b/c/d/request, SignedHeaders=host, Signature=00",
        "HMAC-SHA256 Credential=, SignedHeaders=, Signature=",
        "HMAC-SHA256 Credential=AK/20240506/cn-north-1/rtc/request",
        "HMAC-SHA256 Credential=AK/20240506/cn-north-1/rtc, SignedHeaders=host, Signature=ab",
        "HMAC-SHA256 Credential=AK//cn-north-1/rtc/request, SignedHeaders=host, Signature=ab",
        "HMAC-SHA256 Credential=AK/2024-05-06/r/rtc/request, SignedHeaders=host, Signature=ab",
        "HMAC-SHA256 Credential=AK/20240506/r/rtc/req, SignedHeaders=host, Signature=" + "a" * 64,
        "HMAC-SHA256 Credential=AK/20240506/r/rtc/request, SignedHeaders=host;;x-date, "
        "Signature=" + "a" * 64,
        "HMAC-SHA256 Credential=AK/20240506/r/rtc/request, SignedHeaders=host;HOST, "
        "Signature=" + "a" * 64,
        "HMAC-SHA256 Credential=AK/20240506/r/rtc/request, SignedHeaders=host, Signature=zz",
        "HMAC-SHA256 Credential=AK/20240506/r/rtc/request, SignedHeaders=host, "
        "Signature=" + "é" * 64,
        "HMAC-SHA256 Credential=AK/20240506/r/rtc/request, SignedHeaders=host, "
        "Signature=" + "A" * 64,
        "HMAC-SHA256 Credential=a=b=c, Credential=x, SignedHeaders, Signature",
        "HMAC-SHA256 ,,,,",
        "HMAC-SHA256 Credential=\x00/\udcff/\n/rtc/request, SignedHeaders=\ud800, Signature=",
        GOOD_AUTH.replace(", Signature=", ", Signature=" + "0" * 64 + ", Signature="),
        GOOD_AUTH.replace("SignedHeaders=", "SignedHeaders=x-missing;"),
        GOOD_AUTH[:-1] + ("0" if GOOD_AUTH[-1] != "0" else "1"),
        GOOD_AUTH + "0",
        "x" * 10_000,
    ],
)
def test_garbage_authorization_is_an_api_error(authorization: str) -> None:
    req = with_headers(signed_post(), Authorization=authorization)

    err = rejection(req)
    assert err.kind in (SIGNATURE_DOES_NOT_MATCH, INVALID_ACCESS_KEY, INVALID_TIMESTAMP)
    assert len(err.message) < 400


# --- we sign -----------------------------------------------------------------------------


def test_sign_request_round_trip_verifies() -> None:
    assert verify_request(
        signed_post(), secret_for=secrets, region=REGION, now=FIXED
    ) == VerifiedCaller(AK, REGION)


def test_sign_request_round_trip_with_query_lists_and_escapes() -> None:
    query: dict[str, str | list[str]] = {
        "Action": "GetRelayStream",
        "RoomId": "room 1@edge-a.b",
        "UserId": "用户~ü",
        "TaskIds": ["t 2", "t-1"],
    }
    headers = sign_request(
        method="GET",
        host="rtc.example.com:80",
        path="/",
        query=query,
        headers={"X-Request-Id": "r-1"},
        body=b"",
        access_key_id=AK,
        secret_access_key=SK,
        region=REGION,
        now=FIXED,
    )
    req = HttpRequestParts("GET", "/", urlencode(query, doseq=True), headers, b"")

    assert "x-request-id" in headers["Authorization"]
    assert verify_request(req, secret_for=secrets, region=REGION, now=FIXED).access_key_id == AK


def test_sign_request_replaces_stale_signing_headers() -> None:
    headers = sign_request(
        method="GET",
        host=HOST,
        path="/",
        query={},
        headers={"x-date": "19990101T000000Z", "authorization": "old", "HOST": "elsewhere"},
        body=b"",
        access_key_id=AK,
        secret_access_key=SK,
        region=REGION,
        now=FIXED,
    )

    assert {k.lower() for k in headers} == {"host", "x-date", "x-content-sha256", "authorization"}
    assert headers["X-Date"] == FIXED_X_DATE
    assert headers["Host"] == HOST


def test_sign_request_matches_the_sdk_for_a_json_post(sdk: Service, frozen_sdk_clock: None) -> None:
    r = sdk.prepare_request(sdk.api_info["StartRelayStream"], {})
    r.headers["Content-Type"] = "application/json"
    r.body = BODY
    SignerV4.sign(r, sdk.service_info.credentials)

    ours = sign_request(
        method="POST",
        host=HOST,
        path="/",
        query={"Action": "StartRelayStream", "Version": "2023-11-01"},
        headers={
            "Accept": "application/json",
            "User-Agent": r.headers["User-Agent"],
            "Content-Type": "application/json",
        },
        body=BODY.encode(),
        access_key_id=AK,
        secret_access_key=SK,
        region=REGION,
        now=FIXED,
    )

    assert ours["Authorization"] == r.headers["Authorization"]
    assert ours == dict(r.headers)


def test_sign_request_matches_the_sdk_for_a_form_post_and_a_get(
    sdk: Service, frozen_sdk_clock: None
) -> None:
    # A POST without Content-Type gets the SDK's form default, signed.
    r = sdk.prepare_request(sdk.api_info["StartRelayStream"], {})
    r.body = "a=1"
    SignerV4.sign(r, sdk.service_info.credentials)
    ours = sign_request(
        method="POST",
        host=HOST,
        path="/",
        query={"Action": "StartRelayStream", "Version": "2023-11-01"},
        headers={"Accept": "application/json", "User-Agent": r.headers["User-Agent"]},
        body=b"a=1",
        access_key_id=AK,
        secret_access_key=SK,
        region=REGION,
        now=FIXED,
    )
    assert ours == dict(r.headers)

    params: dict[str, Any] = {"RoomId": "room 1@a-b.c", "UserId": "用户", "Ids": ["b", "a c"]}
    g = sdk.prepare_request(sdk.api_info["GetRelayStream"], dict(params), 1)
    SignerV4.sign(g, sdk.service_info.credentials)
    ours = sign_request(
        method="GET",
        host=HOST,
        path="/",
        query={"Action": "GetRelayStream", "Version": "2023-11-01", **params},
        headers={"Accept": "application/json", "User-Agent": g.headers["User-Agent"]},
        body=b"",
        access_key_id=AK,
        secret_access_key=SK,
        region=REGION,
        now=FIXED,
    )
    assert ours["Authorization"] == g.headers["Authorization"]


def test_hand_built_signature_without_content_hash_header_verifies() -> None:
    """An independent reading of the contract: X-Content-Sha256 unsigned and absent."""
    body = b'{"k":"v"}'
    body_hash = hashlib.sha256(body).hexdigest()
    canonical = "\n".join(
        [
            "POST",
            "/",
            "Action=A&Version=V",
            f"host:{HOST}\nx-date:{FIXED_X_DATE}\n",
            "host;x-date",
            body_hash,
        ]
    )
    scope = f"20240506/{REGION}/{SERVICE}/request"
    to_sign = "\n".join(
        ["HMAC-SHA256", FIXED_X_DATE, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = SK.encode()
    for part in ("20240506", REGION, SERVICE, "request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers = {
        "host": HOST,
        "x-date": FIXED_X_DATE,
        "authorization": f"HMAC-SHA256 Credential={AK}/{scope}, SignedHeaders=host;x-date, "
        f"Signature={signature}",
    }

    ok = HttpRequestParts("POST", "/", "Version=V&Action=A", headers, body)
    assert verify_request(ok, secret_for=secrets, region=REGION, now=FIXED).access_key_id == AK
    tampered = HttpRequestParts("POST", "/", "Version=V&Action=A", headers, b'{"k":"w"}')
    assert rejection(tampered).kind == SIGNATURE_DOES_NOT_MATCH


def test_naive_clock_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_request(signed_post(), secret_for=secrets, region=REGION, now=datetime(2024, 5, 6))


def test_sign_request_refuses_headers_that_differ_only_in_case() -> None:
    with pytest.raises(ValueError, match="more than once"):
        sign_request(
            method="GET",
            host=HOST,
            path="/",
            query={},
            headers={"X-A": "1", "x-a": "2"},
            body=b"",
            access_key_id=AK,
            secret_access_key=SK,
            region=REGION,
            now=FIXED,
        )


# --- what the messages give away ----------------------------------------------------------


def test_messages_never_contain_the_secret_or_the_expected_signature() -> None:
    good = signed_post()
    expected_signature = good.headers["Authorization"].rsplit("Signature=", 1)[1]
    failures = [
        signed_post(secret="not-" + SK),
        signed_post(ak="AKLTsomeoneelse"),
        HttpRequestParts(good.method, good.path, good.query_string, good.headers, b"{}"),
        with_headers(good, Authorization=None),
        with_headers(good, **{"X-Date": "garbage"}),
        with_headers(good, Authorization=f"HMAC-SHA256 Credential={SK}"),
    ]
    messages = [rejection(req).message for req in failures]
    messages.append(rejection(good, now=FIXED + timedelta(hours=1)).message)

    for message in messages:
        assert SK not in message
        assert expected_signature not in message
