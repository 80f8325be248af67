"""The event body and its signature, checked by the test receiver's own reading of
SPEC §5 (tests/support/callbacks.py), not by relaystream's."""

from __future__ import annotations

import json
from dataclasses import replace

from relaystream.callbacks.events import VisibleState, event_record, makes_event
from relaystream.callbacks.signing import sign, signature_matches, signed
from tests.support.callbacks import expected_signature, problems_with

STATE = VisibleState(
    app_id="5f8a1c2b3d4e5f6a7b8c9d0e",
    room_id="room-1",
    task_id="task-1",
    user_id="relay-ü",
    business_id="concerts",
    stream_url="rtmp://live.example.com/app/stream",
    start_timestamp_s=1_800_000_000,
    status=3,
    reason="SourceError",
    message="HTTP 404 Not Found",
)


def test_an_event_is_what_a_receiver_expects_and_verifies() -> None:
    record = event_record(STATE, now_ms=1_790_000_000_123)
    body = signed(record.body, "s3cret")

    assert problems_with(body, "s3cret") == []
    assert body["EventTime"] == "2026-09-21T14:13:20.123Z"
    assert body["EventId"] == record.event_id
    assert json.loads(str(body["EventData"])) == {
        "AppId": STATE.app_id,
        "BusinessId": "concerts",
        "RoomId": "room-1",
        "TaskId": "task-1",
        "UserId": "relay-ü",
        "StreamUrl": STATE.stream_url,
        "Status": 3,
        "StartTimeStamp": 1_800_000_000,
        "Msg": "HTTP 404 Not Found",
        "Reason": "SourceError",
    }


def test_the_signature_covers_every_signed_field_and_the_secret() -> None:
    body = event_record(STATE, now_ms=1_790_000_000_000).body
    assert sign(body, "s3cret") == expected_signature(body, "s3cret")
    assert sign(body, "s3cret") != sign(body, "other")
    for name in ("EventType", "EventData", "EventTime", "EventId", "AppId", "Version", "Nonce"):
        changed = {**body, name: str(body[name]) + "x"}
        assert sign(changed, "s3cret") != sign(body, "s3cret"), name
    assert signature_matches(signed(body, "s3cret"), "s3cret")
    assert not signature_matches(signed(body, "s3cret"), "other")
    assert not signature_matches({**signed(body, "s3cret"), "Nonce": "zzzz"}, "s3cret")


def test_event_ids_and_nonces_are_fresh() -> None:
    bodies = [event_record(STATE, now_ms=1_790_000_000_000).body for _ in range(200)]
    assert len({body["EventId"] for body in bodies}) == 200
    assert len({body["Nonce"] for body in bodies}) > 150
    assert all(len(str(body["Nonce"])) == 4 for body in bodies)


def test_only_a_change_of_status_or_reason_is_an_event() -> None:
    running = replace(STATE, status=2, reason="", message="")
    assert makes_event(None, running)  # a new run
    assert makes_event(running, replace(running, status=1))
    assert makes_event(running, replace(running, status=3, reason="ApiStop"))
    assert not makes_event(running, replace(running, stream_url="rtmp://elsewhere/app/s"))
    assert not makes_event(running, replace(running, message="a detail nobody sees"))
