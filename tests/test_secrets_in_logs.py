"""No secret ever reaches the server's log: one server through a whole life (a relay
started, watched over WHEP, read and stopped; requests with a wrong secret, a forged
token, tokens in URLs), then its entire log searched for every secret it was given or
shown. The demo banner, whose job is to show the demo account, is the one exception
and is not printed with a config file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from relaystream.rtc.token import Privilege, generate_token
from tests.support.sdk import RtcService, VolcengineError
from tests.support.server import (
    ACCESS_KEY_ID,
    APP_ID,
    APP_KEY,
    SECRET_ACCESS_KEY,
    RelayServer,
    start_server,
)
from tests.support.tasks import call, task_key, wait_for_status
from tests.support.viewer import WhepRefused, WhepViewer

CALLBACK_APP_ID = "dddddddddddddddddddddddd"
CALLBACK_APP_KEY = "callback-app-key-0123456789abcdef"
CALLBACK_SECRET = "callback-secret-must-not-leak"
WRONG_SECRET = "a-wrong-secret-the-client-used"
ROOM, TASK, USER = "room-secrets", "task-secrets", "relay-secrets"

EXTRA_CONFIG = f"""
[[apps]]
app_id = "{CALLBACK_APP_ID}"
app_key = "{CALLBACK_APP_KEY}"
callback_url = "http://127.0.0.1:9/callback"
callback_secret = "{CALLBACK_SECRET}"
"""


@pytest.fixture
def secrets_server(tmp_path: Path) -> Iterator[RelayServer]:
    server = start_server(tmp_path / "server", extra_config=EXTRA_CONFIG)
    yield server
    server.stop()


async def live_a_whole_life(server: RelayServer, stream_url: str) -> list[str]:
    """Drive the server through everything that handles a secret; returns the tokens used."""
    rtc = RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    publish_token = server.publish_token(ROOM, USER)
    subscribe_token = server.subscribe_token(ROOM, "viewer-secrets")
    forged_token = generate_token(
        app_id=APP_ID,
        app_key="not-the-app-key",
        room_id=ROOM,
        user_id="viewer-forged",
        privileges=[Privilege.SUBSCRIBE_STREAM],
    )
    start = {
        **task_key(ROOM, TASK),
        "UserId": USER,
        "Token": publish_token,
        "Control": {"StreamUrl": stream_url, "StreamMode": 1},
    }

    # A token for another room: refused, and named without being echoed.
    wrong_room = {**start, "Token": server.publish_token("elsewhere", USER)}
    with pytest.raises(VolcengineError) as refused:
        await call(rtc, "StartRelayStream", wrong_room)
    assert refused.value.code == "InvalidParameter" and "Token" in refused.value.message

    assert await call(rtc, "StartRelayStream", start) == "ok"
    await wait_for_status(rtc, ROOM, TASK, 2)

    whep_url = f"{server.base_url}/whep/{APP_ID}/{ROOM}/{USER}"
    viewer = WhepViewer(whep_url, subscribe_token)
    await viewer.connect()
    try:
        await viewer.wait_for_media("video", 1.0)
    finally:
        await viewer.close()
    with pytest.raises(WhepRefused) as forged:
        await WhepViewer(whep_url, forged_token).connect()
    assert forged.value.status == 403

    # Tokens in URLs, as players that cannot set headers send them.
    async with aiohttp.ClientSession() as http:
        for url in (
            f"{server.base_url}/healthz?token={subscribe_token}",
            f"{whep_url}?access_token={subscribe_token}&x=1",
            f"{server.base_url}/?Action=GetRelayStream&Version=2023-11-01&Token={publish_token}",
        ):
            async with http.get(url) as response:
                await response.read()

    wrong = RtcService(server.host, ACCESS_KEY_ID, WRONG_SECRET)
    with pytest.raises(VolcengineError) as mismatch:
        await call(wrong, "GetRelayStream", task_key(ROOM, TASK))
    assert mismatch.value.code == "SignatureDoesNotMatch"

    task = (await call(rtc, "GetRelayStream", task_key(ROOM, TASK)))["Task"]
    assert "Token" not in json.dumps(task)
    assert await call(rtc, "StopRelayStream", task_key(ROOM, TASK)) == "ok"
    await wait_for_status(rtc, ROOM, TASK, 3)
    return [publish_token, subscribe_token, forged_token]


async def test_no_secret_reaches_the_log(secrets_server: RelayServer, media_url: str) -> None:
    tokens = await live_a_whole_life(secrets_server, f"{media_url}/clip.flv")
    await asyncio.to_thread(secrets_server.stop)  # every line flushed
    log = secrets_server.log()

    # The life really happened and was logged, with the URL tokens redacted.
    assert "GET /healthz?token=REDACTED" in log
    assert "access_token=REDACTED&x=1" in log
    assert "Token=REDACTED" in log
    assert "SignatureDoesNotMatch" in log

    secrets = {
        "secret access key": SECRET_ACCESS_KEY,
        "the other account's secret": "other-secret",
        "app key": APP_KEY,
        "callback app key": CALLBACK_APP_KEY,
        "callback secret": CALLBACK_SECRET,
        "the wrong secret a client used": WRONG_SECRET,
        **{f"token {i}": token for i, token in enumerate(tokens)},
    }
    for token in tokens:  # a token cut short in a message would still be a leak
        secrets[f"start of {token[:12]}"] = token[:40]
    leaked = {name for name, secret in secrets.items() if secret in log}
    assert not leaked, leaked
