"""The console in a real browser: sign in with an access key, run the test stream."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Page, expect

from tests.support.chromium import chromium
from tests.support.sdk import RtcService
from tests.support.server import ACCESS_KEY_ID, APP_ID, APP_KEY, SECRET_ACCESS_KEY, RelayServer
from tests.support.tasks import get_task

ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"


async def sign_in(page: Page, secret: str = SECRET_ACCESS_KEY) -> None:
    await page.fill("#access-key-id", ACCESS_KEY_ID)
    await page.fill("#secret-access-key", secret)
    await page.fill("#app-id", APP_ID)
    await page.fill("#app-key", APP_KEY)
    await page.click("#sign-in button[type=submit]")


async def test_the_console_starts_the_test_stream_and_stops_it(
    relay_server: RelayServer, rtc: RtcService
) -> None:
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(f"{relay_server.base_url}/console")
        await expect(page.locator("#region")).to_have_value("cn-north-1")

        await sign_in(page, secret="not-the-secret")
        await expect(page.locator("#sign-in-error")).to_contain_text("SignatureDoesNotMatch")
        await sign_in(page)
        await expect(page.locator("#console")).to_be_visible()

        await page.click("#start-test")
        row = page.locator("#tasks tr").first
        await expect(row.locator("td").nth(0)).to_have_text("demo")
        await expect(row.locator("td.status")).to_have_text("2 running", timeout=30_000)
        await expect(row.locator("td").nth(5)).to_contain_text("fps", timeout=10_000)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "console.png", full_page=True)
        room_link = await row.locator("a.room-link").get_attribute("href")
        assert room_link is not None
        assert room_link.startswith(f"/rooms/{APP_ID}/demo#token=001{APP_ID}")

        await expect(page.locator("#task-source")).to_have_text("(1 in AppId)")  # ListRelayStream

        await row.locator("button.update").click()
        await page.select_option("#update select[name=MediaType]", "2")
        await page.click("#update button[type=submit]")
        await expect(page.locator("#message")).to_contain_text("Updated demo/testsrc-")
        await expect(row.locator("td.status")).to_have_text("2 running")
        task_id = await row.locator("td").nth(1).inner_text()
        assert (await get_task(rtc, "demo", task_id))["MediaType"] == 2

        await row.locator("button.stop").click()
        await expect(row.locator("td.status")).to_have_text("3 ended · ApiStop", timeout=15_000)
        await expect(row.locator("button.stop")).to_be_disabled()
