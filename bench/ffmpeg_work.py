"""The ffmpeg CLI doing a task's media work: the reference a task's costs are set against.

It reads the same live source as the task and does what the worker does with it, into
the null muxer: remux copies the H.264 through ``h264_mp4toannexb`` and encodes the AAC
to Opus; transcode also decodes, runs the worker's filter chain (scale to fit, pad, fps,
yuv420p) and encodes with the worker's libx264 settings. The settings come from the
worker's own constants, so the reference follows when they change. The only work it
leaves out is the worker's pipe write, which is negligible next to the rest.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from bench.common import stop
from bench.live_relay import TaskMode
from relaystream.media.audio import OPUS_BITRATE_BPS, OPUS_RATE
from relaystream.media.video import KEYFRAME_INTERVAL_S


def ffmpeg_command(url: str, mode: TaskMode) -> list[str]:
    """The ffmpeg command line doing ``mode``'s work on ``url``."""
    command = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", url]
    command += ["-map", "0:v:0"]
    if not mode.transcodes:
        command += ["-c:v", "copy", "-bsf:v", "h264_mp4toannexb"]
    else:
        assert mode.width and mode.height and mode.frame_rate, "a transcode has a size and rate"
        w, h, rate = mode.width, mode.height, mode.frame_rate
        chain = (
            f"scale={w}:{h}:force_original_aspect_ratio=decrease,"
            f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,fps={rate},format=yuv420p"
        )
        x264_params = "repeat-headers=1:bframes=0"
        command += ["-vf", chain, "-c:v", "libx264", "-preset", "veryfast"]
        command += ["-tune", "zerolatency", "-profile:v", "baseline"]
        command += ["-g", str(rate * KEYFRAME_INTERVAL_S)]
        if mode.bitrate_kbps:
            kbps = mode.bitrate_kbps
            command += ["-b:v", f"{kbps}k"]
            x264_params += f":vbv-maxrate={kbps}:vbv-bufsize={kbps}"
        command += ["-x264-params", x264_params]
    command += ["-map", "0:a:0", "-c:a", "libopus", "-ar", str(OPUS_RATE), "-ac", "2"]
    command += ["-b:a", f"{OPUS_BITRATE_BPS // 1000}k"]
    return [*command, "-f", "null", "-"]


@contextlib.contextmanager
def ffmpeg_doing(url: str, mode: TaskMode) -> Iterator[subprocess.Popen[bytes]]:
    """ffmpeg doing ``mode``'s work on ``url`` until exit; raises if it stopped early."""
    process = subprocess.Popen(
        ffmpeg_command(url, mode),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield process
        if process.poll() is not None:
            assert process.stderr is not None
            error = process.stderr.read().decode(errors="replace").strip()
            raise RuntimeError(f"the ffmpeg reference exited with {process.returncode}: {error}")
    finally:
        stop(process)
        if process.stderr is not None:
            process.stderr.close()
