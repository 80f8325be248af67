"""WHIP as a publisher meets it: join a room with a real WebRTC peer, be seen and heard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relaystream.rtc.token import Privilege, generate_token
from tests.support.publisher import WhipPublisher, WhipRefused
from tests.support.sdk import RtcService
from tests.support.server import APP_ID, APP_KEY, RelayServer
from tests.support.tasks import call, task_key, wait_for_status
from tests.support.viewer import WhepRefused, WhepViewer


def whip_url(server: RelayServer, room: str, user: str) -> str:
    return f"{server.base_url}/whip/{APP_ID}/{room}/{user}"


def whep_url(server: RelayServer, room: str, user: str) -> str:
    return f"{server.base_url}/whep/{APP_ID}/{room}/{user}"


@pytest.fixture
async def camera(relay_server: RelayServer, clips: dict[str, Path]) -> AsyncIterator[str]:
    """An aiortc peer publishing the test clip over WHIP as ``camera`` in room-whip."""
    publisher = WhipPublisher(
        whip_url(relay_server, "room-whip", "camera"),
        relay_server.publish_token("room-whip", "camera"),
        clips["ts"],
    )
    await publisher.connect()
    yield "camera"
    await publisher.close()


def publisher_as(server: RelayServer, room: str, user: str, clip: Path) -> WhipPublisher:
    return WhipPublisher(whip_url(server, room, user), server.publish_token(room, user), clip)


async def refused(server: RelayServer, room: str, user: str, token: str, clip: Path) -> int:
    publisher = WhipPublisher(whip_url(server, room, user), token, clip)
    with pytest.raises(WhipRefused) as refusal:
        await publisher.connect()
    return refusal.value.status


async def test_a_whip_publisher_is_seen_and_heard_then_leaves(
    relay_server: RelayServer, clips: dict[str, Path]
) -> None:
    room = "room-whip-story"
    publisher = publisher_as(relay_server, room, "guest", clips["ts"])
    await publisher.connect()
    viewer = WhepViewer(whep_url(relay_server, room, "guest"), relay_server.subscribe_token(room))
    try:
        await viewer.connect()
        video = await viewer.wait_for_media("video", 3.0)
        audio = await viewer.wait_for_media("audio", 3.0)
        assert {(f.width, f.height) for f in video.frames} == {(640, 360)}
        assert video.frame_rate() == pytest.approx(30, rel=0.2)
        assert {f.sample_rate for f in audio.frames} == {48_000}

        assert await publisher.leave() == 200
        await asyncio.wait_for(viewer.tracks["video"].ended.wait(), 10)
    finally:
        await viewer.close()
        await publisher.close()
    late = WhepViewer(whep_url(relay_server, room, "guest"), relay_server.subscribe_token(room))
    with pytest.raises(WhepRefused) as gone:
        await late.connect()
    assert gone.value.status == 404


async def test_publishing_needs_a_publish_token_for_that_user(
    relay_server: RelayServer, clips: dict[str, Path]
) -> None:
    room = "room-whip-tokens"
    subscribe_only = relay_server.subscribe_token(room, "guest")
    other_user = relay_server.publish_token(room, "someone-else")
    forged = generate_token(
        app_id=APP_ID,
        app_key="f" * len(APP_KEY),
        room_id=room,
        user_id="guest",
        privileges=[Privilege.PUBLISH_STREAM],
    )
    assert await refused(relay_server, room, "guest", "", clips["ts"]) == 401
    assert await refused(relay_server, room, "guest", subscribe_only, clips["ts"]) == 403
    assert await refused(relay_server, room, "guest", other_user, clips["ts"]) == 403
    assert await refused(relay_server, room, "guest", forged, clips["ts"]) == 403
    # None of them got in: the user id is still free.
    publisher = publisher_as(relay_server, room, "guest", clips["ts"])
    await publisher.connect()
    assert await publisher.leave() == 200


async def test_nobody_publishes_as_a_user_already_in_the_room(
    relay_server: RelayServer, rtc: RtcService, media_url: str, clips: dict[str, Path], camera: str
) -> None:
    room = "room-whip"
    assert (
        await refused(
            relay_server, room, camera, relay_server.publish_token(room, camera), clips["ts"]
        )
        == 409
    )

    start = {
        **task_key(room, "relay"),
        "UserId": "relay-user",
        "Token": relay_server.publish_token(room, "relay-user"),
        "Control": {"StreamUrl": f"{media_url}/clip.ts", "StreamMode": 1},
    }
    assert await call(rtc, "StartRelayStream", start) == "ok"
    try:
        await wait_for_status(rtc, room, "relay", 2)
        token = relay_server.publish_token(room, "relay-user")
        assert await refused(relay_server, room, "relay-user", token, clips["ts"]) == 409
    finally:
        await call(rtc, "StopRelayStream", task_key(room, "relay"))
