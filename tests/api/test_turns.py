"""Starts of one AppId take turns; another AppId never waits for them."""

from __future__ import annotations

import asyncio

from relaystream.api.turns import AppTurns


async def test_a_busy_app_queues_behind_itself_and_not_in_front_of_others() -> None:
    turns = AppTurns(per_app=2)
    release = asyncio.Event()
    entered: list[str] = []

    async def write(app_id: str, name: str) -> None:
        async with turns.turn(app_id):
            entered.append(name)
            await release.wait()

    busy = [asyncio.create_task(write("busy", f"busy-{n}")) for n in range(3)]
    other = asyncio.create_task(write("quiet", "quiet"))
    deadline = asyncio.get_running_loop().time() + 5
    while len(entered) < 3:
        assert asyncio.get_running_loop().time() < deadline, entered
        await asyncio.sleep(0.01)

    # Two of the busy app's writes and the quiet app's one are in; the third busy one
    # waits for a turn of its own app.
    assert sorted(entered) == ["busy-0", "busy-1", "quiet"]
    release.set()
    await asyncio.wait_for(asyncio.gather(*busy, other), 5)
    assert entered[-1] == "busy-2"
