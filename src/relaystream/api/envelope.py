"""The Volcengine JSON envelope around every answer."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from relaystream.api.errors import ApiError

SERVICE_NAME = "rtc"
API_VERSION = "2023-11-01"


def new_request_id() -> str:
    """Like Volcengine's: a UTC timestamp followed by random hex."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + secrets.token_hex(10).upper()


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    action: str
    version: str
    region: str

    def metadata(self) -> dict[str, Any]:
        return {
            "RequestId": self.request_id,
            "Action": self.action,
            "Version": self.version,
            "Service": SERVICE_NAME,
            "Region": self.region,
        }


def success(ctx: RequestContext, result: Any) -> dict[str, Any]:
    return {"ResponseMetadata": ctx.metadata(), "Result": result}


def failure(ctx: RequestContext, error: ApiError) -> dict[str, Any]:
    metadata = ctx.metadata()
    metadata["Error"] = {"Code": error.code, "Message": error.message}
    return {"ResponseMetadata": metadata}
