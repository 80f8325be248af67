"""The access log, with secrets in URLs redacted.

A client may put a token or a key in a query string (``?token=...`` for a player that
cannot set headers, a pre-signed URL); aiohttp's default access log writes the request
line as received. Here every query value whose name looks secret is replaced before the
line is written.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

REDACTED = "REDACTED"

_SECRET_NAME = re.compile(
    r"token|secret|signature|password|credential|key|authorization|sig$", re.IGNORECASE
)


def redact_target(target: str) -> str:
    """``/path?token=abc&Action=X`` → ``/path?token=REDACTED&Action=X``."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    pairs = []
    for pair in query.split("&"):
        name, eq, _ = pair.partition("=")
        secret = eq and _SECRET_NAME.search(unquote_plus(name))
        pairs.append(f"{name}={REDACTED}" if secret else pair)
    return f"{path}?{'&'.join(pairs)}"


class RedactingAccessLogger(AbstractAccessLogger):
    """One line per request: client, request line (redacted), status, size, seconds."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d %.3fs',
            request.remote,
            request.method,
            redact_target(request.raw_path),
            request.version.major,
            request.version.minor,
            response.status,
            response.body_length,
            time,
        )
