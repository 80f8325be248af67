"""A real browser plays a relay: headless Chromium as a WHEP player on another origin."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.support.browser import PAGES, chromium_page
from tests.support.net import static_http_server
from tests.support.sdk import RtcService
from tests.support.server import APP_ID, RelayServer
from tests.support.tasks import call, task_key, wait_for_status

WATCH_S = 5


@pytest.mark.parametrize(
    "control",
    [
        {"StreamMode": 1},
        {"StreamMode": 0, "VideoWidth": 480, "VideoHeight": 270, "FrameRate": 25},
    ],
    ids=["remux", "transcode"],
)
async def test_chromium_plays_the_relay_with_sound(
    relay_server: RelayServer,
    rtc: RtcService,
    media_url: str,
    tmp_path: Path,
    control: dict[str, int],
) -> None:
    room, user = f"room-browser-{control['StreamMode']}", "camera"
    start = {
        **task_key(room, "browser"),
        "UserId": user,
        "Token": relay_server.publish_token(room, user),
        "Control": {"StreamUrl": f"{media_url}/clip.flv", **control},
    }
    assert await call(rtc, "StartRelayStream", start) == "ok"
    await wait_for_status(rtc, room, "browser", 2)
    query = urlencode(
        {
            "whep": f"{relay_server.base_url}/whep/{APP_ID}/{room}/{user}",
            "token": relay_server.subscribe_token(room),
            "watch_s": WATCH_S,
        }
    )
    try:
        with static_http_server(PAGES) as page_origin:
            async with chromium_page(f"{page_origin}/whep_player.html?{query}", tmp_path) as page:
                result = await page.wait_for_json("window.result", timeout_s=WATCH_S + 20)
    finally:
        await call(rtc, "StopRelayStream", task_key(room, "browser"))

    assert "error" not in result, result
    assert result["state"] == "connected"
    width, height = (control.get("VideoWidth", 640), control.get("VideoHeight", 360))
    assert (result["width"], result["height"]) == (width, height)
    frame_rate = control.get("FrameRate", 30)
    assert result["inbound"]["video"]["framesDecoded"] >= frame_rate * (WATCH_S - 2)
    assert result["inbound"]["audio"]["samples"] >= 48_000 * (WATCH_S - 2)
