"""The metrics module on its own: a real aiohttp server on 127.0.0.1 serving /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from relaystream import metrics
from relaystream.metrics import DeliveryOutcome, MetricsEndpoint, TaskSample

SAMPLES = [
    TaskSample("app", "room", "live-one", running=True, frames_out={"video": 10}, viewers=2),
    TaskSample("app", "room", "waiting", running=False),
]


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    endpoint = MetricsEndpoint(lambda: SAMPLES, token=None, api_actions=["GetRelayStream"])
    app = web.Application(middlewares=[endpoint.time_api])

    async def api(_: web.Request) -> web.Response:
        response = web.json_response({})
        response[metrics.API_CODE_KEY] = "InvalidParameter"
        return response

    app.add_routes([*endpoint.routes(), web.get("/", api)])
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def scrape(client: TestClient[web.Request, web.Application]) -> dict[str, float]:
    response = await client.get("/metrics")
    assert response.status == 200
    found = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}"] = sample.value
    return found


async def test_callback_deliveries_are_counted_by_outcome(
    client: TestClient[web.Request, web.Application],
) -> None:
    before = await scrape(client)
    metrics.callback_delivery(DeliveryOutcome.DELIVERED)
    metrics.callback_delivery(DeliveryOutcome.RETRYING)
    metrics.callback_delivery(DeliveryOutcome.RETRYING)
    after = await scrape(client)
    for outcome, more in (("delivered", 1), ("retrying", 2), ("failed", 0)):
        series = f"relaystream_callback_deliveries_total{{outcome={outcome}}}"
        assert after[series] == before[series] + more


async def test_tasks_are_sampled_when_scraped(
    client: TestClient[web.Request, web.Application],
) -> None:
    found = await scrape(client)
    assert found["relaystream_tasks{status=running}"] == 1
    assert found["relaystream_tasks{status=starting}"] == 1
    frames = "app_id=app,direction=out,room_id=room,task_id=live-one,track=video"
    assert found[f"relaystream_task_frames_total{{{frames}}}"] == 10
    assert found["relaystream_task_viewers{app_id=app,room_id=room,task_id=live-one}"] == 2


async def test_api_answers_are_counted_by_action_and_code_and_unknown_actions_lumped(
    client: TestClient[web.Request, web.Application],
) -> None:
    before = await scrape(client)
    await client.get("/?Action=GetRelayStream")
    await client.get("/?Action=NoSuchAction")
    await client.get("/?Action=AnotherTypo")
    after = await scrape(client)
    known = "relaystream_api_requests_total{action=GetRelayStream,code=InvalidParameter}"
    other = "relaystream_api_requests_total{action=other,code=InvalidParameter}"
    assert after[known] == before.get(known, 0) + 1
    assert after[other] == before.get(other, 0) + 2
    assert not any("NoSuchAction" in series for series in after)
