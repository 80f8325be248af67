"""CPU cost of a media worker against the ffmpeg CLI doing the same work on the same source.

Run from the repository root::

    .venv/bin/python -m bench.media_cpu

A 20 s 720p30 H.264 (~2.5 Mbit/s) + AAC MP4 is served over HTTP on 127.0.0.1. Each mode
runs the real worker (``python -m relaystream.media.worker``, a PipelineSpec on stdin,
its stdout read and discarded) and then ``ffmpeg -re`` with the closest equivalent
work; both play the clip in real time. CPU is user + system time of the process and all
its threads, over a steady window that leaves out start-up (imports, probing) and the
end; the whole-run figure (``wait4`` rusage) includes them. Takes about 1.5 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO

from tests.support.net import static_http_server

from bench.common import (
    CLIP,
    CLIP_VIDEO_KBPS,
    cpu_seconds,
    exit_on_sigterm,
    peak_rss_mib,
    reap,
    reference_clip,
    stop,
    table,
    watch_peak_rss,
)
from relaystream.media.spec import MediaType, PipelineSpec, StreamMode
from relaystream.media.wire import MessageKind

WARMUP_S = 3.0  # left out of the steady window: interpreter start-up, imports, probing
TAIL_S = 2.0  # left out at the end: the last packets, flushing, exit
TRANSCODE_SIZE = (640, 480)
TRANSCODE_FPS = 15
WORKER_COMMAND = [sys.executable, "-m", "relaystream.media.worker"]
OPUS = ["-c:a", "libopus", "-ar", "48000", "-ac", "2", "-b:a", "64k"]

# The worker's message header (relaystream.media.wire): kind, flags, pts, length.
_HEADER = struct.Struct("!BBqI")


@dataclass
class WireCounts:
    """What a worker wrote on stdout, read and thrown away as it arrives."""

    video_packets: int = 0
    audio_packets: int = 0
    payload_bytes: int = 0
    events: list[str] = field(default_factory=list)


def drain_worker_output(stream: IO[bytes], counts: WireCounts) -> None:
    while True:
        header = stream.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        kind, _flags, _pts, length = _HEADER.unpack(header)
        payload = stream.read(length)
        counts.payload_bytes += len(payload)
        if kind == MessageKind.VIDEO:
            counts.video_packets += 1
        elif kind == MessageKind.AUDIO:
            counts.audio_packets += 1
        else:
            event = json.loads(payload)
            if event["type"] in {"ended", "error"}:
                counts.events.append(f"{event['type']} {event.get('detail', '')}".strip())


def drain_text(stream: IO[bytes], lines: list[str]) -> None:
    for raw in stream:
        lines.append(raw.decode(errors="replace").rstrip())


@dataclass(frozen=True)
class Measured:
    steady_cpu_pct: float
    whole_cpu_per_media_s: float
    max_rss_mib: float
    exit_code: int
    note: str


def measure(command: list[str], stdin_data: bytes | None, *, is_worker: bool) -> Measured:
    """Run ``command`` to its end (the clip plays in real time) and account its CPU."""
    media_s = CLIP.duration_s
    counts = WireCounts()
    stderr_lines: list[str] = []
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE if is_worker else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    readers = [threading.Thread(target=drain_text, args=(process.stderr, stderr_lines))]
    if is_worker:
        readers.append(threading.Thread(target=drain_worker_output, args=(process.stdout, counts)))
    for reader in readers:
        reader.daemon = True
        reader.start()
    try:
        assert process.stdin is not None
        if stdin_data:
            # The worker runs until its stdin closes: the spec line now, EOF after the window.
            process.stdin.write(stdin_data + b"\n")
            process.stdin.flush()
        else:
            process.stdin.close()
        window_start, window_end = started + WARMUP_S, started + media_s - TAIL_S
        time.sleep(max(0.0, window_start - time.monotonic()))
        cpu_start, wall_start = cpu_seconds(process.pid), time.monotonic()
        time.sleep(max(0.0, window_end - time.monotonic()))
        if process.poll() is not None:
            raise RuntimeError(f"{command[0]} exited before the end of the window")
        cpu_end, wall_end = cpu_seconds(process.pid), time.monotonic()
        if is_worker:
            max_rss_mib = peak_rss_mib(process.pid)
            process.stdin.close()
        else:
            max_rss_mib = watch_peak_rss(process, timeout_s=30)
        usage = reap(process, timeout_s=30)
        life_s = time.monotonic() - started
    finally:
        stop(process)
    for reader in readers:
        reader.join(5)
    if usage.exit_code != 0 or usage.timed_out:
        tail = " | ".join(stderr_lines[-3:])
        raise RuntimeError(f"{command[0]} failed (exit {usage.exit_code}): {tail}")
    if is_worker:
        note = (
            f"{counts.video_packets} video + {counts.audio_packets} audio packets out, "
            f"{counts.payload_bytes / 1e6:.1f} MB, {', '.join(counts.events) or 'no end event'}"
        )
    else:
        note = "exit 0"
    return Measured(
        steady_cpu_pct=100 * (cpu_end - cpu_start) / (wall_end - wall_start),
        whole_cpu_per_media_s=usage.cpu_s / life_s,
        max_rss_mib=max_rss_mib,
        exit_code=usage.exit_code,
        note=note,
    )


@dataclass(frozen=True)
class Mode:
    name: str
    stream_mode: StreamMode
    media_type: MediaType = MediaType.AUDIO_AND_VIDEO


MODES = {
    mode.name: mode
    for mode in (
        Mode("remux", StreamMode.REMUX),
        Mode("transcode", StreamMode.TRANSCODE),
        # Not run by default: remux without the audio, to set against `ffmpeg -c copy`.
        Mode("remux-video", StreamMode.REMUX, MediaType.VIDEO_ONLY),
    )
}


def worker_spec(url: str, mode: Mode) -> PipelineSpec:
    width, height = TRANSCODE_SIZE
    transcode = mode.stream_mode is StreamMode.TRANSCODE
    return PipelineSpec(
        url=url,
        media_type=mode.media_type,
        stream_mode=mode.stream_mode,
        video_width=width if transcode else None,
        video_height=height if transcode else None,
        frame_rate=TRANSCODE_FPS,
        allow_private_sources=True,
    )


def ffmpeg_command(url: str, mode: Mode) -> list[str]:
    """ffmpeg doing what the worker does in ``mode``, writing to the null muxer.

    Remux: copy H.264 with the same bitstream filter (MP4 -> Annex B) and encode AAC to
    Opus 48 kHz stereo 64 kbit/s. Transcode: the worker's filter chain (scale to fit,
    pad, fps, yuv420p) and its libx264 settings (veryfast, zerolatency, baseline, GOP of
    2 s, in-band SPS/PPS, no B-frames), plus the same Opus. The only work left out is
    writing the packets to a pipe, which the worker does and the null muxer does not.
    """
    command = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-i", url]
    command += ["-map", "0:v:0"]
    if mode.stream_mode is StreamMode.REMUX:
        command += ["-c:v", "copy", "-bsf:v", "h264_mp4toannexb"]
    else:
        w, h = TRANSCODE_SIZE
        scale = (
            f"scale={w}:{h}:force_original_aspect_ratio=decrease,"
            f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,fps={TRANSCODE_FPS},format=yuv420p"
        )
        command += ["-vf", scale, "-c:v", "libx264", "-preset", "veryfast"]
        command += ["-tune", "zerolatency", "-profile:v", "baseline"]
        command += ["-g", str(2 * TRANSCODE_FPS), "-x264-params", "repeat-headers=1:bframes=0"]
    if mode.media_type.wants_audio:
        command += ["-map", "0:a:0", *OPUS]
    return [*command, "-f", "null", "-"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh-clip", action="store_true", help="remake the cached clip")
    parser.add_argument(
        "--modes",
        default="remux,transcode",
        help=f"comma-separated, from: {', '.join(MODES)} (default: remux,transcode)",
    )
    args = parser.parse_args()
    exit_on_sigterm()
    modes = [MODES[name.strip()] for name in args.modes.split(",")]

    made_at = time.monotonic()
    clip, made = reference_clip(fresh=args.fresh_clip)
    how = f"made in {time.monotonic() - made_at:.0f} s" if made else "cached"
    print(
        f"source: {CLIP.width}x{CLIP.height}@{CLIP.frame_rate} H.264 ~{CLIP_VIDEO_KBPS} kbit/s"
        f" + AAC, {CLIP.duration_s:.0f} s MP4 over HTTP on 127.0.0.1 ({how}: {clip})"
    )
    print(
        f"CPU % = CPU seconds per wall second, 100 % = one core; steady window "
        f"{WARMUP_S:.0f}..{CLIP.duration_s - TAIL_S:.0f} s of each run; "
        "whole run = wait4 rusage / the process's life (the worker is told to stop after "
        "the window)"
    )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = []
    notes = []
    with static_http_server(clip.parent) as base_url:
        url = f"{base_url}/{clip.name}"
        for mode in modes:
            name = mode.name
            spec = json.dumps(worker_spec(url, mode).to_json_dict()).encode()
            worker = measure(WORKER_COMMAND, spec, is_worker=True)
            ffmpeg = measure(ffmpeg_command(url, mode), None, is_worker=False)
            rows.append(
                [
                    name,
                    f"{worker.steady_cpu_pct:.1f}",
                    f"{ffmpeg.steady_cpu_pct:.1f}",
                    f"{worker.steady_cpu_pct / ffmpeg.steady_cpu_pct:.1f}x",
                    f"{100 * worker.whole_cpu_per_media_s:.1f}",
                    f"{100 * ffmpeg.whole_cpu_per_media_s:.1f}",
                    f"{worker.max_rss_mib:.0f} / {ffmpeg.max_rss_mib:.0f}",
                ]
            )
            notes.append(f"{name} worker: {worker.note}")
            notes.append(f"{name} ffmpeg: {' '.join(ffmpeg_command('URL', mode)[3:])}")
    print()
    print(
        table(
            [
                "mode",
                "worker CPU %",
                "ffmpeg CPU %",
                "worker/ffmpeg",
                "worker whole run %",
                "ffmpeg whole run %",
                "peak RSS MiB worker / ffmpeg",
            ],
            rows,
        )
    )
    print()
    print("ffmpeg does the same work into the null muxer (no pipe write):")
    for note in notes:
        print(f"  {note}")


if __name__ == "__main__":
    main()
