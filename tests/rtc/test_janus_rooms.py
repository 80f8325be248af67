"""An app whose rooms live on Janus: its relays publish into a Janus VideoRoom.

A real Janus (HTTP transport on 127.0.0.1, VideoRoom only, browsers allowed from the
relaystream server's origin only) and a real relaystream server configured with
``room_server = "janus"``: an aiortc subscriber that joins through Janus's own API decodes
the relay, and stopping the task takes the publisher out of the room. The room page, in
headless Chromium, plays the room straight from Janus once its subscribe token passed
relaystream's gate; without a good token the gate hands out nothing.

Janus never offers an ICE candidate on ``lo``, so the story runs in a network namespace
of its own (tests/support/netns.py): the outer test starts pytest on the story there.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from relaystream.rtc.janus import JanusError, janus_room_access
from relaystream.rtc.token import Privilege, generate_token
from tests.support.chromium import chromium
from tests.support.janus import JanusSubscriber, janus_server, list_participants
from tests.support.net import free_port
from tests.support.netns import (
    CANDIDATE_ADDRESS,
    can_isolate,
    expect_passed,
    is_isolated,
    run_isolated,
)
from tests.support.room_page import wait_until_playing
from tests.support.sdk import RtcService, VolcengineError
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
PAGE_ROOM, CAMERA = "janus-room-page", "camera"
NO_SUCH_ROOM = 426
# The address a publisher's media comes from, in the room page: its peer connection's
# selected candidate pair.
REMOTE_MEDIA_ADDRESS = """async (userId) => {
  const stats = await window.relaystreamRoom.publishers.get(userId).pc.getStats();
  const pair = [...stats.values()].find((s) => s.type === "candidate-pair" && s.nominated);
  return pair ? stats.get(pair.remoteCandidateId).address : null;
}"""
INNER_TESTS = (
    "test_a_relay_published_into_janus_is_decoded_and_leaves_on_stop",
    "test_the_room_page_plays_a_janus_room_once_the_token_passes_the_gate",
)


@pytest.fixture(scope="module")
def origin_port() -> int:
    """The relaystream server's port, known before Janus starts: Janus lets browsers
    call it from that origin only."""
    return free_port()


@pytest.fixture(scope="module")
def janus(tmp_path_factory: pytest.TempPathFactory, origin_port: int) -> Iterator[str]:
    allowed = f"http://127.0.0.1:{origin_port}"
    with janus_server(tmp_path_factory.mktemp("janus"), allow_origin=allowed) as url:
        yield url


@pytest.fixture(scope="module")
def origin(
    tmp_path_factory: pytest.TempPathFactory, janus: str, origin_port: int
) -> Iterator[RelayServer]:
    server = start_server(
        tmp_path_factory.mktemp("origin"),
        extra_config=f'[janus]\nurl = "{janus}"\n',
        app_toml={SECOND_APP_ID: 'room_server = "janus"'},
        port=origin_port,
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
def test_the_janus_stories_pass_in_a_network_namespace_of_their_own(tmp_path: Path) -> None:
    stories = [f"{__file__}::{name}" for name in INNER_TESTS]
    expect_passed(run_isolated(stories, tmp_path / "isolated"), count=len(INNER_TESTS))


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


@pytest.mark.skipif(not is_isolated(), reason="runs inside the outer test's namespace")
async def test_the_room_page_plays_a_janus_room_once_the_token_passes_the_gate(
    origin: RelayServer, janus: str, media_url: str
) -> None:
    access = janus_room_access(SECOND_APP_ID, SECOND_APP_KEY, PAGE_ROOM)
    room_path = f"/rooms/{SECOND_APP_ID}/{PAGE_ROOM}"
    token = origin.subscribe_token(PAGE_ROOM, app_id=SECOND_APP_ID)
    refused = {
        "no token": None,
        "another room's token": origin.subscribe_token(ROOM, app_id=SECOND_APP_ID),
        "a token without SubscribeStream": origin.publish_token(
            PAGE_ROOM, "viewer", app_id=SECOND_APP_ID
        ),
        "a token signed with another key": generate_token(
            app_id=SECOND_APP_ID,
            app_key="not-the-app-key",
            room_id=PAGE_ROOM,
            user_id="viewer",
            privileges=[Privilege.SUBSCRIBE_STREAM],
        ),
    }
    async with aiohttp.ClientSession(origin.base_url) as http:
        for case, bad_token in refused.items():
            headers = {"Authorization": f"Bearer {bad_token}"} if bad_token else {}
            async with http.get(f"{room_path}/access", headers=headers) as response:
                body = await response.text()
            assert response.status == (401 if bad_token is None else 403), (case, body)
            assert access.pin not in body and str(access.room) not in body, (case, body)
        bearer = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{room_path}/access", headers=bearer) as response:
            assert response.status == 200
            assert response.headers["Cache-Control"] == "no-store"
            granted = await response.json()
        assert granted == {
            "roomServer": "janus",
            "janus": {"url": janus, "room": access.room, "pin": access.pin},
        }
        # WHEP cannot play a Janus room (Janus offers): it says so, and where to go.
        whep = {**bearer, "Content-Type": "application/sdp"}
        async with http.post(
            f"/whep/{SECOND_APP_ID}/{PAGE_ROOM}/{CAMERA}", headers=whep
        ) as response:
            assert response.status == 409
            explanation = await response.text()
        assert "Janus" in explanation and f"{room_path}/access" in explanation
        async with http.get(room_path) as response:
            assert (
                f"connect-src 'self' {janus.removesuffix('/janus')};"
                in (response.headers["Content-Security-Policy"])
            )

    rtc = RtcService(origin.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    key = {"AppId": SECOND_APP_ID, "RoomId": PAGE_ROOM, "TaskId": "janus-page-task"}
    start = {
        **key,
        "UserId": CAMERA,
        "Token": origin.publish_token(PAGE_ROOM, CAMERA, app_id=SECOND_APP_ID),
        "Control": {"StreamUrl": f"{media_url}/clip.ts", "StreamMode": 1, "Loop": True},
    }
    assert await call(rtc, "StartRelayStream", start) == "ok"
    try:
        async with chromium() as browser:
            refused_page = await browser.new_page()
            await refused_page.goto(f"{origin.base_url}{room_path}#token=nonsense")
            await refused_page.get_by_text("token refused: malformed token").wait_for()
            await refused_page.close()

            page = await browser.new_page()
            await page.goto(f"{origin.base_url}{room_path}#token={quote(token)}")
            playing = await wait_until_playing(page, CAMERA)
            assert (playing["width"], playing["height"]) == (640, 360)
            assert await page.locator("#participants li").all_inner_texts() == [
                f"{CAMERA} (audio + video)"
            ]
            # Straight from Janus, whose candidates are all on this address.
            assert await page.evaluate(REMOTE_MEDIA_ADDRESS, CAMERA) == CANDIDATE_ADDRESS

            assert await call(rtc, "StopRelayStream", key) == "ok"
            await page.locator(f"figure[data-user-id={CAMERA}]").wait_for(state="detached")
            assert await page.locator("#participants li").count() == 0
    finally:
        with contextlib.suppress(VolcengineError):  # stopped already
            await call(rtc, "StopRelayStream", key)
    assert access.pin not in origin.log()
