"""A browser camera joins a room over WHIP: a WHEP viewer and the room page see it."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from playwright.async_api import expect

from tests.support.browser import PAGES
from tests.support.chromium import chromium
from tests.support.net import static_http_server
from tests.support.server import APP_ID, RelayServer
from tests.support.viewer import WhepViewer

ROOM, USER = "room-camera", "browser-camera"


async def test_a_browser_camera_publishes_over_whip_and_is_decoded(
    relay_server: RelayServer,
) -> None:
    query = urlencode(
        {
            "whip": f"{relay_server.base_url}/whip/{APP_ID}/{ROOM}/{USER}",
            "token": relay_server.publish_token(ROOM, USER),
            "width": 640,
            "height": 480,
        }
    )
    viewer = WhepViewer(
        f"{relay_server.base_url}/whep/{APP_ID}/{ROOM}/{USER}", relay_server.subscribe_token(ROOM)
    )
    # The publishing page comes from another origin, as a web app's would.
    with static_http_server(PAGES) as page_origin:
        async with chromium(fake_media=True) as browser:
            camera = await browser.new_page()
            await camera.goto(f"{page_origin}/whip_camera.html?{query}")
            await camera.wait_for_function("window.published !== null", timeout=20_000)
            published = await camera.evaluate("window.published")
            assert "error" not in published, published
            assert published["location"].startswith("/whip/sessions/")

            try:
                await viewer.connect()
                video = await viewer.wait_for_media("video", 2.0)
                audio = await viewer.wait_for_media("audio", 2.0)
            finally:
                await viewer.close()
            sent = await camera.evaluate("window.outbound()")
            sizes = {(f.width, f.height) for f in video.frames}
            # The browser may start small and scale up as its bandwidth estimate grows.
            assert all(0 < w <= 640 and 0 < h <= 480 for w, h in sizes), sizes
            assert (sent["video"]["width"], sent["video"]["height"]) in sizes | {(640, 480)}
            assert {f.sample_rate for f in audio.frames} == {48_000}

            # The room page shows the browser's camera like any other publisher.
            room = await browser.new_page()
            token = quote(relay_server.subscribe_token(ROOM, "room-page"))
            await room.goto(f"{relay_server.base_url}/rooms/{APP_ID}/{ROOM}#token={token}")
            tile = room.locator(f"figure[data-user-id={USER}] video")
            await expect(tile).to_have_count(1)
            await room.wait_for_function(
                f"() => document.querySelector('figure[data-user-id={USER}] video')"
                ".getVideoPlaybackQuality().totalVideoFrames > 30",
                timeout=20_000,
            )

            # The publisher leaves: the room page drops its tile.
            assert await camera.evaluate("window.leave()") == 200
            await expect(tile).to_have_count(0)
