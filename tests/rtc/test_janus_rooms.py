"""An app whose rooms live on Janus: its relays publish into a Janus VideoRoom.

A real Janus (HTTP transport on 127.0.0.1, VideoRoom only, loopback ICE) and a real
relaystream server configured with ``room_server = "janus"``: an aiortc subscriber that
joins through Janus's own API decodes the relay, and stopping the task takes the
publisher out of the room.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator

import pytest

from relaystream.rtc.janus import JanusError, janus_room_access
from tests.support.janus import JanusSubscriber, janus_server, list_participants
from tests.support.sdk import RtcService
from tests.support.server import (
    ACCESS_KEY_ID,
    SECOND_APP_ID,
    SECOND_APP_KEY,
    SECRET_ACCESS_KEY,
    RelayServer,
    start_server,
)
from tests.support.tasks import call

# Janus 1.1.2 (Debian) never gathers a candidate on the loopback interface, even with
# ice_enforce_list = "lo": it offers only the machine's other addresses, which no test may
# use. Until Janus can be held to 127.0.0.1 (a network namespace, a newer libnice), this
# story cannot run here; the connector's signaling was exercised by hand against it.
pytestmark = [
    pytest.mark.skipif(shutil.which("janus") is None, reason="needs Debian's janus"),
    pytest.mark.skip(reason="Janus offers no loopback ICE candidates; see the comment above"),
]

ROOM, USER, TASK = "room-on-janus", "relay", "janus-task"
NO_SUCH_ROOM = 426


@pytest.fixture(scope="module")
def janus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with janus_server(tmp_path_factory.mktemp("janus")) as url:
        yield url


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory, janus: str) -> Iterator[RelayServer]:
    server = start_server(
        tmp_path_factory.mktemp("origin"),
        extra_config=f'[janus]\nurl = "{janus}"\n',
        app_toml={SECOND_APP_ID: 'room_server = "janus"'},
    )
    yield server
    server.stop()


async def publishers(janus: str, room: int) -> list[str]:
    """Who publishes in the Janus room (nobody while relaystream has not created it)."""
    try:
        participants = await list_participants(janus, room)
    except JanusError as exc:
        assert exc.code == NO_SUCH_ROOM, exc
        return []
    return [p["display"] for p in participants if p.get("publisher")]


async def test_a_relay_published_into_janus_is_decoded_and_leaves_on_stop(
    origin: RelayServer, janus: str, media_url: str
) -> None:
    rtc = RtcService(origin.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    key = {"AppId": SECOND_APP_ID, "RoomId": ROOM, "TaskId": TASK}
    start = {
        **key,
        "UserId": USER,
        "Token": origin.publish_token(ROOM, USER, app_id=SECOND_APP_ID),
        "Control": {"StreamUrl": f"{media_url}/clip.ts", "StreamMode": 1, "Loop": True},
    }
    access = janus_room_access(SECOND_APP_ID, SECOND_APP_KEY, ROOM)
    assert await call(rtc, "StartRelayStream", start) == "ok"
    subscriber = JanusSubscriber(janus, access, USER)
    try:
        deadline = time.monotonic() + 30
        while USER not in await publishers(janus, access.room):
            assert time.monotonic() < deadline, "the relay never published into Janus"
            await asyncio.sleep(0.3)
        await subscriber.connect()
        video = await subscriber.wait_for_media("video", 2.0)
        assert video.frames[-1].width > 0
        task = (await call(rtc, "GetRelayStream", key))["Task"]
        assert task["Stats"]["Room"]["Healthy"] is True
    finally:
        assert await call(rtc, "StopRelayStream", key) == "ok"
        await subscriber.close()

    deadline = time.monotonic() + 15
    while USER in await publishers(janus, access.room):
        assert time.monotonic() < deadline, "the relay still publishes in Janus"
        await asyncio.sleep(0.3)
