"""Volcengine RTC AccessToken, version "001": generating, parsing and verifying it.

This module owns the token's wire format and the rules for accepting one. Nothing else
in the package should pack, unpack or sign tokens by hand.

Wire format (every integer little-endian)::

    token   = "001" + AppId (24 chars) + base64std(content)
    content = u16 len(msg) + msg + u16 len(sig) + sig
    sig     = HMAC-SHA256(key=AppKey, msg)
    msg     = u32 nonce, u32 issued_at, u32 expire_at, str RoomId, str UserId, map privileges
    str     = u16 byte length + UTF-8 bytes
    map     = u16 count + (u16 privilege, u32 expire_ts)*, ascending by privilege

``expire_at`` and each privilege's ``expire_ts`` are unix seconds, with 0 meaning "never".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType

__all__ = [
    "APP_ID_LENGTH",
    "VERSION",
    "AccessToken",
    "AppKeyLookup",
    "Privilege",
    "TokenError",
    "generate_token",
    "parse_token",
    "verify_token",
]

VERSION = "001"
APP_ID_LENGTH = 24

# Where the tokens' signing key comes from: AppId -> AppKey, None for an unknown AppId.
AppKeyLookup = Callable[[str], str | None]

_HEADER_LENGTH = len(VERSION) + APP_ID_LENGTH
_SIGNATURE_LENGTH = hashlib.sha256().digest_size
_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFF_FFFF

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_MAP_ENTRY = struct.Struct("<HI")


class Privilege(IntEnum):
    """What a token lets its holder do in the room; the value is the wire code."""

    PUBLISH_STREAM = 0
    PUBLISH_AUDIO = 1
    PUBLISH_VIDEO = 2
    PUBLISH_DATA = 3
    SUBSCRIBE_STREAM = 4


# Error messages use Volcengine's own names so they read the same as its documentation.
_PRIVILEGE_NAMES: Mapping[Privilege, str] = MappingProxyType(
    {
        Privilege.PUBLISH_STREAM: "PublishStream",
        Privilege.PUBLISH_AUDIO: "PublishAudio",
        Privilege.PUBLISH_VIDEO: "PublishVideo",
        Privilege.PUBLISH_DATA: "PublishData",
        Privilege.SUBSCRIBE_STREAM: "SubscribeStream",
    }
)

# Volcengine's own generators expand PublishStream into these, so tokens minted elsewhere
# carry them and clients may ask for them individually.
_PUBLISH_STREAM_IMPLIES = (
    Privilege.PUBLISH_AUDIO,
    Privilege.PUBLISH_VIDEO,
    Privilege.PUBLISH_DATA,
)

_KNOWN_PRIVILEGE_CODES = frozenset(int(p) for p in Privilege)


@dataclass(frozen=True)
class AccessToken:
    """The signed claims of a token, as carried in its ``msg``."""

    app_id: str
    room_id: str
    user_id: str
    nonce: int
    issued_at: int
    expire_at: int
    privileges: Mapping[Privilege, int]


class TokenError(Exception):
    """A token that is malformed, forged, expired or for something else.

    ``str(exc)`` is a short reason meant for logs and API error messages; it never
    contains the AppKey.
    """


def generate_token(
    *,
    app_id: str,
    app_key: str,
    room_id: str,
    user_id: str,
    privileges: Mapping[Privilege, int] | Iterable[Privilege],
    expire_at: int = 0,
    issued_at: int | None = None,
    nonce: int | None = None,
) -> str:
    """Return a signed token for ``user_id`` in ``room_id``.

    ``privileges`` maps each privilege to the unix time it expires (0 = never); a plain
    iterable of privileges grants each without expiry. PublishStream also grants
    PublishAudio, PublishVideo and PublishData with the same expiry, unless the caller
    gave one of those an expiry of its own.

    Raises ``ValueError`` for arguments that cannot be encoded.
    """
    if len(app_id) != APP_ID_LENGTH or not app_id.isascii():
        raise ValueError(f"app_id must be {APP_ID_LENGTH} ASCII characters, got {app_id!r}")
    if not app_key:
        # A token signed with an empty key is one anybody can forge.
        raise ValueError("app_key must not be empty")

    claims = AccessToken(
        app_id=app_id,
        room_id=room_id,
        user_id=user_id,
        nonce=secrets.randbits(32) if nonce is None else _check_u32("nonce", nonce),
        issued_at=(int(time.time()) if issued_at is None else _check_u32("issued_at", issued_at)),
        expire_at=_check_u32("expire_at", expire_at),
        privileges=MappingProxyType(_normalise_privileges(privileges)),
    )
    msg = _pack_msg(claims)
    content = _pack_bytes(msg) + _pack_bytes(_sign(app_key, msg))
    return VERSION + app_id + base64.b64encode(content).decode("ascii")


def parse_token(token: str) -> tuple[AccessToken, bytes, bytes]:
    """Decode ``token`` without checking its signature or any of its claims.

    Returns the claims, the exact ``msg`` bytes that were signed and the signature.
    Privilege codes this module does not know are left out of the claims; they stay
    covered by the signature through the returned ``msg``.

    Raises ``TokenError`` for anything that is not a well-formed version "001" token.
    """
    if not isinstance(token, str):
        raise TokenError("malformed token: not a string")
    # Checked first so that slicing by characters below is also slicing by bytes.
    if not token.isascii():
        raise TokenError("malformed token: non-ASCII characters")
    if len(token) <= _HEADER_LENGTH:
        raise TokenError("malformed token: too short")
    if not token.startswith(VERSION):
        raise TokenError("malformed token: unsupported version")

    app_id = token[len(VERSION) : _HEADER_LENGTH]
    try:
        # validate=True: the lenient decoder silently drops stray characters, which would
        # let many different strings pass as the same token.
        content = base64.b64decode(token[_HEADER_LENGTH:], validate=True)
    except ValueError as exc:
        raise TokenError("malformed token: bad base64") from exc

    outer = _Reader(content)
    msg = outer.read_bytes()
    signature = outer.read_bytes()
    outer.expect_end()
    if len(signature) != _SIGNATURE_LENGTH:
        raise TokenError(
            f"malformed token: signature is {len(signature)} bytes, not {_SIGNATURE_LENGTH}"
        )

    reader = _Reader(msg)
    nonce = reader.read_u32()
    issued_at = reader.read_u32()
    expire_at = reader.read_u32()
    room_id = reader.read_str()
    user_id = reader.read_str()
    privileges = reader.read_privileges()
    reader.expect_end()

    claims = AccessToken(
        app_id=app_id,
        room_id=room_id,
        user_id=user_id,
        nonce=nonce,
        issued_at=issued_at,
        expire_at=expire_at,
        privileges=MappingProxyType(privileges),
    )
    return claims, msg, signature


def verify_token(
    token: str,
    *,
    app_id: str,
    app_key: str,
    room_id: str,
    user_id: str,
    privilege: Privilege,
    now: int | None = None,
    check_expiry: bool = True,
) -> AccessToken:
    """Accept ``token`` for ``user_id`` doing ``privilege`` in ``room_id``, or raise.

    ``now`` defaults to the current unix time. A deadline is passed once ``now`` reaches
    it; ``check_expiry=False`` accepts a token whose deadlines have passed (a task that
    was admitted earlier rejoining its room). Raises ``TokenError`` naming the first
    check that failed.
    """
    privilege = Privilege(privilege)
    if not app_key:
        raise ValueError("app_key must not be empty")

    claims, msg, signature = parse_token(token)
    if claims.app_id != app_id:
        raise TokenError(f"token is for app {claims.app_id!r}")
    # The signature is checked before any claim is reported back, so that a forged token
    # only ever learns "bad signature".
    if not hmac.compare_digest(_sign(app_key, msg), signature):
        raise TokenError("bad signature")

    if now is None:
        now = int(time.time())
    if not check_expiry:
        now = 0  # no deadline has passed at the epoch
    if _has_passed(claims.expire_at, now):
        raise TokenError("token expired")
    if claims.room_id != room_id:
        raise TokenError(f"token is for room {claims.room_id!r}, not {room_id!r}")
    if claims.user_id != user_id:
        raise TokenError(f"token is for user {claims.user_id!r}, not {user_id!r}")

    name = _PRIVILEGE_NAMES[privilege]
    privilege_expires = claims.privileges.get(privilege)
    if privilege_expires is None:
        raise TokenError(f"token lacks privilege {name}")
    if _has_passed(privilege_expires, now):
        raise TokenError(f"privilege {name} expired")
    return claims


def _has_passed(deadline: int, now: int) -> bool:
    return deadline != 0 and now >= deadline


def _sign(app_key: str, msg: bytes) -> bytes:
    return hmac.new(app_key.encode("utf-8"), msg, hashlib.sha256).digest()


def _check_u32(name: str, value: int) -> int:
    # bool is an int subclass; a flag passed by mistake must not become a timestamp.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U32_MAX:
        raise ValueError(f"{name} must be an integer in [0, 2**32), got {value!r}")
    return value


def _normalise_privileges(
    privileges: Mapping[Privilege, int] | Iterable[Privilege],
) -> dict[Privilege, int]:
    if isinstance(privileges, Mapping):
        pairs: Iterable[tuple[Privilege, int]] = privileges.items()
    else:
        pairs = ((p, 0) for p in privileges)

    granted: dict[Privilege, int] = {}
    for raw, expires in pairs:
        granted[Privilege(raw)] = _check_u32("privilege expiry", expires)

    stream_expires = granted.get(Privilege.PUBLISH_STREAM)
    if stream_expires is not None:
        for implied in _PUBLISH_STREAM_IMPLIES:
            granted.setdefault(implied, stream_expires)
    return granted


def _pack_bytes(data: bytes) -> bytes:
    if len(data) > _U16_MAX:
        raise ValueError(f"field of {len(data)} bytes does not fit a u16 length prefix")
    return _U16.pack(len(data)) + data


def _pack_msg(claims: AccessToken) -> bytes:
    parts = [
        _U32.pack(claims.nonce),
        _U32.pack(claims.issued_at),
        _U32.pack(claims.expire_at),
        _pack_bytes(claims.room_id.encode("utf-8")),
        _pack_bytes(claims.user_id.encode("utf-8")),
        _U16.pack(len(claims.privileges)),
    ]
    parts.extend(
        _MAP_ENTRY.pack(code, expires) for code, expires in sorted(claims.privileges.items())
    )
    msg = b"".join(parts)
    if len(msg) > _U16_MAX:
        raise ValueError("room_id and user_id are too long to fit in a token")
    return msg


class _Reader:
    """Reads the token's little-endian fields; every failure is a ``TokenError``."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def _take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise TokenError("malformed token: truncated")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def read_u16(self) -> int:
        value: int = _U16.unpack(self._take(_U16.size))[0]
        return value

    def read_u32(self) -> int:
        value: int = _U32.unpack(self._take(_U32.size))[0]
        return value

    def read_bytes(self) -> bytes:
        return self._take(self.read_u16())

    def read_str(self) -> str:
        raw = self.read_bytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TokenError("malformed token: bad utf-8") from exc

    def read_privileges(self) -> dict[Privilege, int]:
        count = self.read_u16()
        privileges: dict[Privilege, int] = {}
        previous = -1
        for _ in range(count):
            code, expires = _MAP_ENTRY.unpack(self._take(_MAP_ENTRY.size))
            # Every generator sorts the map; a repeated or out-of-order key would make
            # "which expiry applies" depend on the reader.
            if code <= previous:
                raise TokenError("malformed token: privileges not in ascending order")
            previous = code
            if code in _KNOWN_PRIVILEGE_CODES:
                privileges[Privilege(code)] = expires
        return privileges

    def expect_end(self) -> None:
        if self._pos != len(self._data):
            raise TokenError("malformed token: trailing bytes")
