"""The room page in a real browser: everyone publishing, live, sound included."""

from __future__ import annotations

import contextlib
from pathlib import Path
from urllib.parse import quote

from tests.support.chromium import chromium
from tests.support.room_page import wait_until_playing
from tests.support.sdk import RtcService, VolcengineError
from tests.support.server import APP_ID, RelayServer
from tests.support.tasks import call, task_key, wait_for_status

ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"
ROOM = "room-page"


async def start_relay(rtc: RtcService, server: RelayServer, media_url: str, user: str) -> None:
    start = {
        **task_key(ROOM, user),
        "UserId": user,
        "Token": server.publish_token(ROOM, user),
        "Control": {"StreamUrl": f"{media_url}/clip.flv", "StreamMode": 1, "Loop": True},
    }
    assert await call(rtc, "StartRelayStream", start) == "ok"
    await wait_for_status(rtc, ROOM, user, 2)


async def test_the_room_page_shows_every_publisher_live(
    relay_server: RelayServer, rtc: RtcService, media_url: str
) -> None:
    await start_relay(rtc, relay_server, media_url, "first")
    token = relay_server.subscribe_token(ROOM)
    try:
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(f"{relay_server.base_url}/rooms/{APP_ID}/{ROOM}#token={quote(token)}")
            await page.evaluate("window.loadedOnce = true")

            first = await wait_until_playing(page, "first")
            assert (first["width"], first["height"]) == (640, 360)

            await start_relay(rtc, relay_server, media_url, "second")
            await page.locator("figure[data-user-id=second] video").wait_for()
            second = await wait_until_playing(page, "second")
            assert (second["width"], second["height"]) == (640, 360)
            assert await page.locator("#participants li").count() == 2

            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=ARTIFACTS / "room-page.png", full_page=True)

            await call(rtc, "StopRelayStream", task_key(ROOM, "second"))
            await page.locator("figure[data-user-id=second]").wait_for(state="detached")
            assert await page.locator("#participants li").all_inner_texts() == [
                "first (audio + video)"
            ]
            assert await page.evaluate("window.loadedOnce") is True  # never reloaded
            await wait_until_playing(page, "first")
    finally:
        for user in ("first", "second"):
            with contextlib.suppress(VolcengineError):  # stopped already
                await call(rtc, "StopRelayStream", task_key(ROOM, user))
