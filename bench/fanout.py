"""CPU cost of forwarding one published H.264 stream to N WebRTC viewers in one process.

Run from the repository root::

    .venv/bin/python -m bench.fanout

Three processes, all on 127.0.0.1:

- the SFU (measured): a RoomRegistry and a WhepEndpoint in an aiohttp app, with one
  publication fed the reference clip's H.264 (720p30, ~2.5 Mbit/s, video only), turned
  into Annex B by the worker's own VideoRemuxer and paced at 30 fps, looped;
- the viewers: N aiortc peers subscribing over WHEP, in a process of their own so that
  the SFU process does nothing but forward. One viewer decodes what it receives (proof
  that the stream is watchable); the others only count the frames they reassemble, so
  the viewers' process stays light and does not compete with the SFU for the two cores
  (one such process per N, all started beside the SFU, so that no import runs in a
  window);
- this process, which starts them and reads the SFU's CPU time.

N = 0 is the baseline: pacing the publication and keeping its GOP cache, no viewer. The
increment over it, divided by N, is the cost of one viewer: its RTP headers, SRTP,
sends and RTCP, never an encode (the RTP payloads are made once per publication, when
the first viewer needs them, so N = 0 does not pay for them). The reference is measured
in the same run, over the N = 0 window: the ffmpeg CLI moving the same video in real
time (``-re``, ``-c:v copy``, ``h264_mp4toannexb``, null muxer); each viewer's cost is
shown as a multiple of it.
Takes about 2 minutes; ``make bench`` calls ``measure()`` (figure 2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import av
from aiohttp import web
from tests.support.net import free_port

from bench.common import (
    CLIP,
    CLIP_VIDEO_KBPS,
    cpu_seconds,
    exit_on_sigterm,
    load_average,
    reference_clip,
    stop,
    table,
)
from bench.counting_viewers import CountingDecoder, counting_decoders
from bench.figure import Figure
from relaystream.media.pipeline import VideoRemuxer
from relaystream.media.wire import VIDEO_CLOCK, EncodedPacket
from relaystream.rtc.room import Publication, RoomRegistry, TrackKind
from relaystream.rtc.token import Privilege, generate_token
from relaystream.rtc.whep import WhepEndpoint

APP_ID = "5f8a1c2b3d4e5f6a7b8c9d0e"
APP_KEY = "0123456789abcdef0123456789abcdef"
ROOM_ID = "bench"
PUBLISHER_ID = "relay"
VIEWER_COUNTS = (0, 1, 2, 4, 8, 16)
SETTLE_S = 2.0  # after the viewers receive video, before the window opens
CONNECT_TIMEOUT_S = 30.0


# --- the SFU process -------------------------------------------------------------------


def load_annexb(clip: Path, frame_rate: int = CLIP.frame_rate) -> tuple[list[EncodedPacket], int]:
    """The clip's H.264 as the worker sends it in remux mode; and its length in 90 kHz."""
    packets: list[EncodedPacket] = []
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        remuxer = VideoRemuxer(stream)
        for packet in container.demux(stream):
            if packet.dts is not None:
                packets.extend(remuxer.process(packet))
        packets.extend(remuxer.finish())
    # The worker stamps packets with the source's own clock: start the loop at 0.
    origin = packets[0].pts
    packets = [replace(packet, pts=packet.pts - origin) for packet in packets]
    frame_ticks = round(90_000 / frame_rate)
    return packets, packets[-1].pts + frame_ticks


def as_av_packet(packet: EncodedPacket, pts: int) -> av.Packet:
    """What a task run hands to the room for each packet the worker sends."""
    out = av.Packet(packet.data)
    out.pts = pts
    out.dts = pts
    out.time_base = VIDEO_CLOCK
    out.is_keyframe = packet.keyframe
    return out


@dataclass
class FeedStats:
    packets: int = 0
    max_late_ms: float = 0.0


