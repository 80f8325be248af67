"""Where a profiled process's busy time went, from py-spy's collapsed stacks.

Run from the repository root on a file written by ``bench.fanout --profile`` (or by
``py-spy record --format raw`` by hand)::

    .venv/bin/python -m bench.profile_shares sfu8.txt

Each sample's stack goes to the first bucket below that one of its frames matches, so
the shares add up to 100 % of the busy samples. Idle samples are left out: py-spy
drops most of them itself, and those it keeps in ``--nonblocking`` mode (the event
loop waiting in ``epoll``) are dropped here. The buckets are the SFU's per-packet
costs; what matches none is "other" (mostly the event loop's own scheduling).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from bench.common import table

# (bucket, substrings of a frame "function (file:line)"); the first bucket that matches
# any frame of a stack takes the sample.
BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sendto: one syscall per RTP packet per viewer", ("sendto (asyncio/selector_events.py",)),
    ("SRTP protect, per packet per viewer", ("protect (pylibsrtp",)),
    ("incoming RTCP (receive, unprotect, parse; NACK → resend)", ("_recv_next", "_handle_rtcp")),
    ("NTP time (abs-send-time, sender reports)", ("current_ntp_time",)),
    (
        "H.264 packetization (NAL split, FU-A/STAP-A)",
        ("_packetize", "_split_bitstream", "pack (aiortc/codecs/h264.py"),
    ),
    (
        "building RTP packets: RtpPacket, header extensions, serialize",
        ("(aiortc/rtp.py", "(relaystream/rtc/rtp_header.py"),
    ),
    (
        "the send path's Python (DTLS transport → ICE connection → datagram transport)",
        ("RTCDtlsTransport._send_rtp", "Connection.send (aioice", "_UdpLink.send ("),
    ),
    ("ICE (consent checks, STUN)", ("aioice/",)),
    ("the publication's feed (pacing, av.Packets, fan-out)", ("feed (bench/fanout.py",)),
    ("rest of the viewers' send loops", ("_run_rtp", "shared_packetization.py")),
)
OTHER = "other"
IDLE_LEAF = "EpollSelector.select ("


def samples(path: Path) -> list[tuple[str, int]]:
    """(stack, count) of every busy sample line."""
    found = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit() and not stack.rpartition(";")[2].startswith(IDLE_LEAF):
            found.append((stack, int(count)))
    return found


def read_samples(path: Path) -> Counter[str]:
    """Samples per bucket."""
    counts: Counter[str] = Counter()
    for stack, count in samples(path):
        counts[bucket_of(stack)] += count
    return counts


def bucket_of(stack: str) -> str:
    for name, needles in BUCKETS:
        if any(needle in stack for needle in needles):
            return name
    return OTHER


def in_send_loops(path: Path) -> tuple[int, int]:
    """Samples whose stack is inside a viewer's RTP send loop, and all samples."""
    inside = total = 0
    for stack, count in samples(path):
        total += count
        if "_run_rtp" in stack or "shared_packetization.py" in stack:
            inside += count
    return inside, total


def shares_report(path: Path) -> str:
    counts = read_samples(path)
    total = sum(counts.values())
    if not total:
        return "no samples"
    names = [name for name, _ in BUCKETS] + [OTHER]
    rows = [[name, str(counts[name]), f"{100 * counts[name] / total:.1f} %"] for name in names]
    inside, _ = in_send_loops(path)
    rows.append(["(all of the viewers' send loops)", str(inside), f"{100 * inside / total:.1f} %"])
    return table(["where", "samples", "share of busy time"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path, help="py-spy --format raw output")
    print(shares_report(parser.parse_args().profile))


if __name__ == "__main__":
    main()
