"""The Control on the wire: Volcengine's names for the fields of ``CONTROL_FIELDS``.

Start and Update share one path from wire to task: a Control as a Start body would
carry it is validated by ``StartControl`` and turned into a ``RelayControl`` here, so an
Update that merges new fields into a stored Control meets exactly the checks and the
error messages of a Start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from relaystream.api.errors import invalid_parameter, missing_parameter
from relaystream.api.models import StartControl, parse
from relaystream.media.source import SourceError, check_scheme
from relaystream.media.spec import StreamMode
from relaystream.tasks.control import (
    CONTROL_FIELDS,
    RelayControl,
    control_from_plain,
    control_to_plain,
)

WIRE_NAMES: Final[Mapping[str, str]] = {
    "stream_url": "StreamUrl",
    "media_type": "MediaType",
    "stream_mode": "StreamMode",
    "start_timestamp_s": "StartTimeStamp",
    "loop": "Loop",
    "video_width": "VideoWidth",
    "video_height": "VideoHeight",
    "frame_rate": "FrameRate",
    "bitrate_kbps": "Bitrate",
}

UPDATABLE_WIRE_NAMES: Final = frozenset(WIRE_NAMES[f.name] for f in CONTROL_FIELDS if f.updatable)

# Shown as 0 when unset, as Volcengine does.
_ZERO_WHEN_UNSET: Final = frozenset({"video_width", "video_height", "bitrate_kbps"})


def control_from_wire(control: StartControl) -> RelayControl:
    """A validated wire Control as the task keeps it; the checks that span fields."""
    try:
        check_scheme(control.StreamUrl)
    except SourceError as exc:
        raise invalid_parameter("Control.StreamUrl", exc.detail) from None
    relay = control_from_plain(
        {f.name: getattr(control, WIRE_NAMES[f.name]) for f in CONTROL_FIELDS}
    )
    if relay.stream_mode is StreamMode.TRANSCODE and relay.media_type.wants_video:
        for name in ("video_width", "video_height"):
            if getattr(relay, name) is None:
                field = f"Control.{WIRE_NAMES[name]}"
                raise missing_parameter(f"{field} (required when StreamMode is 0)")
    return relay


def merged_control(stored: RelayControl, changes: Mapping[str, Any]) -> RelayControl:
    """``stored`` with the updatable wire fields in ``changes`` replaced, validated as a
    Start's Control is."""
    wire = {
        WIRE_NAMES[name]: value
        for name, value in control_to_plain(stored).items()
        if value is not None
    }
    wire.update({name: value for name, value in changes.items() if name in UPDATABLE_WIRE_NAMES})
    return control_from_wire(parse(StartControl, wire, location="Control"))


def control_to_wire(control: RelayControl) -> dict[str, Any]:
    """Every Control field under its wire name, as List and Get show them."""
    return {
        WIRE_NAMES[name]: (0 if value is None and name in _ZERO_WHEN_UNSET else value)
        for name, value in control_to_plain(control).items()
    }
