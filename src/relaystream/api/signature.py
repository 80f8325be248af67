"""Volcengine OpenAPI signature V4: signing and verifying requests.

The wire contract::

    Authorization: HMAC-SHA256 Credential=<AK>/<yyyymmdd>/<region>/<service>/request,
                   SignedHeaders=<;-joined lowercase names>, Signature=<hex>
    X-Date: yyyymmddTHHMMSSZ
    X-Content-Sha256: <hex sha256 of the body>

The signing key is the HMAC-SHA256 chain secret -> date -> region -> service -> "request".

The official Python SDK is the reference: a request it signs verifies here, and a request
signed here carries the Authorization the SDK would produce for the same inputs and time.
Both directions go through one canonical-request builder, so the two cannot drift apart.

This module is shared with the Python client, so it depends on the standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote

from relaystream.api.errors import (
    INVALID_ACCESS_KEY,
    INVALID_TIMESTAMP,
    SIGNATURE_DOES_NOT_MATCH,
    ApiError,
)

__all__ = [
    "ALGORITHM",
    "SERVICE",
    "HttpRequestParts",
    "VerifiedCaller",
    "sign_request",
    "verify_request",
]

SERVICE = "rtc"
ALGORITHM = "HMAC-SHA256"

_X_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
# strptime alone accepts unpadded fields and non-ASCII digits; the wire format is exact.
_X_DATE_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_SCOPE_DATE_RE = re.compile(r"[0-9]{8}")
_SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")
_SCOPE_TERMINATOR = "request"
_QUERY_SAFE = "-_.~"
# Headers outside this set (User-Agent, Accept, Content-Length, ...) are left unsigned by
# the SDK; signing them too would still verify, but would no longer match its Authorization.
_SIGNED_BY_NAME = frozenset({"content-type", "content-md5", "host"})
# The SDK fills this in for non-GET requests without a Content-Type, and signs it.
_DEFAULT_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
# Keeps caller-supplied values from bloating error messages.
_MAX_ECHO = 64


@dataclass(frozen=True)
class HttpRequestParts:
    """The parts of a received HTTP request that the signature covers.

    ``path`` is the decoded path (what the client passed to its SDK, normally ``"/"``);
    ``query_string`` is raw, as received; ``headers`` may use any letter case.
    """

    method: str
    path: str
    query_string: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class VerifiedCaller:
    """Who signed a request that verified."""

    access_key_id: str
    region: str


@dataclass(frozen=True)
class _Authorization:
    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def _canonical_request(
    *,
    method: str,
    path: str,
    query: Mapping[str, Sequence[str]],
    headers: Sequence[tuple[str, str]],
    body_sha256: str,
) -> str:
    """Build the canonical request string that both signing and verifying hash.

    ``query`` holds decoded keys and values; ``headers`` holds the signed headers as
    (lowercase name, value) pairs in SignedHeaders order.
    """
    canonical_headers = "".join(
        f"{name}:{_signed_host(value) if name == 'host' else value}\n" for name, value in headers
    )
    return "\n".join(
        [
            method,
            # The SDK quotes with urllib's default safe set, i.e. '/' stays literal.
            quote(path or "/", safe="/"),
            _canonical_query(query),
            canonical_headers,
            ";".join(name for name, _ in headers),
            body_sha256,
        ]
    )


def sign_request(
    *,
    method: str,
    host: str,
    path: str,
    query: Mapping[str, str | list[str]],
    headers: Mapping[str, str],
    body: bytes,
    access_key_id: str,
    secret_access_key: str,
    region: str,
    service: str = SERVICE,
    now: datetime | None = None,
) -> dict[str, str]:
    """Sign a request the way the SDK's ``SignerV4.sign`` does and return the headers to send.

    The result is ``headers`` plus Host, X-Date, X-Content-Sha256 and Authorization (and,
    as the SDK does, a form Content-Type for a non-GET request that has none). Content-Type,
    Content-Md5, Host and every X-* header are signed. List values in ``query`` are sent as
    repeated keys, e.g. ``urllib.parse.urlencode(query, doseq=True)``.
    """
    when = _utc(now) if now is not None else datetime.now(UTC)
    x_date = when.strftime(_X_DATE_FORMAT)
    body_sha256 = hashlib.sha256(body).hexdigest()

    lowered = [name.lower() for name in headers]
    if len(set(lowered)) != len(lowered):
        raise ValueError("headers name the same header more than once (ignoring case)")
    overridden = {"host", "x-date", "x-content-sha256", "authorization"}
    out = {name: value for name, value in headers.items() if name.lower() not in overridden}
    out["Host"] = host
    if method != "GET" and "content-type" not in lowered:
        out["Content-Type"] = _DEFAULT_CONTENT_TYPE
    out["X-Date"] = x_date
    out["X-Content-Sha256"] = body_sha256

    signed = sorted(
        (name.lower(), value)
        for name, value in out.items()
        if name.lower() in _SIGNED_BY_NAME or name.lower().startswith("x-")
    )
    canonical = _canonical_request(
        method=method,
        path=path,
        query={key: [value] if isinstance(value, str) else value for key, value in query.items()},
        headers=signed,
        body_sha256=body_sha256,
    )
    scope_date = x_date[:8]
    signature = _signature(secret_access_key, x_date, scope_date, region, service, canonical)
    out["Authorization"] = (
        f"{ALGORITHM} Credential={access_key_id}/{scope_date}/{region}/{service}/"
        f"{_SCOPE_TERMINATOR}, SignedHeaders={';'.join(n for n, _ in signed)}, "
        f"Signature={signature}"
    )
    return out


def verify_request(
    req: HttpRequestParts,
    *,
    secret_for: Callable[[str], str | None],
    region: str,
    now: datetime | None = None,
    max_skew_s: int = 900,
) -> VerifiedCaller:
    """Check a received request's V4 signature and return who signed it.

    ``region`` is the one this endpoint serves; a credential scope naming another is
    SignatureDoesNotMatch, as at Volcengine, whose gateway derives the signing key from
    its own region, so a signature made for another region can never match there.

    Raises ``ApiError`` with SignatureDoesNotMatch, InvalidAccessKey or InvalidTimestamp;
    malformed input of any kind ends in one of those, never in another exception.
    """
    headers = _fold_headers(req.headers)

    raw_auth = headers.get("authorization")
    if raw_auth is None or not raw_auth.strip():
        raise _mismatch("The Authorization header is missing.")
    auth = _parse_authorization(raw_auth)
    if auth.service != SERVICE:
        raise _mismatch(
            f"Authorization Credential names service {_echo(auth.service)}; expected {SERVICE!r}."
        )
    if auth.region != region:
        raise _mismatch(
            f"Authorization Credential names region {_echo(auth.region)}; this endpoint "
            f"serves {region!r}."
        )

    x_date = _check_x_date(headers.get("x-date"), auth.date, now, max_skew_s)

    secret = secret_for(auth.access_key_id)
    if not secret:
        raise ApiError(
            INVALID_ACCESS_KEY,
            f"The access key {_echo(auth.access_key_id)} in Authorization Credential "
            "is not recognised.",
        )

    body_sha256 = hashlib.sha256(req.body).hexdigest()
    declared = headers.get("x-content-sha256")
    # The body hash is public knowledge, so a plain comparison leaks nothing.
    if declared is not None and declared != body_sha256:
        raise _mismatch("X-Content-Sha256 does not match the SHA-256 of the request body.")

    signed: list[tuple[str, str]] = []
    for name in auth.signed_headers:
        value = headers.get(name)
        if value is None:
            raise _mismatch(
                f"The header {_echo(name)} named in Authorization SignedHeaders "
                "is missing from the request."
            )
        signed.append((name, value))

    canonical = _canonical_request(
        method=req.method,
        path=req.path,
        query=_parse_query(req.query_string),
        headers=signed,
        body_sha256=body_sha256,
    )
    try:
        expected = _signature(secret, x_date, auth.date, auth.region, auth.service, canonical)
    except UnicodeEncodeError:
        # A lone surrogate: how a server hands over request bytes that are not UTF-8.
        raise _mismatch(
            "A signed header, the path or the query is not valid UTF-8, so it cannot be signed."
        ) from None
    if not hmac.compare_digest(expected.encode("ascii"), auth.signature.encode("ascii")):
        raise _mismatch(
            "The request signature in Authorization does not match; check the secret key "
            "and how the request was canonicalised."
        )
    return VerifiedCaller(access_key_id=auth.access_key_id, region=auth.region)


def _canonical_query(query: Mapping[str, Sequence[str]]) -> str:
    # Keys sort on their decoded text, before quoting, as the SDK does; repeated values
    # keep the order they were given in.
    pairs: list[str] = []
    for key in sorted(query):
        values = query[key]
        for value in [values] if isinstance(values, str) else values:
            pairs.append(f"{quote(key, safe=_QUERY_SAFE)}={quote(value, safe=_QUERY_SAFE)}")
    return "&".join(pairs)


def _signed_host(value: str) -> str:
    # Mirrors the SDK exactly, including its naive split on ':' (so "[::1]:443" is left
    # alone), because the signed host must match byte for byte.
    parts = value.split(":")
    if len(parts) > 1 and parts[1] in ("80", "443"):
        return parts[0]
    return value


def _signature(
    secret: str, x_date: str, scope_date: str, region: str, service: str, canonical: str
) -> str:
    scope = f"{scope_date}/{region}/{service}/{_SCOPE_TERMINATOR}"
    string_to_sign = "\n".join([ALGORITHM, x_date, scope, _sha256_hex(canonical)])
    key = secret.encode("utf-8")
    for part in (scope_date, region, service, _SCOPE_TERMINATOR):
        key = _hmac(key, part)
    return _hmac(key, string_to_sign).hex()


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        # A naive datetime is usually local time; guessing would shift the clock silently.
        raise ValueError("now must be timezone-aware")
    return moment.astimezone(UTC)


def _fold_headers(headers: Mapping[str, str]) -> dict[str, str]:
    folded: dict[str, str] = {}
    for name, value in headers.items():
        folded.setdefault(name.lower(), value)
    return folded


def _parse_query(query_string: str) -> dict[str, list[str]]:
    try:
        pairs = parse_qsl(query_string, keep_blank_values=True)
    except ValueError as exc:
        raise _mismatch("The query string could not be parsed.") from exc
    query: dict[str, list[str]] = {}
    for key, value in pairs:
        query.setdefault(key, []).append(value)
    return query


def _parse_authorization(raw: str) -> _Authorization:
    algorithm, _, rest = raw.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise _mismatch(
            f"The Authorization header must use the {ALGORITHM} algorithm; got {_echo(algorithm)}."
        )
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or name in fields:
            raise _mismatch(
                "The Authorization header is malformed; expected "
                "'Credential=..., SignedHeaders=..., Signature=...'."
            )
        fields[name] = value.strip()
    for required in ("Credential", "SignedHeaders", "Signature"):
        if not fields.get(required):
            raise _mismatch(f"The Authorization header has no {required}.")

    scope = fields["Credential"].split("/")
    if (
        len(scope) != 5
        or not all(scope)
        or scope[4] != _SCOPE_TERMINATOR
        or not _SCOPE_DATE_RE.fullmatch(scope[1])
    ):
        raise _mismatch(
            "Authorization Credential is malformed; expected "
            "'<AccessKeyId>/<yyyymmdd>/<region>/<service>/request'."
        )

    names = [name.strip().lower() for name in fields["SignedHeaders"].split(";")]
    if not all(names) or len(set(names)) != len(names):
        raise _mismatch(
            "Authorization SignedHeaders is malformed; expected distinct header names "
            "joined by ';'."
        )

    signature = fields["Signature"]
    if not _SIGNATURE_RE.fullmatch(signature):
        raise _mismatch("Authorization Signature is malformed; expected 64 lowercase hex digits.")

    access_key_id, date, region, service, _ = scope
    return _Authorization(
        access_key_id=access_key_id,
        date=date,
        region=region,
        service=service,
        signed_headers=tuple(names),
        signature=signature,
    )


def _check_x_date(raw: str | None, scope_date: str, now: datetime | None, max_skew_s: int) -> str:
    if not raw:
        raise ApiError(INVALID_TIMESTAMP, "The X-Date header is missing.")
    if not _X_DATE_RE.fullmatch(raw):
        raise ApiError(
            INVALID_TIMESTAMP,
            f"The X-Date header {_echo(raw)} is not in the form yyyymmddTHHMMSSZ.",
        )
    try:
        sent_at = datetime.strptime(raw, _X_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise ApiError(
            INVALID_TIMESTAMP, f"The X-Date header {_echo(raw)} is not a valid UTC time."
        ) from exc
    server_now = _utc(now) if now is not None else datetime.now(UTC)
    if abs((sent_at - server_now).total_seconds()) > max_skew_s:
        raise ApiError(
            INVALID_TIMESTAMP,
            f"The X-Date header {raw} is more than {max_skew_s} seconds away from the "
            f"server time {server_now.strftime(_X_DATE_FORMAT)}.",
        )
    if raw[:8] != scope_date:
        raise ApiError(
            INVALID_TIMESTAMP,
            f"The X-Date header {raw} is not on the date {scope_date} in Authorization Credential.",
        )
    return raw


def _mismatch(message: str) -> ApiError:
    return ApiError(SIGNATURE_DOES_NOT_MATCH, message)


def _echo(value: str) -> str:
    # repr() keeps control characters out of logs and responses.
    shown = value if len(value) <= _MAX_ECHO else value[:_MAX_ECHO] + "..."
    return repr(shown)
