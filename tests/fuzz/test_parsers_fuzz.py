"""Hypothesis against the parsers that read untrusted bytes in the server process.

Each parser has one way to say no (its own exception); anything else escaping is a
500 or a dead connection handler waiting to happen. Inputs are both arbitrary and
mutations of a valid input, so the search reaches past the first check.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
from datetime import UTC, datetime

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaystream.api.errors import ApiError
from relaystream.api.signature import HttpRequestParts, sign_request, verify_request
from relaystream.media.wire import EncodedPacket, WireError, WorkerEvent, read_message
from relaystream.rtc.token import Privilege, TokenError, generate_token, parse_token, verify_token
from relaystream.rtc.whep import _offered_kinds

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
AK, SK, REGION = "AKLTfuzz", "fuzz-secret", "cn-north-1"
APP_ID, APP_KEY = "5f8a1c2b3d4e5f6a7b8c9d0e", "fuzz-app-key"


def edits(original: str, alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``original`` with a few characters replaced, inserted or removed."""

    @st.composite
    def edited(draw: st.DrawFn) -> str:
        text = list(original)
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, max(len(text) - 1, 0)))
            action = draw(st.sampled_from(["replace", "insert", "delete"]))
            if action == "replace" and text:
                text[at] = draw(alphabet)
            elif action == "insert":
                text.insert(at, draw(alphabet))
            elif text:
                del text[at]
        return "".join(text)

    return edited()


# --- the V4 signature -----------------------------------------------------------------

BODY = b'{"AppId": "a", "RoomId": "r", "TaskId": "t"}'
QUERY = "Action=StopRelayStream&Version=2023-11-01"
SIGNED = sign_request(
    method="POST",
    host="127.0.0.1:8080",
    path="/",
    query={"Action": "StopRelayStream", "Version": "2023-11-01"},
    headers={"Content-Type": "application/json"},
    body=BODY,
    access_key_id=AK,
    secret_access_key=SK,
    region=REGION,
    now=NOW,
)


def verify(headers: dict[str, str], query: str = QUERY, body: bytes = BODY) -> None:
    with contextlib.suppress(ApiError):
        verify_request(
            HttpRequestParts("POST", "/", query, headers, body),
            secret_for=lambda ak: SK if ak == AK else None,
            region=REGION,
            now=NOW,
        )


def test_the_unedited_request_verifies() -> None:
    caller = verify_request(
        HttpRequestParts("POST", "/", QUERY, SIGNED, BODY),
        secret_for=lambda ak: SK if ak == AK else None,
        region=REGION,
        now=NOW,
    )
    assert caller.access_key_id == AK


@FUZZ
@given(authorization=edits(SIGNED["Authorization"], st.sampled_from("=,/; aZ0\x00é\udcff")))
def test_edited_authorization_is_only_ever_refused(authorization: str) -> None:
    verify({**SIGNED, "Authorization": authorization})


@FUZZ
@given(
    authorization=st.text(max_size=300),
    x_date=st.one_of(st.none(), st.text(max_size=30), edits(SIGNED["X-Date"], st.characters())),
    query=st.text(max_size=200),
    body=st.binary(max_size=200),
)
def test_arbitrary_signature_inputs_are_only_ever_refused(
    authorization: str, x_date: str | None, query: str, body: bytes
) -> None:
    headers = {**SIGNED, "Authorization": authorization}
    if x_date is None:
        del headers["X-Date"]
    else:
        headers["X-Date"] = x_date
    verify(headers, query, body)


# Lone surrogates included: that is how aiohttp hands over header bytes that are not UTF-8.
ANY_CHARACTER = st.characters(exclude_categories=())


@FUZZ
@given(
    headers=st.dictionaries(
        st.text(ANY_CHARACTER, min_size=1, max_size=20), st.text(ANY_CHARACTER, max_size=80)
    ),
    signed=st.lists(st.sampled_from(["x-date", "host", "x-note", "content-type"]), max_size=4),
)
def test_arbitrary_extra_headers_are_only_ever_refused(
    headers: dict[str, str], signed: list[str]
) -> None:
    # Also with the headers named as signed, so that their values reach the signer.
    authorization = SIGNED["Authorization"].replace(
        "SignedHeaders=", f"SignedHeaders={';'.join(dict.fromkeys(signed))};" if signed else ""
    )
    verify({**SIGNED, "Authorization": authorization, "X-Note": "\udcff", **headers})


# --- RTC tokens -----------------------------------------------------------------------

TOKEN = generate_token(
    app_id=APP_ID,
    app_key=APP_KEY,
    room_id="room",
    user_id="user",
    privileges=[Privilege.PUBLISH_STREAM, Privilege.SUBSCRIBE_STREAM],
    expire_at=0,
)


