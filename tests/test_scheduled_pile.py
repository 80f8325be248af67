"""Hundreds of tasks scheduled for later cost the node nothing each renew period: a
running relay beside them keeps its lease and its status 2, and one due soon starts.

Leases are short (2 s, renewed every 0.5 s) so that a renew round slowed by the
scheduled tasks would make the node lose them within the story.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaystream.media.testsrc import ClipSpec, make_test_clip
from tests.support.net import static_http_server
from tests.support.sdk import RtcService
from tests.support.server import (
    ACCESS_KEY_ID,
    APP_ID,
    SECRET_ACCESS_KEY,
    RelayServer,
    start_server,
)
from tests.support.tasks import call, get_task, task_key, wait_for_status

SCHEDULED = 400
STARTS_AT_ONCE = 8
WATCH_S = 8.0  # four leases


@pytest.fixture(scope="module")
def clip_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("pile-media")
    make_test_clip(root / "long.mp4", ClipSpec(duration_s=60.0, width=160, height=90))
    with static_http_server(root) as base_url:
        yield f"{base_url}/long.mp4"


async def start_scheduled(rtc: RtcService, server: RelayServer, clip_url: str) -> None:
    """Start ``SCHEDULED`` tasks due in an hour, a few requests at a time."""
    later = int(time.time()) + 3600
    pending = iter(range(SCHEDULED))

    async def starter() -> None:
        for n in pending:
            room, user = "later", f"user-{n}"
            body = {
                **task_key(room, f"later-{n}"),
                "UserId": user,
                "Token": server.publish_token(room, user),
                "Control": {"StreamUrl": clip_url, "StreamMode": 1, "StartTimeStamp": later},
            }
            assert await call(rtc, "StartRelayStream", body) == "ok"

    await asyncio.gather(*(starter() for _ in range(STARTS_AT_ONCE)))


async def test_scheduled_tasks_piling_up_leave_a_running_relay_its_lease(
    tmp_path: Path, clip_url: str
) -> None:
    server = start_server(
        tmp_path,
        extra_config="[node]\nlease_s = 2.0\nrenew_s = 0.5\n",
        app_toml={APP_ID: "qps_limit = 10000\n"},  # the pile is made quickly
    )
    try:
        rtc = RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        start = {
            **task_key("now", "relay"),
            "UserId": "relay",
            "Token": server.publish_token("now", "relay"),
            "Control": {"StreamUrl": clip_url, "StreamMode": 1},
        }
        assert await call(rtc, "StartRelayStream", start) == "ok"
        await wait_for_status(rtc, "now", "relay", 2)

        await start_scheduled(rtc, server, clip_url)
        # Due in a few renew periods: taken then by the node, not by its Start.
        soon = {
            **task_key("soon", "soon"),
            "UserId": "soon",
            "Token": server.publish_token("soon", "soon"),
            "Control": {
                "StreamUrl": clip_url,
                "StreamMode": 1,
                "StartTimeStamp": int(time.time()) + 4,
            },
        }
        assert await call(rtc, "StartRelayStream", soon) == "ok"
        listed = await call(
            rtc, "ListRelayStream", {"AppId": APP_ID, "RoomId": "later", "Limit": 100}
        )
        assert listed["Total"] == SCHEDULED
        assert {task["Status"] for task in listed["Tasks"]} == {1}

        # Sixteen renew periods with the pile in place: the relay never leaves status 2.
        deadline = time.monotonic() + WATCH_S
        statuses = set()
        while time.monotonic() < deadline:
            statuses.add((await get_task(rtc, "now", "relay"))["Status"])
            await asyncio.sleep(0.2)
        assert statuses == {2}
        assert "task lease lost" not in server.log()
        relay = await get_task(rtc, "now", "relay")
        assert relay["Stats"]["ReconnectCount"] == 0, relay
        await wait_for_status(rtc, "soon", "soon", 2)
    finally:
        server.stop()
