"""Checks on a raw request to ``/`` before it is verified or parsed.

Everything a client sends is text the signature covers as UTF-8; a byte that is not
UTF-8 would otherwise surface deep in the signer as an encoding error (a 500), so it is
refused here with a 400 that says where it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote_to_bytes

from relaystream.api.errors import INVALID_PARAMETER, METHOD_NOT_ALLOWED, ApiError

# GET serves the read actions (parameters in the query), POST every action.
ALLOWED_METHODS = ("GET", "POST")
ALLOW_HEADER = ", ".join(ALLOWED_METHODS)


def check_method(method: str) -> None:
    if method not in ALLOWED_METHODS:
        raise ApiError(
            METHOD_NOT_ALLOWED,
            f"The method {method[:16]!r} is not allowed; call actions with POST "
            "(or GET for the read actions).",
        )


def check_utf8(*, headers: Mapping[str, str], raw_target: str) -> None:
    """Headers and the query (after percent-decoding) must be UTF-8."""
    # aiohttp decodes header bytes with surrogateescape: a non-UTF-8 byte becomes a lone
    # surrogate, which strict UTF-8 encoding refuses.
    for name, value in headers.items():
        if not _is_utf8_text(name):
            raise ApiError(INVALID_PARAMETER, "A header name is not valid UTF-8.")
        if not _is_utf8_text(value):
            raise ApiError(
                INVALID_PARAMETER, f"The value of the header {name[:64]!r} is not valid UTF-8."
            )
    _, _, query = raw_target.partition("?")
    if not _is_utf8_text(query):
        raise ApiError(INVALID_PARAMETER, "The query string is not valid UTF-8.")
    try:
        unquote_to_bytes(query.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(
            INVALID_PARAMETER, "The query string percent-decodes to bytes that are not UTF-8."
        ) from None


def _is_utf8_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
