"""WHEP as a viewer meets it: tokens, errors, CORS, leaving, and many viewers at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from relaystream.rtc.token import Privilege, generate_token
from tests.support.sdk import RtcService
from tests.support.server import APP_ID, APP_KEY, RelayServer
from tests.support.tasks import call, task_key, wait_for_status
from tests.support.viewer import WhepRefused, WhepViewer

ROOM, PUBLISHER = "room-whep", "camera"


@pytest.fixture
async def publisher(
    relay_server: RelayServer, rtc: RtcService, media_url: str
) -> AsyncIterator[str]:
    """A relay publishing in ROOM; yields its WHEP URL."""
    start = {
        **task_key(ROOM, "whep-task"),
        "UserId": PUBLISHER,
        "Token": relay_server.publish_token(ROOM, PUBLISHER),
        "Control": {"StreamUrl": f"{media_url}/clip.ts", "StreamMode": 1},
    }
    assert await call(rtc, "StartRelayStream", start) == "ok"
    await wait_for_status(rtc, ROOM, "whep-task", 2)
    yield f"{relay_server.base_url}/whep/{APP_ID}/{ROOM}/{PUBLISHER}"
    await call(rtc, "StopRelayStream", task_key(ROOM, "whep-task"))


async def refusal(url: str, token: str) -> int:
    viewer = WhepViewer(url, token)
    with pytest.raises(WhepRefused) as refused:
        await viewer.connect()
    return refused.value.status


def token(room: str, privilege: Privilege, key: str = APP_KEY) -> str:
    return generate_token(
        app_id=APP_ID, app_key=key, room_id=room, user_id="viewer", privileges=[privilege]
    )


async def test_tokens_are_checked(publisher: str) -> None:
    assert await refusal(publisher, "") == 401
    assert await refusal(publisher, "not-a-token") == 403
    assert await refusal(publisher, token("another-room", Privilege.SUBSCRIBE_STREAM)) == 403
    assert await refusal(publisher, token(ROOM, Privilege.PUBLISH_STREAM)) == 403
    forged = token(ROOM, Privilege.SUBSCRIBE_STREAM, key="f" * 32)
    assert await refusal(publisher, forged) == 403


async def test_unknown_rooms_and_publishers_are_404(relay_server: RelayServer) -> None:
    good = token(ROOM, Privilege.SUBSCRIBE_STREAM)
    nobody = f"{relay_server.base_url}/whep/{APP_ID}/{ROOM}/nobody"
    assert await refusal(nobody, good) == 404
    unknown_app = f"{relay_server.base_url}/whep/{'d' * 24}/{ROOM}/{PUBLISHER}"
    assert await refusal(unknown_app, good) == 404


async def test_a_bad_offer_is_400_and_a_wrong_content_type_415(publisher: str) -> None:
    headers = {"Authorization": f"Bearer {token(ROOM, Privilege.SUBSCRIBE_STREAM)}"}
    async with aiohttp.ClientSession() as http:
        garbage = await http.post(
            publisher,
            data="v=0\r\nnonsense",
            headers={**headers, "Content-Type": "application/sdp"},
        )
        assert garbage.status == 400
        as_json = await http.post(publisher, json={"sdp": "v=0"}, headers=headers)
        assert as_json.status == 415


async def test_browsers_on_other_origins_may_call_it(publisher: str) -> None:
    async with aiohttp.ClientSession() as http:
        preflight = await http.options(
            publisher,
            headers={
                "Origin": "http://player.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == "*"
        assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
        refused = await http.post(
            publisher, data="v=0", headers={"Origin": "http://player.example"}
        )
        assert refused.status == 401
        assert refused.headers["Access-Control-Allow-Origin"] == "*"  # the page can read why
    viewer = WhepViewer(publisher, token(ROOM, Privilege.SUBSCRIBE_STREAM))
    await viewer.connect()  # the 201 exposes Location, which the viewer uses to leave
    await viewer.close()


async def test_many_viewers_watch_one_publisher_and_each_can_leave(publisher: str) -> None:
    viewers = [WhepViewer(publisher, token(ROOM, Privilege.SUBSCRIBE_STREAM)) for _ in range(3)]
    await asyncio.gather(*(v.connect() for v in viewers))
    try:
        await asyncio.gather(*(v.wait_for_media("video", 2.0) for v in viewers))
        leaving, staying = viewers[0], viewers[1:]
        assert leaving.session_url is not None
        async with aiohttp.ClientSession() as http:
            assert (await http.delete(leaving.session_url)).status == 200
            assert (await http.delete(leaving.session_url)).status == 404
        await asyncio.wait_for(leaving.tracks["video"].ended.wait(), 10)
        counts = [len(v.tracks["video"].frames) for v in staying]
        await asyncio.sleep(1.5)
        assert all(
            len(v.tracks["video"].frames) > n + 20 for v, n in zip(staying, counts, strict=True)
        )
    finally:
        await asyncio.gather(*(v.close() for v in viewers))
