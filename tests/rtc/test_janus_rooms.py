"""An app whose rooms live on Janus: its relays publish into a Janus VideoRoom.

A real Janus (HTTP transport on 127.0.0.1, VideoRoom only) and a real relaystream server
configured with ``room_server = "janus"``: an aiortc subscriber that joins through Janus's
own API decodes the relay, and stopping the task takes the publisher out of the room.

Janus never offers an ICE candidate on ``lo``, so the story runs in a network namespace
of its own (tests/support/netns.py): the outer test starts pytest on the story there.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaystream.rtc.janus import JanusError, janus_room_access
from tests.support.janus import JanusSubscriber, janus_server, list_participants
from tests.support.netns import can_isolate, expect_passed, is_isolated, run_isolated
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

pytestmark = pytest.mark.skipif(shutil.which("janus") is None, reason="needs Debian's janus")

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


@pytest.mark.skipif(not can_isolate(), reason="needs root, unshare and ip")
@pytest.mark.skipif(is_isolated(), reason="this is the outer run")
def test_the_janus_story_passes_in_a_network_namespace_of_its_own(tmp_path: Path) -> None:
    story = f"{__file__}::test_a_relay_published_into_janus_is_decoded_and_leaves_on_stop"
    expect_passed(run_isolated(story, tmp_path / "isolated"))


@pytest.mark.skipif(not is_isolated(), reason="runs inside the outer test's namespace")
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
