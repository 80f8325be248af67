"""A run's live statistics as JSON, so the node that runs a task can leave them in the
store and any node can answer GetRelayStream with them.

The owner writes a snapshot of each of its runs every lease round (``renew_s``); a Get
on another node shows the latest one, at most that old. Monotonic times do not travel
between processes: the snapshot carries how long ago media started instead.
"""

from __future__ import annotations

import time
from typing import Any

from relaystream.media.events import (
    EventFormatError,
    SourceOpened,
    SourceProgress,
    event_from_json,
    event_to_json,
)
from relaystream.tasks.runner import RunStats


def stats_to_json(stats: RunStats) -> dict[str, Any]:
    since = None if stats.first_packet_at is None else time.monotonic() - stats.first_packet_at
    return {
        "opened": event_to_json(stats.opened) if stats.opened else None,
        "progress": event_to_json(stats.progress) if stats.progress else None,
        "video_frames_sent": stats.video_frames_sent,
        "audio_frames_sent": stats.audio_frames_sent,
        "bytes_sent": stats.bytes_sent,
        "media_for_s": since,
        "reconnects": stats.reconnects,
        "last_error": stats.last_error,
        "worker_cpu_s": stats.worker_cpu_s,
        "worker_memory_bytes": stats.worker_memory_bytes,
    }


def stats_from_json(data: dict[str, Any], age_s: float) -> RunStats | None:
    """The stats a snapshot ``age_s`` old describes; None if it is not one."""
    try:
        opened = event_from_json(data["opened"]) if data.get("opened") else None
        progress = event_from_json(data["progress"]) if data.get("progress") else None
        since = data.get("media_for_s")
        return RunStats(
            opened=opened if isinstance(opened, SourceOpened) else None,
            progress=progress if isinstance(progress, SourceProgress) else None,
            video_frames_sent=int(data["video_frames_sent"]),
            audio_frames_sent=int(data["audio_frames_sent"]),
            bytes_sent=int(data["bytes_sent"]),
            first_packet_at=None if since is None else time.monotonic() - float(since) - age_s,
            reconnects=int(data["reconnects"]),
            last_error=str(data["last_error"]),
            worker_cpu_s=float(data["worker_cpu_s"]),
            worker_memory_bytes=int(data["worker_memory_bytes"]),
        )
    except (KeyError, TypeError, ValueError, EventFormatError):
        return None
