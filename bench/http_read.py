"""CPU cost of reading a source through the checked HTTP client (PyAV ``io_open``)
against FFmpeg's own http protocol.

Demuxes the reference clip (720p30, ~2.6 Mbit/s MP4, index at the end) from an HTTP
server on 127.0.0.1 (in another process) as fast as it can, several times each way, and
reports CPU seconds (user + system) per MB read and what that costs at the clip's
bitrate in real time. The difference is the price of the Python read path; demuxing
itself is the same both ways.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
from tests.support.net import static_http_server

from bench.common import CLIP, exit_on_sigterm, reference_clip, stop, table
from relaystream.media.fetch import CheckedOpener
from relaystream.netpolicy import AddressPolicy, CheckedHttpClient


@contextmanager
def served_elsewhere(root: Path) -> Iterator[str]:
    """The test HTTP server (Range support) in its own process, so that only the read
    path is measured here."""
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.http_read", "--serve", str(root)],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
    )
    assert server.stdout is not None
    try:
        yield server.stdout.readline().decode().strip()
    finally:
        stop(server)


def serve(root: Path) -> None:
    with static_http_server(root) as base_url:
        print(base_url, flush=True)
        sys.stdin.read()  # until the bench closes it or stops us


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def demux_all(open_container: Callable[[], Any]) -> tuple[float, int]:
    """(CPU seconds, packets) to open and demux the whole clip once."""
    started = _cpu_s()
    with open_container() as container:
        packets = sum(1 for packet in container.demux() if packet.size)
    return _cpu_s() - started, packets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        exit_on_sigterm()
        serve(args.serve)
        return
    clip, _ = reference_clip()
    size_mb = clip.stat().st_size / 1e6
    realtime_mbps = size_mb * 8 / CLIP.duration_s
    print(f"source: {clip} ({size_mb:.1f} MB, {realtime_mbps:.2f} Mbit/s in real time)")

    with served_elsewhere(clip.parent) as base_url:
        url = f"{base_url}/{clip.name}"

        def checked(buffer_bytes: int) -> Callable[[], Any]:
            def open_container() -> Any:
                client = CheckedHttpClient(AddressPolicy(allow_private=True))
                return av.open(
                    url,
                    io_open=CheckedOpener(client),
                    buffer_size=buffer_bytes,
                    options={"protocol_whitelist": "none"},
                )

            return open_container

        ways: dict[str, Callable[[], Any]] = {
            "ffmpeg http": lambda: av.open(url),
            "checked client, 32 KiB reads": checked(32 << 10),
            "checked client, 256 KiB reads": checked(256 << 10),
        }
        rows = []
        for name, open_container in ways.items():
            demux_all(open_container)  # warm the page cache and the imports
            samples = []
            for _ in range(args.rounds):
                cpu_s, packets = demux_all(open_container)
                samples.append(cpu_s)
            best = min(samples)
            rows.append(
                [
                    name,
                    f"{best * 1000:.0f}",
                    f"{best / size_mb * 1000:.1f}",
                    f"{100 * best / CLIP.duration_s:.2f}",
                    str(packets),
                ]
            )
            time.sleep(0.5)
    print()
    print(
        table(
            ["read path", "CPU ms / clip", "CPU ms / MB", "% of a core in real time", "packets"],
            rows,
        )
    )
    print(f"\nbest of {args.rounds} rounds each; real time = the clip's {CLIP.duration_s:.0f} s")


if __name__ == "__main__":
    main()