def check_token(token: str) -> None:
    try:
        parse_token(token)
    except TokenError:
        return
    with contextlib.suppress(TokenError):
        verify_token(
            token,
            app_id=APP_ID,
            app_key=APP_KEY,
            room_id="room",
            user_id="user",
            privilege=Privilege.PUBLISH_STREAM,
        )


@FUZZ
@given(token=st.text(max_size=400))
def test_arbitrary_tokens_are_only_ever_refused(token: str) -> None:
    check_token(token)


@FUZZ
@given(content=st.binary(max_size=300))
def test_arbitrary_token_content_is_only_ever_refused(content: bytes) -> None:
    check_token(TOKEN[:27] + base64.b64encode(content).decode())


@FUZZ
@given(data=st.data())
def test_edited_token_content_is_only_ever_refused(data: st.DataObject) -> None:
    content = bytearray(base64.b64decode(TOKEN[27:]))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(content) - 1))
        content[at] = data.draw(st.integers(0, 255))
    check_token(TOKEN[:27] + base64.b64encode(bytes(content)).decode())


def test_the_unedited_token_verifies() -> None:
    check_token(TOKEN)  # and for real:
    verify_token(
        TOKEN,
        app_id=APP_ID,
        app_key=APP_KEY,
        room_id="room",
        user_id="user",
        privilege=Privilege.PUBLISH_STREAM,
    )


# --- SDP offers (WHEP) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def browser_like_offer() -> str:
    async def make() -> str:
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        assert pc.localDescription is not None
        offer = pc.localDescription.sdp
        await pc.close()
        return offer

    return asyncio.run(make())


def offered(sdp: str) -> None:
    try:
        kinds = _offered_kinds(RTCSessionDescription(sdp=sdp, type="offer"))
    except ValueError:
        return
    assert all(kind.value in {"audio", "video"} for kind in kinds)


def test_the_unedited_offer_asks_for_video_and_audio(browser_like_offer: str) -> None:
    kinds = _offered_kinds(RTCSessionDescription(sdp=browser_like_offer, type="offer"))
    assert [kind.value for kind in kinds] == ["video", "audio"]


@FUZZ
@given(sdp=st.text(max_size=2000))
def test_arbitrary_sdp_is_only_ever_refused(sdp: str) -> None:
    offered(sdp)


def test_edited_offers_are_only_ever_refused(browser_like_offer: str) -> None:
    lines = browser_like_offer.split("\r\n")

    @FUZZ
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        edited = list(lines)
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(edited) - 1))
            action = data.draw(st.sampled_from(["drop", "dup", "garble", "truncate"]))
            if action == "drop":
                del edited[at]
            elif action == "dup":
                edited.insert(at, edited[at])
            elif action == "garble":
                edited[at] = data.draw(edits(edited[at], st.sampled_from("=: /0a\x00")))
            else:
                edited[at] = edited[at][: data.draw(st.integers(0, len(edited[at])))]
            if not edited:
                edited = [""]
        offered("\r\n".join(edited))

    check()


# --- the worker wire ------------------------------------------------------------------

HEADER = struct.Struct("!BBqI")
EVENT_PAYLOADS = [b'{"type": "x"}', b"[]", b"{", b'{"type": 1}', b'{"type": "x", "a": [1]}']


def read_all(data: bytes) -> list[EncodedPacket | WorkerEvent]:
    async def run() -> list[EncodedPacket | WorkerEvent]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        messages: list[EncodedPacket | WorkerEvent] = []
        try:
            while (message := await read_message(reader)) is not None:
                messages.append(message)
        except WireError:
            pass
        return messages

    return asyncio.run(run())


frames = st.builds(
    lambda kind, flags, pts, payload, lie: (
        HEADER.pack(kind, flags, pts, max(len(payload) + lie, 0)) + payload
    ),
    kind=st.integers(0, 255),
    flags=st.integers(0, 255),
    pts=st.integers(-(2**63), 2**63 - 1),
    payload=st.one_of(
        st.binary(max_size=64),
        st.sampled_from(EVENT_PAYLOADS),
    ),
    lie=st.sampled_from([0, 0, 0, 1, -1, 2**20]),
)


@FUZZ
@given(data=st.binary(max_size=400))
def test_arbitrary_worker_bytes_are_only_ever_refused(data: bytes) -> None:
    read_all(data)


@FUZZ
@given(chunks=st.lists(frames, max_size=6))
def test_framed_worker_messages_are_read_or_refused(chunks: list[bytes]) -> None:
    for message in read_all(b"".join(chunks)):
        assert isinstance(message, EncodedPacket | WorkerEvent)
