"""Volcengine envelopes for requests that aiohttp's HTTP parser refuses.

A request line or header over the size limits, too many headers or bytes that are not
HTTP never reach a route or a middleware: aiohttp answers them itself, in plain text,
from ``RequestHandler.handle_error``. This module wraps that one method so those answers
are error envelopes like every other answer of the API, and are logged as one line
instead of a stack trace. It can go when aiohttp offers a hook for parser errors.

The wrapper only takes over the parser's refusals (an ``HttpProcessingError``); every
other call (a 500 from a route outside the API) keeps aiohttp's behaviour.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, InvalidURLError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from relaystream.api.envelope import RequestContext, failure, new_request_id
from relaystream.api.errors import INVALID_PARAMETER, ApiError

logger = logging.getLogger(__name__)

_original_handle_error = RequestHandler.handle_error
_region = "cn-north-1"


def answer_parser_errors_with_envelopes(region: str) -> None:
    """Install the wrapper (once per process); ``region`` goes in the envelopes."""
    global _region
    _region = region
    RequestHandler.handle_error = _handle_error  # type: ignore[method-assign]


def describe(exc: HttpProcessingError) -> str:
    """What is wrong with the request, without echoing any of its bytes (they may be a
    header carrying a token)."""
    if isinstance(exc, LineTooLong):
        return f"The request line or a header is longer than the limit of {exc.args[1]} bytes."
    if isinstance(exc, InvalidURLError):
        return (
            "The request target has a byte that is not allowed there; "
            "send anything beyond ASCII as percent-encoded UTF-8."
        )
    text = str(exc.message).lower()
    if "too many headers" in text:
        return "The request has too many headers."
    if "too long" in text or "overflow" in text or "too large" in text:
        return "The request line or headers are too long."
    return f"The request is not valid HTTP/1.1 ({type(exc).__name__})."


def _handle_error(
    self: RequestHandler,
    request: web.BaseRequest,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    if not isinstance(exc, HttpProcessingError) or request.writer.output_size > 0:
        return _original_handle_error(self, request, status, exc, message)
    ctx = RequestContext(request_id=new_request_id(), action="", version="", region=_region)
    error = ApiError(INVALID_PARAMETER, describe(exc))
    logger.info(
        "%s refused by the HTTP parser from %s: %s", ctx.request_id, request.remote, error.message
    )
    response = web.json_response(failure(ctx, error), status=error.http_status)
    response.force_close()
    return response
