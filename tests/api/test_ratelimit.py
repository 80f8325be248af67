"""Each AppId gets its qps_limit requests per second; over it, QPSOverLimit."""

from __future__ import annotations

import time

import pytest

from relaystream.api.ratelimit import RateLimiter
from tests.support.sdk import RtcService, VolcengineError
from tests.support.server import APP_ID, LIMITED_APP_ID, LIMITED_APP_QPS


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_up_to_the_limit_passes_then_the_rest_waits() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    assert [limiter.allow("app", 3) for _ in range(5)] == [True, True, True, False, False]
    clock.now += 0.34  # a little over one request's worth of refill
    assert limiter.allow("app", 3)
    assert not limiter.allow("app", 3)


def test_apps_are_limited_separately() -> None:
    limiter = RateLimiter(FakeClock())
    assert all(limiter.allow("busy", 2) for _ in range(2))
    assert not limiter.allow("busy", 2)
    assert limiter.allow("quiet", 2)


def test_over_the_limit_the_api_answers_429_qps_over_limit(rtc: RtcService) -> None:
    body = {"AppId": LIMITED_APP_ID, "RoomId": "r", "TaskId": "nothing-here"}
    codes = []
    for _ in range(LIMITED_APP_QPS * 3):
        try:
            rtc.action("GetRelayStream", body)
        except VolcengineError as exc:
            codes.append(exc.code)
    assert "FlowLimitExceeded.QPSOverLimit" in codes
    assert "InvalidParameter.ErrorActiveTaskNotFound" in codes  # the first few got through
    # Another app of the same account is not affected...
    with pytest.raises(VolcengineError) as other:
        rtc.action("GetRelayStream", {**body, "AppId": APP_ID})
    assert other.value.code == "InvalidParameter.ErrorActiveTaskNotFound"
    # ...and a second later the limited app is served again.
    time.sleep(1.0)
    with pytest.raises(VolcengineError) as later:
        rtc.action("GetRelayStream", body)
    assert later.value.code == "InvalidParameter.ErrorActiveTaskNotFound"
