"""A server starts its media workers as ``[media] worker_start`` says: forked by its fork
server (the default), or spawned; either way the relay plays, and stopping the server
leaves neither a worker nor a fork server behind."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.processes import media_worker_pids
from tests.support.sdk import RtcService
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, start_server
from tests.support.tasks import call, task_key, wait_for_status

pytestmark = pytest.mark.media

ROOM = "room-worker-start"


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def is_fork_server(pid: int) -> bool:
    try:
        return b"relaystream.media.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.parametrize("start", ["fork", "spawn", None])
async def test_a_server_starts_its_workers_as_configured(
    tmp_path: Path, media_url: str, start: str | None
) -> None:
    config = f'[media]\nworker_start = "{start}"\n' if start else ""
    server = start_server(tmp_path / "server", extra_config=config)
    try:
        rtc = RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        control = {"StreamUrl": f"{media_url}/clip.ts", "StreamMode": 1}
        start_call = {
            **task_key(ROOM, "relay"),
            "UserId": "relay",
            "Token": server.publish_token(ROOM, "relay"),
            "Control": control,
        }
        assert await call(rtc, "StartRelayStream", start_call) == "ok"
        await wait_for_status(rtc, ROOM, "relay", 2)  # Running: media reaches the room

        (worker,) = media_worker_pids(server.process.pid)
        parent = parent_of(worker)
        if start == "spawn":
            assert parent == server.process.pid
        else:  # forked, the default
            assert is_fork_server(parent)
            assert parent_of(parent) == server.process.pid
    finally:
        server.stop()
    deadline = time.monotonic() + 10
    while (is_fork_server(parent) or Path(f"/proc/{worker}").exists()) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert not Path(f"/proc/{worker}").exists()
    assert not is_fork_server(parent)
