"""What the benchmarks share: the reference clip, CPU and memory accounting of a process
and its descendants, tables."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from relaystream.media.testsrc import ClipSpec, make_test_clip

# The stream the reference costs in DESIGN.md were measured with: 720p30 H.264 at about
# 2.5 Mbit/s with AAC audio, a keyframe every 2 s and no B-frames, as live encoders send.
CLIP = ClipSpec(duration_s=20.0, width=1280, height=720, frame_rate=30, keyframe_interval_s=2.0)
CLIP_VIDEO_KBPS = 2500
CLIP_NAME = "clip-720p30-2500k-20s.mp4"
CACHE_DIR = Path(tempfile.gettempdir()) / "relaystream-bench"

_CPUCLOCK_SCHED = 2


def reference_clip(*, fresh: bool = False) -> tuple[Path, bool]:
    """The 720p30 ~2.5 Mbit/s H.264 + AAC MP4 clip, made once and cached between runs.

    ``make_test_clip`` makes the picture and the tone but has no bitrate setting, so its
    output is re-encoded once to a constant ~2.5 Mbit/s with the ffmpeg CLI (audio is
    copied). Returns the path and whether it was made now.
    """
    clip = CACHE_DIR / CLIP_NAME
    if clip.exists() and not fresh:
        return clip, False
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as work:
        raw = make_test_clip(Path(work) / "raw.mp4", CLIP)
        encoded = Path(work) / CLIP_NAME
        gop = round(CLIP.keyframe_interval_s * CLIP.frame_rate)
        kbps = CLIP_VIDEO_KBPS
        command = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
        command += ["-i", str(raw), "-c:v", "libx264", "-preset", "veryfast", "-b:v", f"{kbps}k"]
        command += ["-maxrate", f"{kbps}k", "-bufsize", f"{kbps}k", "-g", str(gop)]
        command += ["-keyint_min", str(gop), "-sc_threshold", "0", "-bf", "0"]
        command += ["-c:a", "copy", "-movflags", "+faststart", str(encoded)]
        subprocess.run(
            command,
            check=True,
            timeout=120,
        )
        encoded.replace(clip)
    return clip, True


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (all its threads, live or ended), in s.

    Read from the process's CPU-time clock, which counts nanoseconds; ``/proc/PID/stat``
    counts 10 ms ticks, too coarse for the few seconds of a quick run. The clock id is
    the one ``clock_getcpuclockid(3)`` makes: the kernel's ``(~pid << 3) | CPUCLOCK_SCHED``.
    """
    return time.clock_gettime((~pid << 3) | _CPUCLOCK_SCHED)


def descendants(pid: int) -> set[int]:
    """Every live process under ``pid`` (children, their children...), not ``pid`` itself."""
    found: set[int] = set()
    parents = [pid]
    while parents:
        parent = parents.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                with contextlib.suppress(OSError):
                    for child in map(int, (task / "children").read_text().split()):
                        if child not in found:
                            found.add(child)
                            parents.append(child)
    return found


@dataclass(frozen=True)
class Memory:
    """A running process's memory: resident, and unique (its private pages: what it
    costs the machine on top of what it shares with other processes), in MiB."""

    rss_mib: float
    uss_mib: float


def memory(pid: int) -> Memory:
    """RSS and USS of a running process, from ``/proc/PID/smaps_rollup``."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            name, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                fields[name] = int(rest.split()[0])
    private_kib = fields["Private_Clean"] + fields["Private_Dirty"]
    return Memory(rss_mib=fields["Rss"] / 1024, uss_mib=private_kib / 1024)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass(frozen=True)
class Usage:
    """What a child process cost over its whole life (from ``wait4``), its threads included."""

    exit_code: int
    cpu_s: float
    timed_out: bool


def reap(process: subprocess.Popen[bytes], timeout_s: float) -> Usage:
    """Wait for ``process`` to exit (killing it after ``timeout_s``) and return its rusage."""
    deadline = time.monotonic() + timeout_s
    timed_out = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            pid, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)
    return Usage(
        exit_code=process.returncode,
        cpu_s=usage.ru_utime + usage.ru_stime,
        timed_out=timed_out,
    )


def stop(process: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """Terminate ``process`` if it still runs; kill it if it does not exit in time."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that cleanup (stopping children) runs."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain-text table, columns left-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])
