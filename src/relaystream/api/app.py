"""The OpenAPI endpoint: ``/?Action=...&Version=2023-11-01``, signed, enveloped.

Every answer, including every failure, is a Volcengine envelope; an unexpected
exception becomes ``InternalError`` with the request id, and the stack trace goes to
the log only. Only GET and POST reach an action: any other method is a 405 with
``Allow`` (HEAD without a body), whatever the action.
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
    METHOD_NOT_ALLOWED,
    ApiError,
)
from relaystream.api.models import QueryParams
from relaystream.api.openapi import openapi_document
from relaystream.api.request_checks import ALLOW_HEADER, check_method, check_utf8
from relaystream.api.signature import HttpRequestParts, verify_request
from relaystream.config import Config

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20

_CLIENT_GONE = ApiError(INVALID_UNMARSHAL, "The connection closed before the body was complete.")


class OpenApiEndpoint:
    def __init__(self, config: Config, actions: Actions) -> None:
        self._config = config
        self._actions = actions
        self._handlers = actions.table()
        self._openapi = openapi_document()

    def routes(self) -> list[web.RouteDef]:
        # Every method, so that the ones we refuse still get an envelope (aiohttp's own
        # 405 is plain text, and its GET route would also run actions for HEAD).
        return [
            web.route("*", "/", self.handle),
            web.get("/openapi.json", self.describe, allow_head=False),
        ]

    async def describe(self, _: web.Request) -> web.Response:
        return web.json_response(self._openapi)

    async def handle(self, request: web.Request) -> web.Response:
        ctx = RequestContext(
            request_id=new_request_id(),
            action=_printable(request.query.get("Action", "")),
            version=_printable(request.query.get("Version", "")),
            region=self._config.region,
        )
        try:
            result = await self._dispatch(request, ctx)
        except ApiError as exc:
            logger.info("%s %s: %s %s", ctx.request_id, ctx.action, exc.code, exc.message)
            if exc.kind is METHOD_NOT_ALLOWED:
                return _method_not_allowed(request, failure(ctx, exc))
            return _json(failure(ctx, exc), exc.http_status)
        except ConnectionError:
            # The client went away (typically mid-body): nobody is left to answer, and
            # it is not our failure.
            logger.info("%s %s: the client disconnected", ctx.request_id, ctx.action)
            return _json(failure(ctx, _CLIENT_GONE), _CLIENT_GONE.http_status)
        except Exception:
            logger.exception("%s %s: internal error", ctx.request_id, ctx.action)
            error = ApiError(
                INTERNAL_ERROR, f"Internal error; quote RequestId {ctx.request_id} when asking."
            )
            return _json(failure(ctx, error), error.http_status)
        return _json(success(ctx, result), 200)

    async def _dispatch(self, request: web.Request, ctx: RequestContext) -> Any:
        check_method(request.method)
        check_utf8(headers=request.headers, raw_target=request.raw_path)
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
            region=self._config.region,
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
        # Decoded here: json.loads would also guess UTF-16 and UTF-32 from bytes.
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            INVALID_UNMARSHAL, f"The body is not valid UTF-8 (byte {exc.start})."
        ) from None
    try:
        parsed = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise ApiError(INVALID_UNMARSHAL, f"The body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(INVALID_UNMARSHAL, "The body is nested too deeply.") from None
    if not isinstance(parsed, dict):
        raise ApiError(INVALID_UNMARSHAL, "The body must be a JSON object.")
    return parsed


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON (and every other parser) does not.
    raise ValueError(f"{name} is not a JSON value")


def _printable(text: str) -> str:
    """A query value safe to echo: not UTF-8 (a lone surrogate) echoes as empty."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return ""
    return text[:128]


def _json(payload: dict[str, Any], status: int) -> web.Response:
    return web.json_response(payload, status=status)


def _method_not_allowed(request: web.Request, payload: dict[str, Any]) -> web.Response:
    response = _json(payload, METHOD_NOT_ALLOWED.http_status)
    response.headers["Allow"] = ALLOW_HEADER
    if request.method == "HEAD":
        response.body = None
    return response
