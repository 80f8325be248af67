"""Figure 5, added latency: how much later a viewer sees a live frame through a relay
than the ffmpeg CLI reading the same stream does, remux and transcode.

Run from the repository root (``make bench-deps`` first, for the plot)::

    .venv/bin/python -m bench.latency [--quick] [--out DIR]

A live source whose frames carry their own number: this process draws each frame's
index as a row of black and white blocks (16 bits and a parity bit) into a 640x360
picture and writes it, paced at 30 fps, to the ffmpeg CLI, which encodes it (libx264
ultrafast, zerolatency, a keyframe a second) and publishes it over RTMP to nginx-rtmp on
127.0.0.1; the time each frame went into the encoder is noted. Three readers of that
stream run at once:

- a remux relay and a transcode relay (640x360, 30 fps) started through the SDK, each
  watched by an aiortc viewer over WHEP that decodes every frame and reads its number;
- the reference: the ffmpeg CLI pulling the same RTMP URL with its low-delay flags,
  decoding and writing grey pictures to a pipe this process reads.

Latency = the time a reader had the decoded picture - the time the frame went into the
encoder, on the one monotonic clock of this machine. The encode and nginx are in every
reader's number alike, so "added" = relay - reference. Quick mode: a 2 s window.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from tests.support.rtmp import nginx_rtmp_server
from tests.support.viewer import DecodedTrack, WhepViewer

from bench.common import stop, table
from bench.figure import Figure, run_alone
from bench.relays import Node, percentile, running_node

ROOM = "latency"
WIDTH, HEIGHT, FPS = 640, 360, 30
BITS = 16  # frame numbers wrap at 65,536 (36 min at 30 fps), beyond any run
BLOCK_W, BLOCK_H = 32, 64
BLOCKS_X = (WIDTH - (BITS + 1) * BLOCK_W) // 2  # the number's bits, then a parity bit
BLOCKS_Y = (HEIGHT - BLOCK_H) // 2
CONNECT_TIMEOUT_S = 30.0
ARRIVAL_GRACE_S = 5.0  # after the window, for its last pictures to arrive
TARGET = "added <= 100 ms remux, <= 200 ms transcode"
TRANSCODE = {"StreamMode": 0, "VideoWidth": WIDTH, "VideoHeight": HEIGHT, "FrameRate": FPS}


@dataclass(frozen=True)
class Settings:
    warm_up_s: float  # once every reader has pictures, before the window
    window_s: float


FULL = Settings(warm_up_s=3.0, window_s=20.0)
QUICK = Settings(warm_up_s=0.5, window_s=1.0)


# --- the numbered pictures -------------------------------------------------------------


def picture(index: int) -> bytes:
    """A grey 640x360 picture with ``index`` drawn as blocks (white = 1) and a parity block."""
    image = bytearray([128]) * (WIDTH * HEIGHT)
    bits = [(index >> bit) & 1 for bit in range(BITS)]
    for place, bit in enumerate([*bits, sum(bits) % 2]):
        left = BLOCKS_X + place * BLOCK_W
        for y in range(BLOCKS_Y, BLOCKS_Y + BLOCK_H):
            start = y * WIDTH + left
            image[start : start + BLOCK_W] = bytes([235 if bit else 16]) * BLOCK_W
    return bytes(image)


@dataclass(frozen=True)
class Gray:
    """An 8-bit grey picture; rows ``stride`` bytes apart (a decoder pads them)."""

    data: bytes
    width: int
    height: int
    stride: int

    @classmethod
    def of(cls, frame: av.VideoFrame) -> Gray:
        plane = frame.reformat(format="gray").planes[0]
        return cls(bytes(plane), frame.width, frame.height, plane.line_size)

    def mean(self, top: int, bottom: int, left: int, right: int) -> float:
        total = sum(
            sum(self.data[y * self.stride + left : y * self.stride + right])
            for y in range(top, bottom)
        )
        return total / max(1, (bottom - top) * (right - left))


def read_index(gray: Gray) -> int | None:
    """The number drawn in a decoded picture of any size (the blocks scale with it), or
    None if the parity does not match (a picture the blocks cannot be read from)."""
    row = round((BLOCKS_Y + BLOCK_H / 2) * gray.height / HEIGHT)
    half = max(1, round(BLOCK_W / 4 * gray.width / WIDTH))
    bits = []
    for place in range(BITS + 1):
        column = round((BLOCKS_X + (place + 0.5) * BLOCK_W) * gray.width / WIDTH)
        patch = gray.mean(row - half, row + half, column - half, column + half)
        bits.append(int(patch > 128))
    if sum(bits[:BITS]) % 2 != bits[BITS]:
        return None
    return sum(bit << place for place, bit in enumerate(bits[:BITS]))


class NumberedSource:
    """The live source: numbered pictures paced at 30 fps into an ffmpeg that encodes and
    publishes them to ``url``; ``sent[i]`` is when picture i went into the encoder."""

    def __init__(self, url: str, seconds: float) -> None:
        command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "rawvideo"]
        command += ["-pix_fmt", "gray", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS), "-i", "pipe:0"]
        command += ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"]
        command += ["-g", str(FPS), "-pix_fmt", "yuv420p", "-f", "flv", url]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE)
        self.sent: dict[int, float] = {}
        self._frames = min(round(seconds * FPS), (1 << BITS) - 1)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        assert self.process.stdin is not None
        began = time.monotonic()
        try:
            for index in range(self._frames):
                if self._stopping.is_set():
                    return
                data = picture(index)
                delay = began + index / FPS - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.sent[index] = time.monotonic()
                self.process.stdin.write(data)
                self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # ffmpeg was stopped
        finally:
            self.process.stdin.close()

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        stop(self.process)


@contextmanager
def numbered_rtmp_source(workdir: Path, seconds: float) -> Iterator[tuple[str, NumberedSource]]:
    with nginx_rtmp_server(workdir / "nginx") as base:
        url = f"{base}/numbered"
        source = NumberedSource(url, seconds)
        try:
            yield url, source
        finally:
            source.close()


# --- the readers -----------------------------------------------------------------------


class NumberReadingViewer(WhepViewer):
    """A WHEP viewer (video only) that decodes every frame and notes when each picture
    number first reached it."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(url, token, kinds=("video",))
        self.arrivals: dict[int, float] = {}

    async def _read(self, track: MediaStreamTrack, decoded: DecodedTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                at = time.monotonic()
                if isinstance(frame, av.VideoFrame):
                    index = read_index(Gray.of(frame))
                    if index is not None:
                        self.arrivals.setdefault(index, at)
        except MediaStreamError:
            decoded.ended.set()


class FfmpegReader:
    """The reference: the ffmpeg CLI pulling ``url`` with its low-delay flags, decoding,
    and writing grey pictures to a pipe, each flushed as it is made."""

    def __init__(self, url: str) -> None:
        self.process = subprocess.Popen(
            ["ffmpeg", *self.arguments(url)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
        )
        self.arrivals: dict[int, float] = {}
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    @staticmethod
    def arguments(url: str) -> list[str]:
        arguments = ["-nostdin", "-loglevel", "error", "-fflags", "nobuffer", "-flags"]
        arguments += ["low_delay", "-i", url, "-map", "0:v:0", "-fps_mode", "passthrough"]
        return [*arguments, "-f", "rawvideo", "-pix_fmt", "gray", "-flush_packets", "1", "pipe:1"]

    def _read(self) -> None:
        assert self.process.stdout is not None
        size = WIDTH * HEIGHT
        while len(data := self.process.stdout.read(size)) == size:
            at = time.monotonic()
            index = read_index(Gray(data, WIDTH, HEIGHT, WIDTH))
            if index is not None:
                self.arrivals.setdefault(index, at)

    def close(self) -> None:
        self.process.kill()  # it may be blocked writing to the pipe
        self.process.wait()
        self._thread.join(5)
        assert self.process.stdout is not None
        self.process.stdout.close()


@dataclass(frozen=True)
class Reader:
    name: str
    latencies_ms: list[float]  # per picture sent in the window, in send order
    sent_at: list[float]  # when each of those went into the encoder, s into the window
    lost: int  # pictures sent in the window that never arrived

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p95(self) -> float:
        return percentile(self.latencies_ms, 0.95)


def latencies(
    name: str, arrivals: dict[int, float], sent: dict[int, float], start: float
) -> Reader:
    in_window = sorted((at, index) for index, at in sent.items() if at >= start)
    seen = [(at, arrivals[index]) for at, index in in_window if index in arrivals]
    return Reader(
        name,
        [1000 * (arrived - at) for at, arrived in seen],
        [at - start for at, _ in seen],
        len(in_window) - len(seen),
    )


async def watch_relays(node: Node, url: str, deadline: float) -> list[NumberReadingViewer]:
    await node.start(ROOM, "remux", url, {"MediaType": 2})
    await node.start(ROOM, "transcode", url, {"MediaType": 2, **TRANSCODE})
    viewers = []
    for task_id in ("remux", "transcode"):
        viewer = await node.watch(ROOM, task_id, deadline, NumberReadingViewer)
        assert isinstance(viewer, NumberReadingViewer)
        viewers.append(viewer)
    return viewers


async def measure_readers(
    node: Node, url: str, source: NumberedSource, settings: Settings
) -> list[Reader]:
    reference = FfmpegReader(url)
    viewers: list[NumberReadingViewer] = []
    try:
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        viewers = await watch_relays(node, url, deadline)
        readers: list[Any] = [*viewers, reference]
        while not all(reader.arrivals for reader in readers):
            if time.monotonic() > deadline:
                got = [bool(reader.arrivals) for reader in readers]
                raise TimeoutError(f"no numbered picture at remux/transcode/ffmpeg: {got}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(settings.warm_up_s)
        start = time.monotonic()
        await asyncio.sleep(settings.window_s)
        last = max(i for i, at in source.sent.items() if at <= start + settings.window_s)
        sent = {i: at for i, at in source.sent.items() if i <= last}
        # Until every reader has the window's last picture (or a later one), or time is up:
        # what has not arrived by then is lost.
        give_up = time.monotonic() + ARRIVAL_GRACE_S
        while time.monotonic() < give_up and any(max(r.arrivals) < last for r in readers):
            await asyncio.sleep(0.05)
        return [
            latencies(name, reader.arrivals, sent, start)
            for name, reader in zip(("remux", "transcode", "ffmpeg CLI"), readers, strict=True)
        ]
    finally:
        reference.close()
        await asyncio.gather(*(viewer.close() for viewer in viewers), return_exceptions=True)
        for task_id in ("remux", "transcode"):
            await node.stop(ROOM, task_id)


def plot(readers: list[Reader], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for reader in readers:
        color = "grey" if reader.name == "ffmpeg CLI" else None
        axes.plot(
            reader.sent_at, reader.latencies_ms, linewidth=0.8, label=reader.name, color=color
        )
    axes.set_xlabel("seconds into the window (when the frame went into the encoder)")
    axes.set_ylabel("encoder in -> decoded picture, ms")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def measure(quick: bool, out_dir: Path) -> Figure:
    settings = QUICK if quick else FULL
    run_s = CONNECT_TIMEOUT_S + settings.warm_up_s + settings.window_s + 10
    with (
        tempfile.TemporaryDirectory(prefix="relaystream-bench-") as work,
        numbered_rtmp_source(Path(work), run_s) as (url, source),
        running_node(Path(work)) as node,
    ):
        remux, transcode, reference = asyncio.run(measure_readers(node, url, source, settings))
    if not reference.latencies_ms or not remux.latencies_ms or not transcode.latencies_ms:
        raise RuntimeError("a reader got no numbered picture in the window")
    added = {r.name: r.p50 - reference.p50 for r in (remux, transcode)}
    ratio = remux.p50 / reference.p50
    summary = (
        f"added latency (p50): remux {added['remux']:+.0f} ms, transcode "
        f"{added['transcode']:+.0f} ms over the ffmpeg CLI's {reference.p50:.0f} ms "
        f"(relay {remux.p50:.0f} / {transcode.p50:.0f} ms): remux {ratio:.2f}x, "
        f"transcode {transcode.p50 / reference.p50:.2f}x"
    )
    rows = [
        [
            r.name,
            str(len(r.latencies_ms)),
            str(r.lost),
            f"{r.p50:.0f}",
            f"{r.p95:.0f}",
            f"{max(r.latencies_ms):.0f}",
            f"{r.p50 - reference.p50:+.0f}" if r is not reference else "-",
        ]
        for r in (remux, transcode, reference)
    ]
    headers = ["reader", "frames", "lost", "p50 ms", "p95 ms", "max ms", "added (p50) ms"]
    plots = [] if quick else [out_dir / "latency.png"]
    for path in plots:
        plot([remux, transcode, reference], path)
    window, warm_up = settings.window_s, settings.warm_up_s
    body = f"""Source: {WIDTH}x{HEIGHT}@{FPS} numbered pictures, libx264 ultrafast zerolatency (a
keyframe a second), published over RTMP to nginx-rtmp on 127.0.0.1. The remux relay, the
transcode relay ({WIDTH}x{HEIGHT}, {FPS} fps) and the reference read the stream at the
same time; a {window:g} s window after {warm_up:g} s of warm-up. Latency = decoded picture
at the reader - picture into the encoder.

```
{table(headers, rows)}
```

Reference, in the same run: `ffmpeg {" ".join(FfmpegReader.arguments("URL"))}`,
read by this process. The relays' viewers are aiortc peers: their jitter buffer hands a frame
to the decoder when the next frame's first packet arrives, which is part of their number,
as a browser's jitter buffer would be. Targets: {TARGET}.
"""
    return Figure(5, "Added latency, source to viewer", summary, ratio, TARGET, body, plots)


if __name__ == "__main__":
    run_alone(measure, __doc__.splitlines()[0])
