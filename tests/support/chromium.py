"""Debian's headless Chromium driven by Playwright: pages, forms, clicks, waits.

Playwright drives the system browser through ``executable_path``; no browser is ever
downloaded. Only loopback traffic: WebRTC may use loopback candidates, without mDNS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, async_playwright

from tests.support.browser import CHROMIUM

_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
# A synthetic camera and microphone, granted without a prompt.
_FAKE_MEDIA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@asynccontextmanager
async def chromium(*, fake_media: bool = False) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=_ARGS + (_FAKE_MEDIA_ARGS if fake_media else []),
        )
        try:
            yield browser
        finally:
            await browser.close()
