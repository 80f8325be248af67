"""Bounds on an SDP offer, checked on the raw bytes before any SDP parser sees them.

aiortc parses whatever it is given, in the event loop, and keeps what it parsed: one
offer of ~0.9 MB with 12,000 m-lines held the whole server (health checks, the API,
every other room) for half a minute and grew it by ~0.8 GB. A browser's offer is a few
kilobytes with a handful of m-lines, so the bounds here are generous for real players
and refuse the rest after a scan of the text that costs microseconds. Shared by every
signaling endpoint that takes an offer (WHEP, WHIP).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True)
class OfferBounds:
    """The largest offer an endpoint accepts."""

    max_bytes: int = 32 * 1024
    max_media: int = 8  # m-lines (a browser sends 2 or 3)
    max_candidates: int = 64  # a=candidate lines, all m-lines together


async def read_offer(request: web.Request, bounds: OfferBounds) -> str:
    """The request's body as SDP text, or an HTTP 413/400 that says which bound it broke.

    A declared length over the bound is refused before a byte of the body is read; a
    chunked body is read only up to the bound.
    """
    declared = request.content_length
    if declared is not None and declared > bounds.max_bytes:
        raise _too_large(bounds, declared)
    body = bytearray()
    async for chunk in request.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > bounds.max_bytes:
            raise _too_large(bounds, len(body))
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(text="the offer is not UTF-8 text\n") from None
    check_offer(text, bounds)
    return text


def check_offer(text: str, bounds: OfferBounds) -> None:
    """HTTP 400 if the offer has more m-lines or candidates than ``bounds`` allow."""
    if len(text.encode()) > bounds.max_bytes:
        raise _too_large(bounds, len(text.encode()))
    media = _count_lines(text, "m=")
    if media > bounds.max_media:
        raise web.HTTPBadRequest(
            text=f"the offer has {media} m-lines; at most {bounds.max_media} are accepted\n"
        )
    candidates = _count_lines(text, "a=candidate:")
    if candidates > bounds.max_candidates:
        raise web.HTTPBadRequest(
            text=f"the offer has {candidates} candidates; "
            f"at most {bounds.max_candidates} are accepted\n"
        )


def _count_lines(text: str, prefix: str) -> int:
    """Lines starting with ``prefix``, whatever the line ending (CRLF, LF)."""
    return text.count("\n" + prefix) + text.startswith(prefix)


def _too_large(bounds: OfferBounds, size: int) -> web.HTTPRequestEntityTooLarge:
    return web.HTTPRequestEntityTooLarge(
        max_size=bounds.max_bytes,
        actual_size=size,
        text=f"the offer is {size} bytes; at most {bounds.max_bytes} are accepted\n",
    )
