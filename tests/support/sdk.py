"""The official Volcengine SDK, pointed at a local relaystream server."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from volcengine.ApiInfo import ApiInfo
from volcengine.base.Service import Service
from volcengine.Credentials import Credentials
from volcengine.ServiceInfo import ServiceInfo

VERSION = "2023-11-01"
ACTIONS = (
    "StartRelayStream",
    "StopRelayStream",
    "GetRelayStream",
    "UpdateRelayStream",
    "ListRelayStream",
)
# Sent as GET with the parameters in the query string, as the SDK's own RTC example does.
QUERY_ACTIONS = ("GetRelayStream", "ListRelayStream")


class VolcengineError(Exception):
    """The SDK raised: carries the decoded error envelope."""

    def __init__(self, envelope: dict[str, Any]) -> None:
        self.envelope = envelope
        self.code = envelope["ResponseMetadata"]["Error"]["Code"]
        self.message = envelope["ResponseMetadata"]["Error"]["Message"]
        super().__init__(f"{self.code}: {self.message}")


class RtcService(Service):  # type: ignore[misc]
    """How a Volcengine user calls RTC: the SDK's Service with the RTC action table."""

    def __init__(self, host: str, access_key_id: str, secret_access_key: str) -> None:
        info = ServiceInfo(
            host,
            {"Accept": "application/json"},
            Credentials(access_key_id, secret_access_key, "rtc", "cn-north-1"),
            5,
            5,
            scheme="http",
        )
        api_info = {
            action: ApiInfo("POST", "/", {"Action": action, "Version": VERSION}, {}, {})
            for action in ACTIONS
        }
        for action in QUERY_ACTIONS:
            api_info[f"GET {action}"] = ApiInfo(
                "GET", "/", {"Action": action, "Version": VERSION}, {}, {}
            )
        super().__init__(info, api_info)
        # The SDK's constructor prefers credentials from the environment or ~/.volc.
        self.set_ak(access_key_id)
        self.set_sk(secret_access_key)

    def action(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """Call ``action``; returns the whole envelope or raises VolcengineError."""
        return self._call(lambda: self.json(action, {}, json.dumps(body)))

    def query_action(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """Call ``action`` by GET (the SDK sends numbers as decimal text)."""
        return self._call(lambda: self.get(f"GET {action}", dict(params)))

    def _call(self, send: Callable[[], str]) -> dict[str, Any]:
        try:
            return dict(json.loads(send()))
        except Exception as exc:  # the SDK raises bare Exception(body) on non-200
            raw = exc.args[0] if exc.args else b""
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                envelope = json.loads(text)
            except ValueError:
                raise exc from None
            raise VolcengineError(envelope) from None
