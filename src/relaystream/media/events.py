"""What a media worker and the server say to each other besides packets.

Worker → server: typed events (``SourceOpened``, ``SourceProgress``, ``SourceEnded``,
``SourceFailed``), carried as JSON objects tagged with ``"type"`` inside wire.py's
frames. Server → worker: ``WorkerCommand`` lines on the worker's stdin after the spec.

A failure says whether it is worth retrying: the run (tasks/runner.py) decides what to
do with that, the worker only knows its source.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class VideoInput:
    """The source's video track as the worker found it."""

    codec: str
    width: int
    height: int
    frame_rate: float | None = None
    bitrate_kbps: int | None = None
    b_frames: bool = False


@dataclass(frozen=True)
class AudioInput:
    """The source's audio track as the worker found it."""

    codec: str
    sample_rate: int
    channels: int
    bitrate_kbps: int | None = None


@dataclass(frozen=True)
class VideoOutput:
    """What the worker sends into the room for video, and why it re-encodes if it does."""

    transcoded: bool
    reason: str = ""  # "StreamMode" (asked for), "BFrames" (remux impossible), ...
    # Transcoded only: the encoded picture and rate.
    width: int | None = None
    height: int | None = None
    frame_rate: int | None = None


@dataclass(frozen=True)
class SourceOpened:
    """The source is open and its tracks are chosen; media follows."""

    video: VideoInput | None = None
    audio: AudioInput | None = None
    video_output: VideoOutput | None = None
    # A finite source (known duration, or an HLS playlist with #EXT-X-ENDLIST) is VOD:
    # it can loop, and a dropped connection resumes at its position.
    live: bool = True
    duration_s: float | None = None


@dataclass(frozen=True)
class TrackCounters:
    packets: int = 0
    bytes: int = 0
    # Measured over the media time read so far (the source's own figure is in *Input).
    bitrate_kbps: int | None = None


@dataclass(frozen=True)
class SourceProgress:
    """Periodic counters, every ~2 s.

    ``position_s`` is the position in the source, within the current loop pass: where a
    relaunched worker should resume a VOD (``PipelineSpec.start_position_s``).
    """

    position_s: float = 0.0
    video: TrackCounters | None = None
    audio: TrackCounters | None = None
    max_keyframe_interval_s: float = 0.0
    loops: int = 0
    # Timestamp jumps in the source that were closed up (never filled).
    discontinuities: int = 0
    # The worker's resident memory, as the worker sees it.
    memory_mb: float | None = None


@dataclass(frozen=True)
class SourceEnded:
    """A finite source played to its end (and was not asked to loop)."""


@dataclass(frozen=True)
class SourceFailed:
    """The source cannot be relayed now.

    ``retryable``: a refused connection, a timeout, an HTTP 5xx, a live stream that
    dropped — worth reconnecting. Not retryable: an HTTP 4xx, an unsupported codec, an
    address the policy refuses, a limit the source exceeds.
    """

    detail: str
    retryable: bool = False


WorkerEvent = SourceOpened | SourceProgress | SourceEnded | SourceFailed

_EVENT_TYPES: dict[str, type[Any]] = {
    "opened": SourceOpened,
    "progress": SourceProgress,
    "ended": SourceEnded,
    "failed": SourceFailed,
}
_TYPE_NAMES = {cls: name for name, cls in _EVENT_TYPES.items()}
# Nested dataclass fields, by (event class, field name): how to rebuild them from JSON.
_NESTED: dict[str, type[Any]] = {
    "video": VideoInput,
    "audio": AudioInput,
    "video_output": VideoOutput,
}
_NESTED_PROGRESS: dict[str, type[Any]] = {"video": TrackCounters, "audio": TrackCounters}


class EventFormatError(ValueError):
    """A JSON object that is not a known worker event."""


def event_to_json(event: WorkerEvent) -> dict[str, Any]:
    return {"type": _TYPE_NAMES[type(event)], **asdict(event)}


def event_from_json(data: dict[str, Any]) -> WorkerEvent:
    data = dict(data)
    cls = _EVENT_TYPES.get(str(data.pop("type", "")))
    if cls is None:
        raise EventFormatError("unknown event type")
    nested = _NESTED_PROGRESS if cls is SourceProgress else _NESTED
    try:
        return cls(**{name: _build(nested.get(name), value) for name, value in data.items()})  # type: ignore[no-any-return]
    except (TypeError, ValueError) as exc:
        raise EventFormatError(f"bad {cls.__name__}: {exc}") from None


def _build(cls: type[Any] | None, value: Any) -> Any:
    if cls is None or value is None:
        return value
    if not isinstance(value, dict):
        raise TypeError(f"{cls.__name__} must be an object")
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in value.items() if k in known})


class CommandName(StrEnum):
    KEYFRAME = "keyframe"  # a viewer needs a picture: encode a keyframe now (transcode)
    STOP = "stop"  # finish cleanly: stop reading the source, flush, exit
    # {"deadline": unix seconds}: the node's lease on the task; exit when it passes
    # without a newer one (fencing: the node may be frozen or cut off).
    LEASE = "lease"


@dataclass(frozen=True)
class WorkerCommand:
    name: CommandName
    args: dict[str, Any] = field(default_factory=dict)

    def to_line(self) -> bytes:
        return json.dumps({"command": self.name.value, **self.args}).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> WorkerCommand:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise EventFormatError("a command is a JSON object")
        try:
            name = CommandName(data.pop("command"))
        except (KeyError, ValueError) as exc:
            raise EventFormatError(f"unknown command: {exc}") from None
        return cls(name, data)


def lease_command(deadline_s: float) -> WorkerCommand:
    return WorkerCommand(CommandName.LEASE, {"deadline": deadline_s})