async def feed(
    publication: Publication, packets: list[EncodedPacket], length: int, stats: FeedStats
) -> None:
    """Publish the packets in real time, looping, until cancelled."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for loops in itertools.count():
        for packet in packets:
            pts = loops * length + packet.pts
            delay = started + pts / 90_000 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                stats.max_late_ms = max(stats.max_late_ms, -delay * 1000)
            publication.send(TrackKind.VIDEO, as_av_packet(packet, pts))
            stats.packets += 1


async def stdin_lines() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def reply(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


async def run_sfu(clip: Path, port: int) -> None:
    packets, length = load_annexb(clip)
    rooms = RoomRegistry()
    whep = WhepEndpoint(rooms, lambda app_id: APP_KEY if app_id == APP_ID else None)
    publication = rooms.publish(APP_ID, ROOM_ID, PUBLISHER_ID, frozenset({TrackKind.VIDEO}))
    app = web.Application()
    app.add_routes(whep.routes())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stats = FeedStats()
    feeder = asyncio.create_task(feed(publication, packets, length, stats))
    commands = await stdin_lines()
    reply({"packets": len(packets), "clip_s": length / 90_000})
    try:
        while line := (await commands.readline()).strip():
            if feeder.done():
                feeder.result()  # raises what stopped it
            if line == b"stats":
                track = publication.tracks[TrackKind.VIDEO]
                reply(
                    {
                        "packets_sent": stats.packets,
                        "max_late_ms": round(stats.max_late_ms, 1),
                        "subscribers": track.subscriber_count,
                        "sessions": whep.session_count,
                    }
                )
                stats.max_late_ms = 0.0
    finally:
        feeder.cancel()
        publication.end()
        await whep.close_all()
        await runner.cleanup()


# --- the viewers' process --------------------------------------------------------------


async def run_viewers(count: int, url: str, token: str) -> None:
    with counting_decoders(decode_first_video=True) as decoders:
        await watch(count, url, token, decoders)


async def watch(count: int, url: str, token: str, decoders: list[CountingDecoder]) -> None:
    from tests.support.viewer import WhepViewer

    commands = await stdin_lines()
    # Started ahead of its turn: it says so once its imports are done, then waits.
    reply({"started": count})
    if (await commands.readline()).strip() != b"connect":
        return
    viewers = [WhepViewer(url, token, kinds=("video",)) for _ in range(count)]
    try:
        await asyncio.gather(*(viewer.connect() for viewer in viewers))
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while len(decoders) < count or any(d.frames == 0 for d in decoders):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(decoders)} of {count} viewers receive video")
            await asyncio.sleep(0.05)
        reply({"ready": count})
        while line := (await commands.readline()).strip():
            if line == b"stats":
                reply(
                    {
                        "frames": [d.frames for d in decoders],
                        "decoded": decoders[0].decoded,
                    }
                )
    finally:
        await asyncio.gather(*(viewer.close() for viewer in viewers), return_exceptions=True)


# --- the controller --------------------------------------------------------------------


class Child:
    """A bench process spoken to in JSON lines over stdin/stdout."""

    def __init__(self, args: list[str], log: IO[bytes]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.fanout", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        self._lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)

    @property
    def pid(self) -> int:
        return self.process.pid

    def receive(self, timeout_s: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"no answer from pid {self.pid} in {timeout_s} s") from None
        message: dict[str, Any] = json.loads(line)
        return message

    def ask(self, command: str, timeout_s: float = 10.0) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        self.process.stdin.flush()
        return self.receive(timeout_s)

    def close(self, grace_s: float = 10.0) -> None:
        """Close stdin (the child's signal to clean up and exit), then make sure it did."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            stop(self.process)


@dataclass(frozen=True)
class Timing:
    counts: tuple[int, ...]  # viewer counts, 0 (the baseline) first
    settle_s: float  # after the viewers receive video, before the window opens
    window_s: float


QUICK = Timing(counts=(0, 4), settle_s=0.5, window_s=2.0)
FULL = Timing(counts=VIEWER_COUNTS, settle_s=SETTLE_S, window_s=10.0)


@dataclass(frozen=True)
class Row:
    viewers: int
    sfu_pct: float
    viewers_pct: float
    frames_min: int
    frames_max: int
    decoded: int
    max_late_ms: float


def start_viewers(count: int, url: str, token: str, log: IO[bytes]) -> Child:
    """A viewers' process that imports what it needs and waits to be told to connect."""
    return Child(["--role", "viewers", "--count", str(count), "--url", url, "--token", token], log)


def start_profiler(pid: int, window_s: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy (``make bench-deps``) sampling ``pid`` at 200 Hz for one window, written as
    collapsed stacks for ``bench.profile_shares``."""
    py_spy = Path(sys.executable).with_name("py-spy")
    command = [str(py_spy), "record", "--pid", str(pid), "--duration", f"{window_s:.0f}"]
    command += ["--rate", "200", "--format", "raw", "--nonblocking", "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure_viewers(
    sfu: Child,
    viewers: Child | None,
    timing: Timing,
    alongside: subprocess.Popen[bytes] | None = None,
    profile: Path | None = None,
) -> tuple[Row, float]:
    """A window with ``viewers`` (none: N = 0); also the CPU % of ``alongside`` over the
    same window, if any; with ``profile``, the SFU's py-spy samples of the window."""
    count = 0
    profiler = None
    try:
        if viewers:
            count = viewers.ask("connect", CONNECT_TIMEOUT_S + 10)["ready"]
        time.sleep(timing.settle_s)
        sfu.ask("stats")  # resets the lateness high-water mark
        before = viewers.ask("stats") if viewers else None
        pids = [
            sfu.pid,
            *([viewers.pid] if viewers else []),
            *([alongside.pid] if alongside else []),
        ]
        if profile is not None:
            profiler = start_profiler(sfu.pid, timing.window_s, profile)
        cpu_before, started = {pid: cpu_seconds(pid) for pid in pids}, time.monotonic()
        time.sleep(timing.window_s)
        used_s = {pid: cpu_seconds(pid) - cpu_before[pid] for pid in pids}
        wall_s = time.monotonic() - started
        if profiler is not None:
            profiler.wait(timing.window_s + 30)
        sfu_stats = sfu.ask("stats")
        after = viewers.ask("stats") if viewers else None
        if sfu_stats["subscribers"] != count:
            raise RuntimeError(f"{sfu_stats['subscribers']} subscribers, expected {count}")
    finally:
        if viewers is not None:
            viewers.close()
    frames = (
        [a - b for a, b in zip(after["frames"], before["frames"], strict=True)]
        if after and before
        else [0]
    )
    row = Row(
        viewers=count,
        sfu_pct=100 * used_s[sfu.pid] / wall_s,
        viewers_pct=100 * used_s[viewers.pid] / wall_s if viewers else 0.0,
        frames_min=min(frames),
        frames_max=max(frames),
        decoded=after["decoded"] - before["decoded"] if after and before else 0,
        max_late_ms=sfu_stats["max_late_ms"],
    )
    return row, 100 * used_s[alongside.pid] / wall_s if alongside else 0.0


def wait_for_no_sessions(sfu: Child, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while sfu.ask("stats")["subscribers"] and time.monotonic() < deadline:
        time.sleep(0.2)


REFERENCE_ARGS = ["-c:v", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "null", "-"]


@contextlib.contextmanager
def ffmpeg_copy(clip: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The ffmpeg CLI moving the clip's video in real time, looped, until exit.

    The same media work as the publication without viewers (read H.264, Annex B, pace
    at 30 fps), with no WebRTC: the floor a viewer's cost is set against.
    """
    command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1"]
    command += ["-i", str(clip), "-map", "0:v:0", *REFERENCE_ARGS]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        yield process
        if process.poll() is not None:
            raise RuntimeError(f"the ffmpeg reference exited with {process.returncode}")
    finally:
        stop(process)


@dataclass(frozen=True)
class Result:
    rows: list[Row]
    reference_pct: float  # ffmpeg moving the same video, over the N = 0 window
    window_s: float
    setup: str  # what was measured, for the report
    load_at_end: str

    @property
    def per_viewer_pct(self) -> float:
        """One viewer's cost at the largest N: the increment over N = 0, divided by N."""
        last = self.rows[-1]
        return (last.sfu_pct - self.rows[0].sfu_pct) / last.viewers


def run_controller(timing: Timing, fresh_clip: bool = False, profile: Path | None = None) -> Result:
    """The whole run; with ``profile``, py-spy samples the SFU in the last (largest) window."""
    if timing.counts[0] != 0 or len(timing.counts) < 2:
        raise ValueError("the viewer counts start with 0 (the baseline) and have one more")
    made_at = time.monotonic()
    clip, made = reference_clip(fresh=fresh_clip)
    how = f"made in {time.monotonic() - made_at:.0f} s" if made else "cached"
    token = generate_token(
        app_id=APP_ID,
        app_key=APP_KEY,
        room_id=ROOM_ID,
        user_id="viewer",
        privileges=[Privilege.SUBSCRIBE_STREAM],
    )
    rows: list[Row] = []
    port = free_port()
    url = f"http://127.0.0.1:{port}/whep/{APP_ID}/{ROOM_ID}/{PUBLISHER_ID}"
    with tempfile.TemporaryFile() as log:
        sfu = Child(["--role", "sfu", "--clip", str(clip), "--port", str(port)], log)
        # Every viewers' process starts now, beside the SFU: their imports are done
        # before the first window, and none runs in another's window.
        waiting = [start_viewers(count, url, token, log) for count in timing.counts[1:]]
        try:
            hello = sfu.receive(30)
            for viewers in waiting:
                viewers.receive(CONNECT_TIMEOUT_S)
            setup = (
                f"publication: {CLIP.width}x{CLIP.height}@{CLIP.frame_rate} H.264 "
                f"~{CLIP_VIDEO_KBPS} kbit/s Annex B, video only, {hello['packets']} packets "
                f"looped every {hello['clip_s']:.0f} s ({how}: {clip})\n"
                f"load average: {load_average()}\n"
                f"window {timing.window_s:.0f} s per N after {timing.settle_s:.1f} s of "
                "settling; CPU % = CPU seconds per wall second, 100 % = one core"
            )
            with ffmpeg_copy(clip) as reference:
                baseline, reference_pct = measure_viewers(sfu, None, timing, reference)
            rows.append(baseline)
            for viewers in waiting:
                sampled = profile if viewers is waiting[-1] else None
                rows.append(measure_viewers(sfu, viewers, timing, profile=sampled)[0])
                wait_for_no_sessions(sfu)
        except Exception:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-3000:])
            raise
        finally:
            for viewers in waiting:
                viewers.close()
            sfu.close()
    return Result(rows, reference_pct, timing.window_s, setup, load_average())


def measure(quick: bool, out_dir: Path) -> Figure:
    """Figure 2: the SFU's CPU for 0..16 viewers (0 and 4 in quick mode)."""
    result = run_controller(QUICK if quick else FULL)
    plots = [] if quick else [plot(result, out_dir / "fanout.png")]
    per_viewer, last = result.per_viewer_pct, result.rows[-1]
    ratio = per_viewer / result.reference_pct
    # A saturated machine drops frames, and a viewer that gets fewer costs less: say so.
    delivered = last.frames_min / (result.window_s * CLIP.frame_rate)
    shortfall = f"; a viewer got only {delivered:.0%} of the frames" if delivered < 0.95 else ""
    summary = (
        f"each added viewer of one 720p30 H.264 publication: {per_viewer:.2f} % of a core "
        f"at {last.viewers} viewers (SFU {last.sfu_pct:.1f} %, {result.rows[0].sfu_pct:.1f} % "
        f"with none{shortfall}) vs ffmpeg -c:v copy of the same video "
        f"{result.reference_pct:.1f} %: {ratio:.2f}x"
    )
    return Figure(
        number=2,
        title="Cost of each added viewer",
        summary=summary,
        ratio=ratio,
        target="<= 0.5 % of a core per viewer",
        body=FIGURE_TEXT + "```\n" + report(result) + "\n```\n",
        plots=plots,
    )


FIGURE_TEXT = """\
One 720p30 ~2.5 Mbit/s H.264 publication (video only) in an SFU process of its own (a
`RoomRegistry` and a `WhepEndpoint`, fed the clip's H.264 as a task run feeds it), N
WebRTC viewers in another process (viewer 1 decodes, the others count the frames they
reassemble). N = 0 is the publication alone; the increment over it divided by N is one
viewer's cost: packetization, SRTP, RTCP, never an encode. The reference, measured over
the N = 0 window: the ffmpeg CLI moving the same video in real time (`-re -c:v copy -bsf:v
h264_mp4toannexb -f null`). "per viewer / ffmpeg" is one viewer's cost as a multiple of it.

"""


def plot(result: Result, path: Path) -> Path:
    """SFU CPU against the number of viewers, beside the same run's ffmpeg reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    viewers = [row.viewers for row in result.rows]
    axes.plot(viewers, [row.sfu_pct for row in result.rows], marker="o", label="SFU process")
    axes.axhline(
        result.reference_pct, color="grey", linestyle="--", label="ffmpeg -c:v copy (same run)"
    )
    axes.set_xlabel("viewers of one 720p30 H.264 publication")
    axes.set_ylabel("CPU % of one core")
    axes.set_xticks(viewers)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def report(result: Result) -> str:
    rows, reference_pct = result.rows, result.reference_pct
    baseline = rows[0].sfu_pct
    lines: list[list[str]] = []
    for row in rows:
        n = row.viewers
        if not n:
            lines.append([str(n), f"{row.sfu_pct:.1f}", "+0.0", *["-"] * 5, "0.0"])
            lines[-1].append(f"{row.max_late_ms:.0f}")
            continue
        lines.append(
            [
                str(n),
                f"{row.sfu_pct:.1f}",
                f"{row.sfu_pct - baseline:+.1f}",
                f"{(row.sfu_pct - baseline) / n:.2f}",
                f"{(row.sfu_pct - baseline) / n / reference_pct:.2f}x",
                f"{row.sfu_pct / reference_pct:.1f}x",
                f"{row.frames_min}..{row.frames_max}",
                str(row.decoded),
                f"{row.viewers_pct:.1f}",
                f"{row.max_late_ms:.0f}",
            ]
        )
    window_s = result.window_s
    headers = [
        "N",
        "SFU CPU %",
        "over N=0",
        "per viewer",
        "per viewer / ffmpeg",
        "SFU / ffmpeg",
        f"frames/viewer in {window_s:.0f} s",
        "decoded (viewer 1)",
        "viewers' proc CPU %",
        "feed max late ms",
    ]
    return (
        f"{result.setup}\n\n{table(headers, lines)}\n\nreference, over the N = 0 window: "
        f"ffmpeg {' '.join(REFERENCE_ARGS[:-3])} of the same video in real time used "
        f"{reference_pct:.1f} % of a core; load average at the end: {result.load_at_end}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=FULL.window_s, help="window per N (10)")
    parser.add_argument(
        "--viewers",
        default=",".join(map(str, VIEWER_COUNTS)),
        help="comma-separated viewer counts after the baseline N = 0 (0,1,2,4,8,16)",
    )
    parser.add_argument("--fresh-clip", action="store_true", help="remake the cached clip")
    parser.add_argument("--plot", type=Path, help="write a PNG (needs make bench-deps)")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy samples of the SFU in the largest N's window (needs make bench-deps)",
    )
    parser.add_argument("--role", choices=["controller", "sfu", "viewers"], default="controller")
    parser.add_argument("--clip", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "sfu":
        asyncio.run(run_sfu(args.clip, args.port))
    elif args.role == "viewers":
        asyncio.run(run_viewers(args.count, args.url, args.token))
    else:
        exit_on_sigterm()
        counts = sorted({0, *(int(n) for n in args.viewers.split(","))})
        result = run_controller(
            replace(FULL, counts=tuple(counts), window_s=args.seconds),
            args.fresh_clip,
            args.profile,
        )
        print(report(result))
        if args.profile is not None:
            from bench.profile_shares import shares_report

            print(f"\nwhere the SFU's time went with {counts[-1]} viewers ({args.profile}):")
            print(shares_report(args.profile))
        if args.plot is not None:
            print(f"plot: {plot(result, args.plot)}")


if __name__ == "__main__":
    main()
