"""Running slots: caps per node and per AppId, given back when a run ends."""

from __future__ import annotations

import asyncio

import pytest

from relaystream.tasks.limits import LimitScope, RunningSlots, TaskLimitReached

CAPS = {"small-app": 1, "big-app": 5}


def slots(per_node: int = 3) -> RunningSlots:
    return RunningSlots(per_node=per_node, per_app=lambda app: CAPS.get(app, 2))


async def test_an_app_gets_its_cap_and_no_more() -> None:
    running = slots()
    first = running.take("small-app")

    with pytest.raises(TaskLimitReached) as full:
        running.take("small-app")

    assert (full.value.scope, full.value.cap) == (LimitScope.APP, 1)
    assert "small-app" in str(full.value)
    running.take("other-app")  # another app is not affected
    first.release()
    running.take("small-app")
    assert running.running_for("small-app") == 1


async def test_the_node_cap_counts_every_app() -> None:
    running = slots(per_node=3)
    for _ in range(3):
        running.take("big-app")

    with pytest.raises(TaskLimitReached) as full:
        running.take("small-app")

    assert (full.value.scope, full.value.cap) == (LimitScope.NODE, 3)
    assert running.running == 3


async def test_releasing_twice_gives_back_one_slot() -> None:
    running = slots()
    slot = running.take("small-app")

    slot.release()
    slot.release()

    assert (running.running, running.running_for("small-app")) == (0, 0)


async def test_a_waiting_run_takes_the_slot_given_back() -> None:
    running = slots()
    held = running.take("small-app")
    waiter = asyncio.create_task(running.wait_and_take("small-app"))
    other = asyncio.create_task(running.wait_and_take("big-app"))  # room for it now

    assert (await asyncio.wait_for(other, 1)).app_id == "big-app"
    await asyncio.sleep(0)
    assert not waiter.done()
    held.release()

    taken = await asyncio.wait_for(waiter, 1)
    assert taken.app_id == "small-app"
    assert running.running_for("small-app") == 1
