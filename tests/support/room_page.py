"""What the room page shows of each publisher, read in a real browser (Playwright)."""

from __future__ import annotations

import time
from typing import Any

from playwright.async_api import Page

# What the page shows of each publisher: decoded frames of its <video>, the picture
# size, and the audio bytes its peer connection has received.
PLAYBACK = """async () => {
  const seen = {};
  for (const [userId, publisher] of window.relaystreamRoom.publishers) {
    let audioBytes = 0;
    if (publisher.pc) {
      (await publisher.pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "audio") audioBytes += s.bytesReceived;
      });
    }
    seen[userId] = {
      frames: publisher.video.getVideoPlaybackQuality().totalVideoFrames,
      width: publisher.video.videoWidth,
      height: publisher.video.videoHeight,
      audioBytes,
    };
  }
  return seen;
}"""


async def playback(page: Page) -> dict[str, dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = await page.evaluate(PLAYBACK)
    return seen


async def wait_until_playing(page: Page, user: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """Wait until ``user``'s video has decoded frames and keeps decoding, with sound."""
    deadline = time.monotonic() + timeout_s
    first: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        now = (await playback(page)).get(user)
        if now and now["frames"] > 0 and now["audioBytes"] > 0:
            if first is None:
                first = now
            elif now["frames"] >= first["frames"] + 30 and now["audioBytes"] > first["audioBytes"]:
                return now
        await page.wait_for_timeout(250)
    status = await page.locator("#status").inner_text()
    raise AssertionError(
        f"{user} is not playing ({status!r}): first {first}, now {await playback(page)}"
    )
