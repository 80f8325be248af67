"""HLS sources made on the fly: a VOD playlist, and a live one that slides with time."""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web

from tests.support.net import serve_app

SEGMENT_S = 1
LIVE_WINDOW = 4  # segments listed at once, as a live packager does


def segment(source: Path, directory: Path) -> Path:
    """Cut ``source`` (H.264 + AAC) into 1 s MPEG-TS segments with a VOD playlist."""
    directory.mkdir(parents=True, exist_ok=True)
    playlist = directory / "index.m3u8"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(source),
            "-c",
            "copy",
            "-f",
            "hls",
            "-hls_time",
            str(SEGMENT_S),
            "-hls_list_size",
            "0",
            "-hls_playlist_type",
            "vod",
            "-hls_segment_filename",
            str(directory / "seg%03d.ts"),
            str(playlist),
        ],
        check=True,
    )
    return playlist


def live_playlist(segments: list[str], durations: list[float], elapsed_s: float) -> str:
    """The playlist a live packager shows ``elapsed_s`` after it started: the newest
    ``LIVE_WINDOW`` segments, no end tag. The segments repeat for ever, each repeat
    marked as a discontinuity (its timestamps start over)."""
    available = LIVE_WINDOW + math.floor(elapsed_s / SEGMENT_S)
    first = available - LIVE_WINDOW
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{math.ceil(max(durations))}",
        f"#EXT-X-MEDIA-SEQUENCE:{first}",
        f"#EXT-X-DISCONTINUITY-SEQUENCE:{first // len(segments)}",
    ]
    for sequence in range(first, available):
        index = sequence % len(segments)
        if index == 0 and sequence > first:
            lines.append("#EXT-X-DISCONTINUITY")
        lines += [f"#EXTINF:{durations[index]:.3f},", segments[index]]
    return "\n".join(lines) + "\n"


@contextmanager
def hls_server(vod_playlist: Path) -> Iterator[str]:
    """Serve the playlist's directory; yields the base URL.

    ``/vod/index.m3u8`` is the VOD playlist as made; ``/live/index.m3u8`` shows the same
    segments as a live stream that started when the server did.
    """
    root = vod_playlist.parent
    entries = vod_playlist.read_text().splitlines()
    durations = [float(e.split(":")[1].rstrip(",")) for e in entries if e.startswith("#EXTINF")]
    segments = [e for e in entries if e and not e.startswith("#")]
    started = time.monotonic()

    async def live(_: web.Request) -> web.Response:
        text = live_playlist(segments, durations, time.monotonic() - started)
        return web.Response(text=text, content_type="application/vnd.apple.mpegurl")

    app = web.Application()
    app.router.add_get("/live/index.m3u8", live)
    app.router.add_static("/live/", root)
    app.router.add_static("/vod/", root)
    with serve_app(app) as base_url:
        yield base_url
