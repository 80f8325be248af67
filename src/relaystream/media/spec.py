"""What a media worker is asked to do, as plain data that crosses the process boundary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any


class MediaType(IntEnum):
    """Which tracks a relay publishes (Volcengine ``MediaType``)."""

    AUDIO_AND_VIDEO = 0
    AUDIO_ONLY = 1
    VIDEO_ONLY = 2

    @property
    def wants_audio(self) -> bool:
        return self is not MediaType.VIDEO_ONLY

    @property
    def wants_video(self) -> bool:
        return self is not MediaType.AUDIO_ONLY


class StreamMode(IntEnum):
    """How video is carried (Volcengine ``StreamMode``)."""

    TRANSCODE = 0
    REMUX = 1


@dataclass(frozen=True)
class PipelineSpec:
    """One relay's media settings; everything the worker process needs."""

    url: str
    media_type: MediaType = MediaType.AUDIO_AND_VIDEO
    stream_mode: StreamMode = StreamMode.TRANSCODE
    video_width: int | None = None
    video_height: int | None = None
    frame_rate: int = 15
    bitrate_kbps: int | None = None
    allow_private_sources: bool = False
    # URL prefixes the operator trusts even when they resolve to private addresses
    # (the server's own built-in test stream).
    trusted_url_prefixes: tuple[str, ...] = ()
    # The operator's hosts table (name → address), allowed like a trusted prefix.
    hosts: dict[str, str] = field(default_factory=dict)
    open_timeout_s: float = 10.0
    # VOD only: start again from the beginning at the end, pts still rising.
    loop: bool = False
    # VOD only: where to start, so a relaunched worker resumes near its last position.
    start_position_s: float = 0.0
    # https and rtmps certificates are checked against the system CA bundle unless the
    # app turns it off (AppConfig.tls_verify).
    tls_verify: bool = True
    # Transcoding a larger picture is refused: one huge source would starve every task.
    max_transcode_width: int = 4096
    max_transcode_height: int = 2160
    # The server kills a worker whose resident memory passes this (limits.py).
    memory_limit_mb: int | None = 1024

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> PipelineSpec:
        data = dict(data)
        data["media_type"] = MediaType(data["media_type"])
        data["stream_mode"] = StreamMode(data["stream_mode"])
        data["trusted_url_prefixes"] = tuple(data.get("trusted_url_prefixes", ()))
        return cls(**data)
