"""The OpenAPI endpoint: ``/?Action=...&Version=2023-11-01``, signed, enveloped.

Every answer, including every failure, is a Volcengine envelope; an unexpected
exception becomes ``InternalError`` with the request id, and the stack trace goes to
the log only.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from relaystream.api.actions import Actions, Caller
from relaystream.api.envelope import (
    API_VERSION,
    RequestContext,
    failure,
    new_request_id,
    success,
)
from relaystream.api.errors import (
    INTERNAL_ERROR,
    INVALID_ACTION_OR_VERSION,
    INVALID_BODY_EMPTY,
    INVALID_UNMARSHAL,
    ApiError,
)
from relaystream.api.models import QueryParams
from relaystream.api.signature import HttpRequestParts, verify_request
from relaystream.config import Config
from relaystream.metrics import API_CODE_KEY

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20


class OpenApiEndpoint:
    def __init__(self, config: Config, actions: Actions) -> None:
        self._config = config
        self._actions = actions
        self._handlers = actions.table()

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/", self.handle), web.get("/", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        ctx = RequestContext(
            request_id=new_request_id(),
            action=request.query.get("Action", ""),
            version=request.query.get("Version", ""),
            region=self._config.region,
        )
        try:
            result = await self._dispatch(request, ctx)
        except ApiError as exc:
            logger.info("%s %s: %s %s", ctx.request_id, ctx.action, exc.code, exc.message)
            return _json(failure(ctx, exc), exc.http_status)
        except Exception:
            logger.exception("%s %s: internal error", ctx.request_id, ctx.action)
            error = ApiError(
                INTERNAL_ERROR, f"Internal error; quote RequestId {ctx.request_id} when asking."
            )
            return _json(failure(ctx, error), error.http_status)
        return _json(success(ctx, result), 200)

    async def _dispatch(self, request: web.Request, ctx: RequestContext) -> Any:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise ApiError(INVALID_UNMARSHAL, f"The body exceeds {MAX_BODY_BYTES} bytes.")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            # A chunked body has no Content-Length to check up front.
            raise ApiError(INVALID_UNMARSHAL, f"The body exceeds {MAX_BODY_BYTES} bytes.") from None
        caller = verify_request(
            HttpRequestParts(
                method=request.method,
                path=request.path,
                query_string=request.query_string,
                headers=request.headers,
                body=body,
            ),
            secret_for=self._config.secret_for,
        )
        handler = self._handlers.get(ctx.action)
        if handler is None or ctx.version != API_VERSION:
            raise ApiError(
                INVALID_ACTION_OR_VERSION,
                f"Action {ctx.action!r} with Version {ctx.version!r} is not supported; "
                f"use one of {', '.join(sorted(self._handlers))} with Version {API_VERSION}.",
            )
        if request.method == "GET":
            if ctx.action not in self._actions.read_only_actions:
                raise ApiError(
                    INVALID_ACTION_OR_VERSION, f"Action {ctx.action} must be called with POST."
                )
            params: dict[str, Any] = QueryParams(
                (k, v) for k, v in request.query.items() if k not in {"Action", "Version"}
            )
        else:
            params = _parse_json_body(body)
        return await handler(Caller(caller.access_key_id), params)


def _parse_json_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise ApiError(INVALID_BODY_EMPTY, "The request body is empty; send a JSON object.")
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(INVALID_UNMARSHAL, f"The body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(INVALID_UNMARSHAL, "The body is nested too deeply.") from None
    if not isinstance(parsed, dict):
        raise ApiError(INVALID_UNMARSHAL, "The body must be a JSON object.")
    return parsed


def _json(payload: dict[str, Any], status: int) -> web.Response:
    response = web.json_response(payload, status=status)
    # For the request metrics: the answer's code without decoding the body again.
    error = payload["ResponseMetadata"].get("Error")
    response[API_CODE_KEY] = error["Code"] if error else "OK"
    return response
