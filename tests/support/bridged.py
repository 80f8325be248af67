"""DASH and SRT sources made on the fly with the ffmpeg CLI, all on 127.0.0.1."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SEGMENT_S = 1


def _ffmpeg(*args: str) -> list[str]:
    return ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]


def make_dash_vod(source: Path, directory: Path) -> Path:
    """A static DASH presentation of ``source`` (1 s segments); returns the manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / "manifest.mpd"
    subprocess.run(
        _ffmpeg(
            "-i",
            str(source),
            "-c",
            "copy",
            "-f",
            "dash",
            "-seg_duration",
            str(SEGMENT_S),
            str(manifest),
        ),
        check=True,
    )
    return manifest


@contextmanager
def _running(command: list[str], ready: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while ready is not None and not ready.exists():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{command[0]} did not start: {process.returncode}")
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def dash_live_packager(source: Path, directory: Path) -> Iterator[Path]:
    """A live DASH packager looping ``source`` in real time; yields the manifest path."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / "manifest.mpd"
    command = _ffmpeg(
        "-re",
        "-stream_loop",
        "-1",
        "-i",
        str(source),
        "-c",
        "copy",
        "-f",
        "dash",
        "-seg_duration",
        str(SEGMENT_S),
        "-window_size",
        "5",
        "-extra_window_size",
        "2",
        "-use_timeline",
        "1",
        "-use_template",
        "1",
        str(manifest),
    )
    with _running(command, ready=manifest):
        yield manifest


@contextmanager
def srt_sender(source: Path, port: int) -> Iterator[str]:
    """An SRT listener on 127.0.0.1 sending ``source`` in real time, looping, as MPEG-TS;
    yields the URL a caller connects to."""
    command = _ffmpeg(
        "-re",
        "-stream_loop",
        "-1",
        "-i",
        str(source),
        "-c",
        "copy",
        "-f",
        "mpegts",
        f"srt://127.0.0.1:{port}?mode=listener",
    )
    with _running(command):
        yield f"srt://127.0.0.1:{port}"
