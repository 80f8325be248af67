"""A viewer on another machine: a program to run in that machine's network namespace.

``python -m tests.support.remote_viewer WHEP_URL TOKEN CA_FILE LOCAL_ADDRESS SECONDS``
subscribes to WHEP_URL over HTTPS, trusting only the authority in CA_FILE, with ICE on
LOCAL_ADDRESS, decodes SECONDS of video and prints one JSON line (a ``RemoteViewing``).
When it cannot, it exits non-zero with the reason on stderr.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
import sys
from dataclasses import dataclass

from relaystream.rtc.ice import IceAddresses
from tests.support.viewer import WhepViewer


@dataclass(frozen=True)
class RemoteViewing:
    """What the viewer saw: decoded video, the server's answer, and the (local, remote)
    hosts of the ICE candidate pair its media flowed on."""

    video_s: float
    width: int
    answer_sdp: str
    pair: tuple[str, str]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, line: str | bytes) -> RemoteViewing:
        fields = json.loads(line)
        return cls(fields["video_s"], fields["width"], fields["answer_sdp"], tuple(fields["pair"]))


async def watch(
    whep_url: str, token: str, ca_file: str, local_address: str, seconds: float
) -> RemoteViewing:
    viewer = WhepViewer(
        whep_url,
        token,
        kinds=("video",),
        ice_addresses=IceAddresses(local=(local_address,)),
        ssl=ssl.create_default_context(cafile=ca_file),
    )
    await viewer.connect()
    try:
        video = await viewer.wait_for_media("video", seconds, timeout_s=20)
        assert viewer.pc.remoteDescription is not None
        return RemoteViewing(
            video.duration_s(),
            video.frames[-1].width,
            viewer.pc.remoteDescription.sdp,
            viewer.selected_remote_address(),
        )
    finally:
        await viewer.close()


def main() -> None:
    whep_url, token, ca_file, local_address, seconds = sys.argv[1:]
    viewing = asyncio.run(watch(whep_url, token, ca_file, local_address, float(seconds)))
    print(viewing.to_json(), flush=True)


if __name__ == "__main__":
    main()
