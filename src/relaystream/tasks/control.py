"""A task's Control (what to relay and how) and the one table of its fields.

``CONTROL_FIELDS`` says, for each ``RelayControl`` field, which ``PipelineSpec`` field
the media worker gets it as (None when the run uses it itself), whether
UpdateRelayStream may change it, and how its stored (JSON) value becomes typed again.
The task's document, the pipeline spec and the API (which keeps the wire names beside
this table, in ``api/control.py``) all go through it, so a new Control field is added
in one row here instead of by hand in four places.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from relaystream.media.spec import MediaType, StreamMode


@dataclass(frozen=True)
class RelayControl:
    """What to relay and how (Volcengine ``Control``)."""

    stream_url: str
    media_type: MediaType = MediaType.AUDIO_AND_VIDEO
    stream_mode: StreamMode = StreamMode.TRANSCODE
    start_timestamp_s: int = 0
    loop: bool = False
    video_width: int | None = None
    video_height: int | None = None
    frame_rate: int = 15
    bitrate_kbps: int | None = None


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class ControlField:
    name: str  # the RelayControl attribute
    spec_name: str | None  # the PipelineSpec attribute; None: not the worker's business
    updatable: bool  # UpdateRelayStream may change it
    from_plain: Callable[[Any], Any] = _same  # a stored JSON value → the typed value


CONTROL_FIELDS: Final[tuple[ControlField, ...]] = (
    ControlField("stream_url", "url", updatable=True),
    ControlField("media_type", "media_type", updatable=True, from_plain=MediaType),
    ControlField("stream_mode", "stream_mode", updatable=True, from_plain=StreamMode),
    # The run waits for the start time itself; the worker starts when it is told to.
    ControlField("start_timestamp_s", None, updatable=False),
    # The worker loops in place (a new worker per loop would show a gap).
    ControlField("loop", "loop", updatable=False),
    ControlField("video_width", "video_width", updatable=True),
    ControlField("video_height", "video_height", updatable=True),
    ControlField("frame_rate", "frame_rate", updatable=True),
    ControlField("bitrate_kbps", "bitrate_kbps", updatable=True),
)

UPDATABLE_FIELDS: Final = tuple(f.name for f in CONTROL_FIELDS if f.updatable)


def control_from_plain(values: Mapping[str, Any]) -> RelayControl:
    """A Control from plain values (as stored, or as the API parsed them)."""
    return RelayControl(
        **{f.name: f.from_plain(values[f.name]) for f in CONTROL_FIELDS if f.name in values}
    )


def control_to_plain(control: RelayControl) -> dict[str, Any]:
    """Every field of ``control`` as a JSON-ready value (enums as their numbers)."""
    plain: dict[str, Any] = {}
    for f in CONTROL_FIELDS:
        value = getattr(control, f.name)
        plain[f.name] = int(value) if isinstance(value, MediaType | StreamMode) else value
    return plain


def pipeline_fields(control: RelayControl) -> dict[str, Any]:
    """The ``PipelineSpec`` keyword arguments that come from ``control``."""
    return {f.spec_name: getattr(control, f.name) for f in CONTROL_FIELDS if f.spec_name}


def _check_table() -> None:
    # A RelayControl field missing from the table would silently never reach the
    # worker or the API; fail at import instead.
    declared = {f.name for f in fields(RelayControl)}
    listed = [f.name for f in CONTROL_FIELDS]
    if sorted(listed) != sorted(declared):
        raise RuntimeError(f"CONTROL_FIELDS {listed} do not match RelayControl {declared}")


_check_table()
