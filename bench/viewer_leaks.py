"""What a finished WHEP viewer session leaves behind in the SFU process.

Run from the repository root::

    .venv/bin/python -m bench.viewer_leaks [--sessions 100] [--batch 10] [--parallel 5]

This process is the SFU: a RoomRegistry and a WhepEndpoint in an aiohttp app on
127.0.0.1, one publication fed a small H.264 clip in real time, looped. A child process
plays the viewers: aiortc peers (tests.support.viewer.WhepViewer) that join over WHEP,
wait for their first video frame, and leave with DELETE, a few at a time.

After every batch of sessions, with no viewer connected, it collects garbage and
counts, in this process: live objects of each aiortc, aioice, pyee and relaystream
class, asyncio tasks, the publication's subscribers, WHEP sessions, the RSS and the open
file descriptors; and, with ``--tracemalloc``, the lines that hold the most new memory
since the first batch. A class whose count grows with the sessions is a leak.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from aiohttp import web
from tests.support.net import free_port

from bench.fanout import FeedStats, feed, load_annexb
from relaystream.media.testsrc import ClipSpec, make_test_clip
from relaystream.rtc.room import Publication, RoomRegistry, TrackKind
from relaystream.rtc.token import Privilege, generate_token
from relaystream.rtc.whep import WhepEndpoint

APP_ID = "5f8a1c2b3d4e5f6a7b8c9d0e"
APP_KEY = "0123456789abcdef0123456789abcdef"
ROOM_ID, PUBLISHER_ID = "leaks", "relay"
CLIP = ClipSpec(duration_s=4.0, width=320, height=240, frame_rate=25, audio_codec=None)
TRACKED_MODULES = ("aiortc", "aioice", "pyee", "relaystream", "pylibsrtp", "OpenSSL")


def resident_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def reference_chain(target: object, roots: dict[int, str], max_depth: int = 12) -> list[str]:
    """How ``target`` is still reachable: the types from one of ``roots`` down to it."""
    gc.collect()
    frontier: collections.deque[tuple[object, list[str]]] = collections.deque([(target, [])])
    seen = {id(target)}
    ignored = {id(frontier), id(seen)}
    current = asyncio.current_task()
    if current is not None:  # the caller's own locals hold ``target`` too
        ignored.add(id(current.get_coro()))
    while frontier:
        obj, path = frontier.popleft()
        label = type(obj).__qualname__
        if isinstance(obj, asyncio.Task):
            label = f"Task({obj.get_coro().__qualname__})"
        elif asyncio.iscoroutine(obj):
            label = f"coroutine {obj.__qualname__}"
        if id(obj) in roots:
            return [roots[id(obj)], *reversed([*path, label])]
        if len(path) >= max_depth:
            continue
        for referrer in gc.get_referrers(obj):
            if id(referrer) in seen or id(referrer) in ignored or referrer is frontier:
                continue
            if isinstance(referrer, type(sys._getframe())):
                continue
            seen.add(id(referrer))
            frontier.append((referrer, [*path, label]))
    return ["(no path from a root)"]


def leftover_peer_connection() -> object | None:
    from aiortc import RTCPeerConnection

    gc.collect()
    return next((o for o in gc.get_objects() if isinstance(o, RTCPeerConnection)), None)


def tracked_counts() -> collections.Counter[str]:
    gc.collect()
    counts: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        module = type(obj).__module__
        if isinstance(module, str) and module.startswith(TRACKED_MODULES):
            counts[f"{module}.{type(obj).__qualname__}"] += 1
    counts["asyncio.Task (all)"] = len(asyncio.all_tasks())
    return counts


# --- the viewers' process --------------------------------------------------------------


async def run_viewers(url: str, token: str) -> None:
    from tests.support.viewer import WhepViewer

    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def one_session() -> None:
        viewer = WhepViewer(url, token, kinds=("video",))
        try:
            await viewer.connect()
            await viewer.wait_for_media("video", 0.0, timeout_s=20)
            while not viewer.tracks["video"].frames:
                await asyncio.sleep(0.05)
        finally:
            await viewer.close()

    while line := (await reader.readline()).split():
        sessions, parallel = int(line[0]), int(line[1])
        for start in range(0, sessions, parallel):
            await asyncio.gather(*(one_session() for _ in range(min(parallel, sessions - start))))
        print(json.dumps({"done": sessions}), flush=True)


# --- the SFU and the probe (this process) ----------------------------------------------


async def wait_until_idle(whep: WhepEndpoint, publication: Publication, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    track = publication.tracks[TrackKind.VIDEO]
    while whep.session_count or track.subscriber_count:
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.1)


async def run_probe(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as work:
        clip = make_test_clip(Path(work) / "clip.mp4", CLIP)
        packets, length = load_annexb(clip, CLIP.frame_rate)
    rooms = RoomRegistry()
    whep = WhepEndpoint(rooms, lambda app_id: APP_KEY if app_id == APP_ID else None)
    publication = rooms.publish(APP_ID, ROOM_ID, PUBLISHER_ID, frozenset({TrackKind.VIDEO}))
    app = web.Application()
    app.add_routes(whep.routes())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    feeder = asyncio.create_task(feed(publication, packets, length, FeedStats()))
    token = generate_token(
        app_id=APP_ID,
        app_key=APP_KEY,
        room_id=ROOM_ID,
        user_id="viewer",
        privileges=[Privilege.SUBSCRIBE_STREAM],
    )
    url = f"http://127.0.0.1:{port}/whep/{APP_ID}/{ROOM_ID}/{PUBLISHER_ID}"
    viewers = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.viewer_leaks",
        "--role",
        "viewers",
        "--url",
        url,
        "--token",
        token,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert viewers.stdin is not None and viewers.stdout is not None
    if args.tracemalloc:
        tracemalloc.start(8)
    baseline_snapshot: tracemalloc.Snapshot | None = None
    first: collections.Counter[str] | None = None
    done = 0
    print(f"{'sessions':>8} {'RSS MiB':>8} {'fds':>5} {'subscr':>6} {'WHEP':>5}  growth")
    try:
        while done < args.sessions:
            viewers.stdin.write(f"{args.batch} {args.parallel}\n".encode())
            await viewers.stdin.drain()
            await viewers.stdout.readline()
            done += args.batch
            await wait_until_idle(whep, publication, args.settle_s)
            counts = tracked_counts()
            if first is None:
                first = counts
                if args.tracemalloc:
                    baseline_snapshot = tracemalloc.take_snapshot()
            grown = {k: v - first[k] for k, v in counts.items() if v - first[k] > 0}
            biggest = sorted(grown.items(), key=lambda kv: -kv[1])[: args.top]
            print(
                f"{done:>8} {resident_mib():>8.1f} {open_fds():>5} "
                f"{publication.tracks[TrackKind.VIDEO].subscriber_count:>6} "
                f"{whep.session_count:>5}  " + ", ".join(f"{k} +{v}" for k, v in biggest),
                flush=True,
            )
        leftover = leftover_peer_connection()
        if leftover is not None:
            roots = {id(publication): "Publication", id(whep): "WhepEndpoint"}
            roots |= {id(t): f"Task({t.get_coro().__qualname__})" for t in asyncio.all_tasks()}
            roots[id(asyncio.get_running_loop())] = "event loop"
            print("\na closed RTCPeerConnection is still reachable:")
            print("  " + " -> ".join(reference_chain(leftover, roots)))
        if baseline_snapshot is not None:
            gc.collect()
            stats = tracemalloc.take_snapshot().compare_to(baseline_snapshot, "traceback")
            print("\nmemory held since the first batch, by allocation site:")
            for stat in stats[: args.top]:
                print(f"  {stat.size_diff / 1024:+.0f} KiB in {stat.count_diff:+d} blocks")
                for frame in stat.traceback.format()[-6:]:
                    print(f"      {frame}")
    finally:
        viewers.stdin.close()
        await viewers.wait()
        feeder.cancel()
        publication.end()
        await whep.close_all()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--batch", type=int, default=10, help="sessions between probes")
    parser.add_argument("--parallel", type=int, default=5, help="viewers at a time")
    parser.add_argument("--settle-s", type=float, default=10.0, help="wait for idle up to")
    parser.add_argument("--top", type=int, default=8, help="classes/sites listed")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--role", choices=["probe", "viewers"], default="probe")
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "viewers":
        asyncio.run(run_viewers(args.url, args.token))
    else:
        asyncio.run(run_probe(args))


if __name__ == "__main__":
    main()
