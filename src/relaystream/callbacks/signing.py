"""The callback signature of SPEC §5.

``Signature = hex(sha256(concat(sorted([EventType, EventData, EventTime, EventId, AppId,
Version, Nonce, CallbackSecret]))))``: the eight strings are sorted (by code point, as
Go's ``sort.Strings`` and Python's ``sorted`` both do on UTF-8 text), joined with no
separator, hashed. A receiver checks it with ``signature_matches``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

# The body fields that are signed, with the secret; every one is a string.
SIGNED_FIELDS = ("EventType", "EventData", "EventTime", "EventId", "AppId", "Version", "Nonce")


def sign(body: Mapping[str, object], secret: str) -> str:
    """The hex signature of ``body`` (its ``SIGNED_FIELDS``) under ``secret``."""
    parts = [str(body[name]) for name in SIGNED_FIELDS]
    parts.append(secret)
    return hashlib.sha256("".join(sorted(parts)).encode("utf-8")).hexdigest()


def signed(body: Mapping[str, object], secret: str) -> dict[str, object]:
    """``body`` with its ``Signature``."""
    return {**body, "Signature": sign(body, secret)}


def signature_matches(body: Mapping[str, object], secret: str) -> bool:
    """Whether ``body['Signature']`` is the one ``secret`` makes (constant time)."""
    given = body.get("Signature")
    if not isinstance(given, str) or any(
        not isinstance(body.get(name), str) for name in SIGNED_FIELDS
    ):
        return False
    return hmac.compare_digest(given.encode(), sign(body, secret).encode())
