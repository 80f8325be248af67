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
  the viewers' process stays light and does not compete with the SFU for the two cores;
- this process, which starts them and reads the SFU's CPU time from /proc.

N = 0 is the baseline: pacing the publication and keeping its GOP cache, no viewer. The
increment over it, divided by N, is the cost of one viewer: its RTP headers, SRTP,
sends and RTCP, never an encode (the RTP payloads are made once per publication, when
the first viewer needs them, so N = 0 does not pay for them). The reference is
measured in the same run: the ffmpeg CLI moving the same video in real time (``-re``,
``-c:v copy``, ``h264_mp4toannexb``, null muxer) for as long as one window; each
viewer's cost is shown as a multiple of it.
Takes about 2 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
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
    reap,
    reference_clip,
    stop,
    table,
)
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


def load_annexb(clip: Path) -> tuple[list[EncodedPacket], int]:
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
    frame_ticks = round(90_000 / CLIP.frame_rate)
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


async def run_sfu(clip: Path) -> None:
    packets, length = load_annexb(clip)
    rooms = RoomRegistry()
    whep = WhepEndpoint(rooms, lambda app_id: APP_KEY if app_id == APP_ID else None)
    publication = rooms.publish(APP_ID, ROOM_ID, PUBLISHER_ID, frozenset({TrackKind.VIDEO}))
    app = web.Application()
    app.add_routes(whep.routes())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stats = FeedStats()
    feeder = asyncio.create_task(feed(publication, packets, length, stats))
    commands = await stdin_lines()
    reply({"port": port, "packets": len(packets), "clip_s": length / 90_000})
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


class CountingDecoder:
    """Stands in for aiortc's H.264 decoder: counts reassembled frames; decodes only if
    given a real decoder."""

    def __init__(self, real: Any | None) -> None:
        self.real = real
        self.frames = 0
        self.decoded = 0

    def decode(self, encoded_frame: Any) -> list[Any]:
        self.frames += 1
        if self.real is None:
            return []
        frames = self.real.decode(encoded_frame)
        self.decoded += len(frames)
        return list(frames)


def count_received_frames() -> list[CountingDecoder]:
    """Make every receiver count its frames; the first one also decodes them."""
    import aiortc.rtcrtpreceiver as receiver

    make_decoder = receiver.get_decoder
    decoders: list[CountingDecoder] = []
    lock = threading.Lock()

    def get_decoder(codec: Any) -> CountingDecoder:
        with lock:
            decoder = CountingDecoder(make_decoder(codec) if not decoders else None)
            decoders.append(decoder)
        return decoder

    receiver.get_decoder = get_decoder
    return decoders


async def run_viewers(count: int, url: str, token: str) -> None:
    from tests.support.viewer import WhepViewer

    decoders = count_received_frames()
    viewers = [WhepViewer(url, token, kinds=("video",)) for _ in range(count)]
    commands = await stdin_lines()
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

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        self.process.stdin.flush()
        return self.receive(10)

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
class Row:
    viewers: int
    sfu_pct: float
    viewers_pct: float
    frames_min: int
    frames_max: int
    decoded: int
    max_late_ms: float


