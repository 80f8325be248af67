"""WebRTC viewers that receive without decoding, in processes of their own, and when each
of their video frames arrived.

Many decoding viewers would take a 2-core machine by themselves, so these stand in
aiortc's decoders with one that only notes each reassembled frame (its arrival on the
monotonic clock, which every process shares, and its RTP timestamp): the frame went
through SRTP, the jitter buffer and depacketization exactly as a decoding viewer's does.
A parent process drives each group over a pipe: add viewers, fetch the arrivals.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

RTP_CLOCK = 90_000
RTP_WRAP = 1 << 32
CONNECT_TIMEOUT_S = 30.0

Arrival = tuple[float, int]  # (time.monotonic(), RTP timestamp)


class FrameClock:
    """Stands in for aiortc's decoder: notes each frame's arrival, decodes nothing."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []

    def decode(self, encoded_frame: Any) -> list[Any]:
        self.arrivals.append((time.monotonic(), encoded_frame.timestamp))
        return []


def clock_video_frames() -> list[FrameClock]:
    """Make every video receiver of this process a FrameClock (audio still decodes: it is
    light, and it is what a player would do); returns them as they are made."""
    import aiortc.rtcrtpreceiver as receiver

    make_decoder = receiver.get_decoder  # type: ignore[attr-defined]
    clocks: list[FrameClock] = []
    lock = threading.Lock()

    def get_decoder(codec: Any) -> Any:
        if not codec.mimeType.lower().startswith("video/"):
            return make_decoder(codec)
        with lock:
            clock = FrameClock()
            clocks.append(clock)
        return clock

    receiver.get_decoder = get_decoder  # type: ignore[attr-defined]
    return clocks


async def _serve(conn: Connection) -> None:
    from tests.support.viewer import WhepViewer

    clocks = clock_video_frames()
    viewers: list[WhepViewer] = []
    try:
        while True:
            while not conn.poll():
                await asyncio.sleep(0.02)
            command, *args = conn.recv()
            if command == "add":
                urls, token = args
                added = [WhepViewer(url, token) for url in urls]
                viewers.extend(added)
                await asyncio.gather(*(viewer.connect() for viewer in added))
                deadline = time.monotonic() + CONNECT_TIMEOUT_S
                while len(clocks) < len(viewers) or any(not c.arrivals for c in clocks):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{len(clocks)} of {len(viewers)} viewers get video")
                    await asyncio.sleep(0.02)
                conn.send(("ready", len(viewers)))
            elif command == "arrivals":
                conn.send(("arrivals", [list(c.arrivals) for c in clocks]))
            else:
                return
    finally:
        await asyncio.gather(*(viewer.close() for viewer in viewers), return_exceptions=True)


def _group_main(conn: Connection) -> None:
    try:
        asyncio.run(_serve(conn))
    except Exception as exc:  # the parent shows it
        conn.send(("error", repr(exc)))


class ViewerGroup:
    """A process of non-decoding viewers, each watching one relay."""

    def __init__(self) -> None:
        spawn = multiprocessing.get_context("spawn")
        self._conn, child = spawn.Pipe()
        self.process = spawn.Process(target=_group_main, args=(child,), daemon=True)
        self.process.start()
        self.size = 0

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def _ask(self, *command: Any, timeout_s: float) -> Any:
        self._conn.send(command)
        if not self._conn.poll(timeout_s):
            raise TimeoutError(f"viewer group {self.pid}: no answer to {command[0]}")
        answer, *payload = self._conn.recv()
        if answer == "error":
            raise RuntimeError(f"viewer group {self.pid}: {payload[0]}")
        return payload[0]

    def add(self, urls: list[str], token: str) -> None:
        """Connect one viewer to each URL; returns once every viewer of the group has
        received video."""
        self.size = self._ask("add", urls, token, timeout_s=CONNECT_TIMEOUT_S + 10)

    def arrivals(self) -> list[list[Arrival]]:
        """Every frame each viewer has received so far."""
        result: list[list[Arrival]] = self._ask("arrivals", timeout_s=30)
        return result

    def close(self) -> None:
        with contextlib.suppress(OSError):  # it exited already
            self._conn.send(("close",))
        self.process.join(15)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


@dataclass(frozen=True)
class Delivery:
    """One viewer's frames in a window."""

    received: int
    on_time: int
    sent: int  # frames the source sent over the span of RTP time the window received
    expected: int  # frames the source's frame rate makes in the window's wall time

    @property
    def share(self) -> float:
        return self.on_time / self.sent if self.sent else 0.0


def delivery(
    arrivals: list[Arrival],
    start: float,
    end: float,
    frame_rate: float,
    late_s: float,
    memory_s: float = 2.0,
) -> Delivery:
    """Frames that arrived in [start, end], those of them no more than ``late_s`` behind
    their schedule, and how many the source sent over the same span of media time (a
    frame lost on the way leaves a gap in the RTP timestamps).

    A frame's schedule is its RTP time placed by the best (least delayed) arrival of the
    ``memory_s`` before it: a stall or a backlog makes frames late, a steady delay or a
    source that drifts slowly does not.
    """
    window = [(t, ts) for t, ts in arrivals if start - memory_s <= t <= end]
    expected = round(frame_rate * (end - start))
    if not window:
        return Delivery(0, 0, expected, expected)
    first_ts = window[0][1]
    behind = [t - ((ts - first_ts) % RTP_WRAP) / RTP_CLOCK for t, ts in window]
    media = [t - b for (t, _), b in zip(window, behind, strict=True)]  # seconds of RTP time
    received = on_time = 0
    span = [math.inf, -math.inf]
    recent: deque[tuple[float, float]] = deque()  # (arrival, behind), best first
    for (t, _), late, at in zip(window, behind, media, strict=True):
        while recent and recent[-1][1] >= late:
            recent.pop()
        recent.append((t, late))
        while recent[0][0] < t - memory_s:
            recent.popleft()
        if t >= start:
            received += 1
            on_time += late - recent[0][1] <= late_s
            span = [min(span[0], at), max(span[1], at)]
    sent = round((span[1] - span[0]) * frame_rate) + 1 if received else expected
    return Delivery(received, on_time, sent, expected)
