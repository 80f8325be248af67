"""Stories for the RTC AccessToken: what a token grants, and every way one is refused."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import random
import struct
import time

import pytest

from relaystream.rtc.token import (
    AccessToken,
    Privilege,
    TokenError,
    generate_token,
    parse_token,
    verify_token,
)

APP_ID = "0123456789abcdef01234567"
APP_KEY = "app-key-for-tests"
ROOM = "room-1"
USER = "user-é"  # non-ASCII on purpose: lengths on the wire are bytes, not characters

ISSUED = 1_700_000_000
HOUR = 3600


def _token(**overrides: object) -> str:
    args: dict[str, object] = {
        "app_id": APP_ID,
        "app_key": APP_KEY,
        "room_id": ROOM,
        "user_id": USER,
        "privileges": [Privilege.PUBLISH_STREAM, Privilege.SUBSCRIBE_STREAM],
        "issued_at": ISSUED,
        "nonce": 42,
    }
    args.update(overrides)
    return generate_token(**args)  # type: ignore[arg-type]


def _verify(token: str, **overrides: object) -> AccessToken:
    args: dict[str, object] = {
        "app_id": APP_ID,
        "app_key": APP_KEY,
        "room_id": ROOM,
        "user_id": USER,
        "privilege": Privilege.SUBSCRIBE_STREAM,
        "now": ISSUED + 1,
    }
    args.update(overrides)
    return verify_token(token, **args)  # type: ignore[arg-type]


def _reassemble(msg: bytes, signature: bytes) -> str:
    content = struct.pack("<H", len(msg)) + msg + struct.pack("<H", len(signature)) + signature
    return "001" + APP_ID + base64.b64encode(content).decode("ascii")


def test_a_generated_token_verifies_and_carries_its_claims() -> None:
    token = _token(expire_at=ISSUED + HOUR)

    claims = _verify(token)

    assert claims == AccessToken(
        app_id=APP_ID,
        room_id=ROOM,
        user_id=USER,
        nonce=42,
        issued_at=ISSUED,
        expire_at=ISSUED + HOUR,
        privileges={
            Privilege.PUBLISH_STREAM: 0,
            Privilege.PUBLISH_AUDIO: 0,
            Privilege.PUBLISH_VIDEO: 0,
            Privilege.PUBLISH_DATA: 0,
            Privilege.SUBSCRIBE_STREAM: 0,
        },
    )
    assert parse_token(token)[0] == claims


def test_defaults_pick_a_fresh_nonce_and_the_current_time() -> None:
    before = int(time.time())
    first = generate_token(
        app_id=APP_ID, app_key=APP_KEY, room_id=ROOM, user_id=USER, privileges=[]
    )
    second = generate_token(
        app_id=APP_ID, app_key=APP_KEY, room_id=ROOM, user_id=USER, privileges=[]
    )
    after = int(time.time())

    a, b = parse_token(first)[0], parse_token(second)[0]
    assert before <= a.issued_at <= after
    assert a.expire_at == 0
    assert a.nonce != b.nonce


def test_publish_stream_also_grants_audio_video_and_data_with_the_same_expiry() -> None:
    deadline = ISSUED + HOUR
    token = _token(privileges={Privilege.PUBLISH_STREAM: deadline})

    privileges = parse_token(token)[0].privileges

    assert dict(privileges) == {
        Privilege.PUBLISH_STREAM: deadline,
        Privilege.PUBLISH_AUDIO: deadline,
        Privilege.PUBLISH_VIDEO: deadline,
        Privilege.PUBLISH_DATA: deadline,
    }
    for implied in (Privilege.PUBLISH_AUDIO, Privilege.PUBLISH_VIDEO, Privilege.PUBLISH_DATA):
        assert _verify(token, privilege=implied).room_id == ROOM


def test_an_explicit_expiry_for_a_sub_privilege_is_kept() -> None:
    token = _token(privileges={Privilege.PUBLISH_STREAM: 0, Privilege.PUBLISH_DATA: ISSUED + 60})

    privileges = parse_token(token)[0].privileges

    assert privileges[Privilege.PUBLISH_AUDIO] == 0
    assert privileges[Privilege.PUBLISH_DATA] == ISSUED + 60


def test_a_byte_flipped_inside_the_content_breaks_the_signature() -> None:
    token = _token()
    content = bytearray(base64.b64decode(token[27:]))
    content[2] ^= 0x01  # first byte of the nonce: still well-formed, no longer what was signed
    tampered = "001" + APP_ID + base64.b64encode(bytes(content)).decode("ascii")

    with pytest.raises(TokenError, match=r"^bad signature$"):
        _verify(tampered)


def test_a_flipped_signature_byte_is_a_bad_signature() -> None:
    _, msg, signature = parse_token(_token())
    forged = _reassemble(msg, bytes([signature[0] ^ 0x80]) + signature[1:])

    with pytest.raises(TokenError, match=r"^bad signature$"):
        _verify(forged)


def test_moving_a_token_to_another_room_keeps_the_old_signature_and_fails() -> None:
    _, msg, signature = parse_token(_token())
    old_room = struct.pack("<H", len(ROOM)) + ROOM.encode()
    new_room = struct.pack("<H", len("vip-room")) + b"vip-room"
    assert msg.count(old_room) == 1
    moved = _reassemble(msg.replace(old_room, new_room), signature)
    assert parse_token(moved)[0].room_id == "vip-room"

    with pytest.raises(TokenError, match=r"^bad signature$"):
        _verify(moved, room_id="vip-room")


def test_a_token_checked_with_the_wrong_app_key_is_refused_without_echoing_the_key() -> None:
    wrong_key = "someone-elses-key"

    with pytest.raises(TokenError, match=r"^bad signature$") as caught:
        _verify(_token(), app_key=wrong_key)

    assert wrong_key not in str(caught.value)
    assert APP_KEY not in str(caught.value)


def test_a_token_expires_at_its_deadline_not_a_second_later() -> None:
    token = _token(expire_at=ISSUED + HOUR)

    assert _verify(token, now=ISSUED + HOUR - 1).expire_at == ISSUED + HOUR
    with pytest.raises(TokenError, match=r"^token expired$"):
        _verify(token, now=ISSUED + HOUR)


def test_a_token_without_expiry_is_still_good_decades_later() -> None:
    assert _verify(_token(expire_at=0), now=4_000_000_000).expire_at == 0


def test_an_expired_privilege_is_refused_while_the_token_itself_is_valid() -> None:
    token = _token(
        privileges={Privilege.PUBLISH_STREAM: ISSUED + 60, Privilege.SUBSCRIBE_STREAM: 0},
        expire_at=0,
    )

    assert _verify(token, privilege=Privilege.SUBSCRIBE_STREAM, now=ISSUED + 60).user_id == USER
    assert _verify(token, privilege=Privilege.PUBLISH_STREAM, now=ISSUED + 59).user_id == USER
    with pytest.raises(TokenError, match=r"^privilege PublishStream expired$"):
        _verify(token, privilege=Privilege.PUBLISH_STREAM, now=ISSUED + 60)


def test_a_token_for_another_room_is_refused() -> None:
    with pytest.raises(TokenError, match=r"^token is for room 'room-1', not 'room-2'$"):
        _verify(_token(), room_id="room-2")


def test_a_token_for_another_user_is_refused() -> None:
    with pytest.raises(TokenError, match=r"^token is for user 'user-é', not 'mallory'$"):
        _verify(_token(), user_id="mallory")


def test_a_token_for_another_app_is_refused() -> None:
    other_app = "ffffffffffffffffffffffff"

    with pytest.raises(TokenError, match=rf"^token is for app '{APP_ID}'$"):
        _verify(_token(), app_id=other_app)


def test_a_publish_only_token_cannot_subscribe() -> None:
    token = _token(privileges=[Privilege.PUBLISH_STREAM])

    with pytest.raises(TokenError, match=r"^token lacks privilege SubscribeStream$"):
        _verify(token, privilege=Privilege.SUBSCRIBE_STREAM)


def _valid() -> str:
    return _token()


_GARBAGE = [
    "",
    "001",
    "001" + APP_ID,
    "002" + _valid()[3:],
    "abc" + _valid()[3:],
    _valid()[:-4],
    _valid() + "AAAA",
    _valid()[:40] + "é" + _valid()[41:],
    "001" + APP_ID + "!!!!",
    "001" + APP_ID + "AAA",
    "001" + APP_ID + "AAAA",
    "001" + APP_ID + base64.b64encode(b"\xff\xff" + b"\x00" * 10).decode(),
    "001" + APP_ID + base64.b64encode(bytes(range(256))).decode(),
    "001" + APP_ID + base64.b64encode(b"not a token at all").decode(),
    "\x00" * 64,
    "🙂" * 40,
]


@pytest.mark.parametrize("garbage", _GARBAGE)
def test_garbage_is_always_a_token_error(garbage: str) -> None:
    with pytest.raises(TokenError):
        parse_token(garbage)
    with pytest.raises(TokenError):
        _verify(garbage)


def test_non_strings_are_a_token_error() -> None:
    for value in (None, 17, b"001"):
        with pytest.raises(TokenError):
            parse_token(value)  # type: ignore[arg-type]


def test_structural_damage_is_reported_as_malformed() -> None:
    _, msg, signature = parse_token(_token())
    room_at = 12  # after nonce, issued_at, expire_at
    bad_utf8 = msg[: room_at + 2] + b"\xff" + msg[room_at + 3 :]
    trailing = msg + b"\x00"
    short_sig = signature[:-1]

    for damaged in (
        _reassemble(bad_utf8, signature),
        _reassemble(trailing, signature),
        _reassemble(msg, short_sig),
        _reassemble(msg[:-1], signature),
    ):
        with pytest.raises(TokenError, match=r"^malformed token"):
            parse_token(damaged)


def test_out_of_order_or_repeated_privileges_are_malformed() -> None:
    head = struct.pack("<III", 1, ISSUED, 0)
    head += struct.pack("<H", len(ROOM)) + ROOM.encode()
    head += struct.pack("<H", 3) + b"bob"
    for entries in ([(4, 0), (0, 0)], [(1, 0), (1, 5)]):
        msg = head + struct.pack("<H", len(entries))
        msg += b"".join(struct.pack("<HI", k, v) for k, v in entries)
        signature = hmac.new(APP_KEY.encode(), msg, hashlib.sha256).digest()

        with pytest.raises(TokenError, match=r"^malformed token"):
            parse_token(_reassemble(msg, signature))


def test_random_strings_and_every_truncation_only_ever_raise_token_error() -> None:
    rng = random.Random(20240601)
    valid = _valid()
    candidates = [valid[:cut] for cut in range(len(valid))]
    for _ in range(300):
        content = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        candidates.append("001" + APP_ID + base64.b64encode(content).decode())
        chars = list(valid)
        chars[rng.randrange(27, len(chars))] = rng.choice("ABCxyz019+/=")
        candidates.append("".join(chars))

    for candidate in candidates:
        if candidate == valid:
            continue
        # A few mutations only touch unused padding bits and still verify; that is fine.
        with contextlib.suppress(TokenError):
            _verify(candidate)


def test_generate_refuses_arguments_it_cannot_encode() -> None:
    with pytest.raises(ValueError, match="app_id"):
        _token(app_id="short")
    with pytest.raises(ValueError, match="app_id"):
        _token(app_id=APP_ID + "8")
    with pytest.raises(ValueError, match="app_key"):
        _token(app_key="")
    with pytest.raises(ValueError, match="expire_at"):
        _token(expire_at=2**32)
    with pytest.raises(ValueError, match="nonce"):
        _token(nonce=-1)
    with pytest.raises(ValueError):
        _token(privileges=[7])
    with pytest.raises(ValueError):
        _token(room_id="r" * 70_000)


def test_golden_vector_pins_the_byte_layout() -> None:
    nonce = 0x01020304
    expire_at = ISSUED + 86_400
    publish_until = ISSUED + HOUR

    token = generate_token(
        app_id=APP_ID,
        app_key=APP_KEY,
        room_id=ROOM,
        user_id=USER,
        # SubscribeStream listed first: the map must still come out sorted by key.
        privileges={Privilege.SUBSCRIBE_STREAM: 0, Privilege.PUBLISH_STREAM: publish_until},
        expire_at=expire_at,
        issued_at=ISSUED,
        nonce=nonce,
    )

    # msg, field by field, little-endian.
    msg = b""
    msg += struct.pack("<I", nonce)
    msg += struct.pack("<I", ISSUED)
    msg += struct.pack("<I", expire_at)
    room = ROOM.encode("utf-8")
    msg += struct.pack("<H", len(room)) + room
    user = USER.encode("utf-8")
    assert len(user) == len(USER) + 1
    msg += struct.pack("<H", len(user)) + user
    msg += struct.pack("<H", 5)
    msg += struct.pack("<H", 0) + struct.pack("<I", publish_until)
    msg += struct.pack("<H", 1) + struct.pack("<I", publish_until)
    msg += struct.pack("<H", 2) + struct.pack("<I", publish_until)
    msg += struct.pack("<H", 3) + struct.pack("<I", publish_until)
    msg += struct.pack("<H", 4) + struct.pack("<I", 0)
    assert msg[:4] == bytes.fromhex("04030201")

    signature = hmac.new(APP_KEY.encode("utf-8"), msg, hashlib.sha256).digest()
    assert len(signature) == 32
    content = struct.pack("<H", len(msg)) + msg + struct.pack("<H", len(signature)) + signature
    expected = "001" + APP_ID + base64.b64encode(content).decode("ascii")

    assert token == expected
    # Literal produced byte-for-byte identically by Volcengine's reference generator.
    assert token == (
        "0010123456789abcdef01234567"
        "PQAEAwIBAPFTZYBCVWUGAHJvb20tMQcAdXNlci3DqQUAAAAQ/1NlAQAQ/1NlAgAQ/1NlAwAQ/1NlBAAAAAAA"
        "IADhrg1MKJVz+PgT1RZO9PBcc04dH5MUQNHWjX6zEcW7ZA=="
    )
    assert parse_token(token)[1:] == (msg, signature)