def start_profiler(pid: int, window_s: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy (``make bench-deps``) sampling ``pid`` at 200 Hz for one window, written as
    collapsed stacks for ``bench.profile_shares``."""
    py_spy = Path(sys.executable).with_name("py-spy")
    command = [str(py_spy), "record", "--pid", str(pid), "--duration", f"{window_s:.0f}"]
    command += ["--rate", "200", "--format", "raw", "--nonblocking", "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(
    sfu: Child,
    count: int,
    url: str,
    token: str,
    window_s: float,
    log: IO[bytes],
    profile: Path | None = None,
) -> Row:
    viewers = None
    profiler = None
    try:
        if count:
            role = ["--role", "viewers", "--count", str(count), "--url", url, "--token", token]
            viewers = Child(role, log)
            viewers.receive(CONNECT_TIMEOUT_S + 10)
        time.sleep(SETTLE_S)
        sfu.ask("stats")  # resets the lateness high-water mark
        before = viewers.ask("stats") if viewers else None
        if profile is not None:
            profiler = start_profiler(sfu.pid, window_s, profile)
        sfu_cpu, viewers_cpu, wall = (
            cpu_seconds(sfu.pid),
            cpu_seconds(viewers.pid) if viewers else 0.0,
            time.monotonic(),
        )
        time.sleep(window_s)
        sfu_cpu = cpu_seconds(sfu.pid) - sfu_cpu
        viewers_cpu = cpu_seconds(viewers.pid) - viewers_cpu if viewers else 0.0
        wall = time.monotonic() - wall
        sfu_stats = sfu.ask("stats")
        after = viewers.ask("stats") if viewers else None
        if sfu_stats["subscribers"] != count:
            raise RuntimeError(f"{sfu_stats['subscribers']} subscribers, expected {count}")
    finally:
        if profiler is not None:
            reap(profiler, window_s + 30)
        if viewers is not None:
            viewers.close()
    frames = (
        [a - b for a, b in zip(after["frames"], before["frames"], strict=True)]
        if after and before
        else [0]
    )
    return Row(
        viewers=count,
        sfu_pct=100 * sfu_cpu / wall,
        viewers_pct=100 * viewers_cpu / wall,
        frames_min=min(frames),
        frames_max=max(frames),
        decoded=after["decoded"] - before["decoded"] if after and before else 0,
        max_late_ms=sfu_stats["max_late_ms"],
    )


def wait_for_no_sessions(sfu: Child, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while sfu.ask("stats")["subscribers"] and time.monotonic() < deadline:
        time.sleep(0.2)


def ffmpeg_copy_pct(clip: Path, window_s: float) -> float:
    """CPU % of the ffmpeg CLI moving the clip's video in real time for one window.

    The same media work as the publication without viewers (read H.264, Annex B, pace
    at 30 fps), with no WebRTC: the floor a viewer's cost is set against.
    """
    command = [
        "ffmpeg",
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-stream_loop",
        "-1",
        "-i",
        str(clip),
        "-t",
        f"{window_s:.1f}",
        "-map",
        "0:v:0",
        "-c:v",
        "copy",
        "-bsf:v",
        "h264_mp4toannexb",
        "-f",
        "null",
        "-",
    ]
    started = time.monotonic()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    usage = reap(process, window_s + 30)
    if usage.exit_code or usage.timed_out:
        raise RuntimeError(f"ffmpeg reference failed: exit {usage.exit_code}")
    return 100 * usage.cpu_s / (time.monotonic() - started)


def run_controller(
    window_s: float,
    counts: list[int],
    fresh_clip: bool,
    plot_path: Path | None,
    profile_path: Path | None = None,
) -> None:
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
    with tempfile.TemporaryFile() as log:
        sfu = Child(["--role", "sfu", "--clip", str(clip)], log)
        try:
            hello = sfu.receive(30)
            print(
                f"publication: {CLIP.width}x{CLIP.height}@{CLIP.frame_rate} H.264 "
                f"~{CLIP_VIDEO_KBPS} kbit/s Annex B, video only, {hello['packets']} packets "
                f"looped every {hello['clip_s']:.0f} s ({how}: {clip})"
            )
            print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            print(
                f"window {window_s:.0f} s per N after {SETTLE_S:.0f} s of settling; "
                "CPU % = CPU seconds per wall second, 100 % = one core"
            )
            url = f"http://127.0.0.1:{hello['port']}/whep/{APP_ID}/{ROOM_ID}/{PUBLISHER_ID}"
            for count in counts:
                profile = profile_path if count == max(counts) else None
                rows.append(measure(sfu, count, url, token, window_s, log, profile))
                wait_for_no_sessions(sfu)
        except Exception:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-3000:])
            raise
        finally:
            sfu.close()
    reference_pct = ffmpeg_copy_pct(clip, window_s)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print(report(rows, window_s, reference_pct))
    if plot_path is not None:
        plot(rows, reference_pct, plot_path)
        print(f"plot: {plot_path}")
    if profile_path is not None:
        from bench.profile_shares import shares_report

        print(f"\nwhere the SFU's time went with {max(counts)} viewers ({profile_path}):")
        print(shares_report(profile_path))


def plot(rows: list[Row], reference_pct: float, path: Path) -> None:
    """SFU CPU against the number of viewers, beside the same run's ffmpeg reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    viewers = [row.viewers for row in rows]
    axes.plot(viewers, [row.sfu_pct for row in rows], marker="o", label="SFU process")
    axes.axhline(reference_pct, color="grey", linestyle="--", label="ffmpeg -c:v copy (same run)")
    axes.set_xlabel("viewers of one 720p30 H.264 publication")
    axes.set_ylabel("CPU % of one core")
    axes.set_xticks(viewers)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def report(rows: list[Row], window_s: float, reference_pct: float) -> str:
    baseline = next((r.sfu_pct for r in rows if r.viewers == 0), 0.0)
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
                f"{(row.sfu_pct - baseline) / n:.1f}",
                f"{(row.sfu_pct - baseline) / n / reference_pct:.1f}x",
                f"{row.sfu_pct / reference_pct:.1f}x",
                f"{row.frames_min}..{row.frames_max}",
                str(row.decoded),
                f"{row.viewers_pct:.1f}",
                f"{row.max_late_ms:.0f}",
            ]
        )
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
    notes = (
        "\n\nreference, measured in this run: the ffmpeg CLI moving the same video in real "
        f"time (-re -c:v copy -bsf:v h264_mp4toannexb -f null) used {reference_pct:.1f} % of "
        "a core.\n'per viewer / ffmpeg' is one viewer's cost as a multiple of it; 'SFU / "
        "ffmpeg' the whole SFU process's."
    )
    return table(headers, lines) + notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="window per N (10)")
    parser.add_argument(
        "--viewers",
        default=",".join(map(str, VIEWER_COUNTS)),
        help="comma-separated viewer counts (0,1,2,4,8,16)",
    )
    parser.add_argument("--fresh-clip", action="store_true", help="remake the cached clip")
    parser.add_argument("--plot", type=Path, help="write a PNG (needs make bench-deps)")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy the SFU during the largest N's window into this file and print "
        "where its time went (needs make bench-deps)",
    )
    parser.add_argument("--role", choices=["controller", "sfu", "viewers"], default="controller")
    parser.add_argument("--clip", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "sfu":
        asyncio.run(run_sfu(args.clip))
    elif args.role == "viewers":
        asyncio.run(run_viewers(args.count, args.url, args.token))
    else:
        counts = [int(n) for n in args.viewers.split(",")]
        exit_on_sigterm()
        run_controller(args.seconds, counts, args.fresh_clip, args.plot, args.profile)


if __name__ == "__main__":
    main()
