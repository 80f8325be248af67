"""Request bodies of the actions, in Volcengine's PascalCase, and their validation.

Field names here are the wire names on purpose: this module is the only place that
knows them. ``parse`` turns a pydantic failure into the Volcengine error that names the
field (``MissingParameter`` / ``InvalidParameter``).
"""

from __future__ import annotations

import re
import types
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from relaystream.api.errors import ApiError, invalid_parameter, missing_parameter

ID_PATTERN = r"^[a-zA-Z0-9_@\-\.]{1,128}$"

UINT32_MAX = 2**32 - 1  # Unix seconds as Volcengine stores them

Id = Annotated[str, Field(pattern=ID_PATTERN)]


class _Body(BaseModel):
    # Unknown fields are ignored, as Volcengine does, so newer SDKs keep working; known
    # ones must have their JSON type ("30" is not a number, "yes" not a boolean).
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


def _even(value: int | None) -> int | None:
    """Odd sizes are rounded down to even: H.264 4:2:0 needs even dimensions."""
    return value - value % 2 if value is not None else None


class StartControl(_Body):
    StreamUrl: Annotated[str, Field(min_length=1, max_length=4096)]
    # Ranges rather than Literal[0, 1]: a Literal compares by equality, so true and 1.0
    # would pass for 1; a strict int refuses both.
    MediaType: Annotated[int, Field(ge=0, le=2)] = 0
    StreamMode: Annotated[int, Field(ge=0, le=1)] = 0
    StartTimeStamp: Annotated[int, Field(ge=0, le=UINT32_MAX)] = 0
    Loop: bool = False
    VideoWidth: Annotated[int | None, Field(ge=16, le=1920)] = None
    VideoHeight: Annotated[int | None, Field(ge=16, le=1920)] = None
    FrameRate: Annotated[int, Field(ge=1, le=30)] = 15
    Bitrate: Annotated[int | None, Field(gt=0)] = None

    _round_sizes = field_validator("VideoWidth", "VideoHeight")(_even)


class StartRelayStreamRequest(_Body):
    AppId: Id
    BusinessId: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_@\-\.]{0,128}$")] = ""
    RoomId: Id
    TaskId: Id
    UserId: Id
    MaxIdleTime: Annotated[int, Field(ge=5, le=600)] = 300
    Token: Annotated[str, Field(min_length=1, max_length=4096)]
    Control: StartControl


class TaskKeyRequest(_Body):
    """StopRelayStream and GetRelayStream: the three ids that name a task."""

    AppId: Id
    RoomId: Id
    TaskId: Id


class UpdateControl(_Body):
    """What an Update may change (SPEC §2); absent fields keep their value."""

    StreamUrl: Annotated[str | None, Field(min_length=1, max_length=4096)] = None
    MediaType: Annotated[int | None, Field(ge=0, le=2)] = None
    StreamMode: Annotated[int | None, Field(ge=0, le=1)] = None
    VideoWidth: Annotated[int | None, Field(ge=16, le=1920)] = None
    VideoHeight: Annotated[int | None, Field(ge=16, le=1920)] = None
    FrameRate: Annotated[int | None, Field(ge=1, le=30)] = None
    Bitrate: Annotated[int | None, Field(gt=0)] = None

    _round_sizes = field_validator("VideoWidth", "VideoHeight")(_even)


class UpdateRelayStreamRequest(_Body):
    AppId: Id
    RoomId: Id
    TaskId: Id
    # Each field typed here; the merged Control is then checked as a Start's is.
    Control: UpdateControl


class ListRelayStreamRequest(_Body):
    AppId: Id
    RoomId: Annotated[str | None, Field(pattern=ID_PATTERN)] = None  # None: every room
    Offset: Annotated[int, Field(ge=0, le=9999)] = 0
    Limit: Annotated[int, Field(ge=1, le=100)] = 10
    Order: Annotated[int, Field(ge=0, le=1)] = 0  # 0 newest first, 1 oldest first


class ListCallbackDeliveriesRequest(_Body):
    """An AppId's callback events; by default those not delivered (pending, failed)."""

    AppId: Id
    State: Literal["pending", "failed", "delivered"] | None = None  # None: pending + failed
    Limit: Annotated[int, Field(ge=1, le=100)] = 50


class CallbackEventsRequest(_Body):
    """RedeliverCallbacks and DiscardCallbacks: the AppId's failed events, or the ones
    named (at most 100)."""

    AppId: Id
    EventIds: Annotated[list[Id] | None, Field(min_length=1, max_length=100)] = None


class QueryParams(dict[str, str]):
    """Parameters of a GET, all strings: numbers arrive as decimal text."""


_SECRET_FIELDS = frozenset({"Token"})

Body = TypeVar("Body", bound=BaseModel)


def parse(model: type[Body], data: Any, *, location: str = "") -> Body:
    """``data`` validated as ``model``; errors name fields under ``location`` (e.g. a
    Control checked on its own still reports ``Control.VideoWidth``)."""
    if not isinstance(data, dict):
        raise invalid_parameter(location or "body", "must be a JSON object")
    if isinstance(data, QueryParams):
        data = _numbers_from_text(model, data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _to_api_error(exc, location) from None


# Decimal text that is converted to a number; anything else is left as text, so that
# validation refuses it naming the field. The bound keeps int() cheap.
_DECIMAL = re.compile(r"[+-]?[0-9]{1,20}")


def _numbers_from_text(model: type[BaseModel], params: QueryParams) -> dict[str, Any]:
    converted: dict[str, Any] = dict(params)
    for name, info in model.model_fields.items():
        value = params.get(name)
        if value is not None and _takes_int(info.annotation) and _DECIMAL.fullmatch(value):
            converted[name] = int(value)
    return converted


def _takes_int(annotation: Any) -> bool:
    if annotation is int:
        return True
    origin = get_origin(annotation)
    if origin is Literal:
        return all(isinstance(v, int) and not isinstance(v, bool) for v in get_args(annotation))
    if origin in (Union, types.UnionType, Annotated):
        return any(_takes_int(arg) for arg in get_args(annotation))
    return False


def _to_api_error(exc: ValidationError, location: str) -> ApiError:
    error = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in (location, *error["loc"]) if part) or "body"
    if error["type"] == "missing":
        return missing_parameter(field)
    if field in _SECRET_FIELDS:
        return invalid_parameter(field, error["msg"])
    value = error.get("input")
    shown = repr(value) if isinstance(value, int | float | bool) else repr(str(value)[:64])
    return invalid_parameter(field, f"{error['msg']} (got {shown})")
