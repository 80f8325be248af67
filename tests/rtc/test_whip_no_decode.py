"""WHIP forwards what a publisher sends without decoding it: the server's CPU shows it.

Forwarding costs what a stream's packets cost, decoding what its pixels cost. So an
aiortc peer publishes a stream with many pixels in few packets (4K at 1 Mbit/s) over
WHIP to a viewer, and the server's CPU per forwarded frame is compared with the CPU this
process spends decoding the very same frames. Forwarding measures about a third of a
decode here; a server that decoded would spend more than a whole one.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import av
import pytest

from tests.support.publisher import WhipPublisher
from tests.support.server import APP_ID, RelayServer
from tests.support.viewer import WhepViewer

CLIP_S = 4
WINDOW_S = 2.0
MIN_FRAMES = 20
MAX_FORWARD_TO_DECODE = 0.7


@pytest.fixture(scope="module")
def uhd_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3840x2160, 30 fps H.264 at 1 Mbit/s, no B-frames, no audio, as MPEG-TS."""
    path = tmp_path_factory.mktemp("uhd") / "uhd.ts"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", "testsrc2=size=3840x2160:rate=30", "-t", str(CLIP_S),
         "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "1000k", "-g", "30", "-bf", "0",
         "-pix_fmt", "yuv420p", "-an", str(path)],
        check=True,
    )  # fmt: skip
    return path


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def demo_clip_made(server: RelayServer, timeout_s: float = 60.0) -> None:
    """A new server makes its demo clip in the background: not a cost to measure."""
    deadline = time.monotonic() + timeout_s
    while not (server.data_dir / "demo" / "testsrc.flv").exists():
        assert time.monotonic() < deadline, "the demo clip was never made"
        await asyncio.sleep(0.2)


def decode_cpu_per_frame_s(clip: Path) -> float:
    """CPU seconds (all threads of this process) to decode one frame of ``clip``."""
    started = time.process_time()
    with av.open(str(clip)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    return (time.process_time() - started) / frames


@pytest.mark.media
async def test_the_server_forwards_a_whip_publish_for_less_than_a_decode(
    relay_server: RelayServer, uhd_clip: Path
) -> None:
    await demo_clip_made(relay_server)
    room, user = "room-no-decode", "uhd-camera"
    publisher = WhipPublisher(
        f"{relay_server.base_url}/whip/{APP_ID}/{room}/{user}",
        relay_server.publish_token(room, user),
        uhd_clip,
        audio=False,
    )
    viewer = WhepViewer(
        f"{relay_server.base_url}/whep/{APP_ID}/{room}/{user}",
        relay_server.subscribe_token(room),
        kinds=("video",),
    )
    try:
        await publisher.connect()
        await viewer.connect()
        video = await viewer.wait_for_media("video", 0.3)
        frames, cpu = len(video.frames), cpu_s(relay_server.process.pid)
        await asyncio.sleep(WINDOW_S)
        forwarded = len(video.frames) - frames
        server_s = cpu_s(relay_server.process.pid) - cpu
    finally:
        await viewer.close()
        await publisher.close()

    assert {(f.width, f.height) for f in video.frames} == {(3840, 2160)}
    assert forwarded >= MIN_FRAMES, f"only {forwarded} frames in {WINDOW_S} s"
    forward_s, decode_s = server_s / forwarded, decode_cpu_per_frame_s(uhd_clip)
    assert forward_s < decode_s * MAX_FORWARD_TO_DECODE, (
        f"the server spent {forward_s * 1000:.2f} ms of CPU per forwarded frame; "
        f"decoding one costs {decode_s * 1000:.2f} ms"
    )
