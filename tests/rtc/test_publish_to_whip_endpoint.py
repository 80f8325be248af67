"""An app whose rooms live on another server: its relays are published there with WHIP.

Two real relaystream servers: the first is configured to publish its second app's
relays to the second server's WHIP endpoint; a WHEP viewer of the second server decodes
them, and stopping the task ends the WHIP session there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.support.sdk import RtcService
from tests.support.server import (
    ACCESS_KEY_ID,
    APP_ID,
    SECOND_APP_ID,
    SECRET_ACCESS_KEY,
    RelayServer,
    start_server,
)
from tests.support.tasks import call
from tests.support.viewer import WhepRefused, WhepViewer

ROOM, USER, TASK = "room-on-target", "relay", "whip-task"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayServer]:
    server = start_server(tmp_path_factory.mktemp("target"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory, target: RelayServer) -> Iterator[RelayServer]:
    # The target's WHIP wants a publish token of its own app, for this room and user.
    whip = f"""
[apps.whip]
url_template = "{target.base_url}/whip/{APP_ID}/{{room_id}}/{{user_id}}"
bearer_token = "{target.publish_token(ROOM, USER)}"
"""
    server = start_server(tmp_path_factory.mktemp("origin"), extra_config=whip)
    yield server
    server.stop()


def target_viewer(target: RelayServer) -> WhepViewer:
    return WhepViewer(
        f"{target.base_url}/whep/{APP_ID}/{ROOM}/{USER}", target.subscribe_token(ROOM)
    )


async def watch_target(target: RelayServer, timeout_s: float = 30.0) -> WhepViewer:
    """A viewer of the relay on the target, once it publishes there."""
    deadline = time.monotonic() + timeout_s
    while True:
        viewer = target_viewer(target)
        try:
            await viewer.connect()
            return viewer
        except WhepRefused as refusal:
            assert refusal.status == 404, refusal
            assert time.monotonic() < deadline, "the relay never published on the target"
        await asyncio.sleep(0.3)


async def wait_until_gone(target: RelayServer, timeout_s: float = 15.0) -> None:
    """Until the target's WHEP answers 404 for the relay's user: its publisher left."""
    deadline = time.monotonic() + timeout_s
    while True:
        viewer = target_viewer(target)
        try:
            await viewer.connect()
        except WhepRefused as refusal:
            assert refusal.status == 404, refusal
            return
        await viewer.close()
        assert time.monotonic() < deadline, "the relay still publishes on the target"
        await asyncio.sleep(0.3)


async def test_a_relay_published_by_whip_plays_on_the_target_and_leaves_on_stop(
    origin: RelayServer, target: RelayServer, media_url: str
) -> None:
    rtc = RtcService(origin.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    key = {"AppId": SECOND_APP_ID, "RoomId": ROOM, "TaskId": TASK}
    start = {
        **key,
        "UserId": USER,
        "Token": origin.publish_token(ROOM, USER, app_id=SECOND_APP_ID),
        "Control": {"StreamUrl": f"{media_url}/clip.ts", "StreamMode": 1, "Loop": True},
    }
    assert await call(rtc, "StartRelayStream", start) == "ok"
    viewer = await watch_target(target)
    try:
        video = await viewer.wait_for_media("video", 2.0)
        assert video.frames[-1].width > 0
        await viewer.wait_for_media("audio", 1.0)

        task = (await call(rtc, "GetRelayStream", key))["Task"]
        assert task["Status"] == 2
        assert task["Stats"]["Room"] == {
            "Target": f"{target.base_url}/whip/{APP_ID}/{ROOM}/{USER}",
            "Healthy": True,
        }
    finally:
        assert await call(rtc, "StopRelayStream", key) == "ok"
        await viewer.close()

    # The WHIP session was DELETEd: the target's room has no such publisher any more.
    await wait_until_gone(target)
    assert "WHIP publisher relay joined" in target.log()
