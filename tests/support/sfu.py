"""The embedded SFU in the test process: rooms, WHEP on 127.0.0.1, one publication fed
a real H.264 clip in real time, looped; for stories about what happens inside the room."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from aiohttp import web

from relaystream.media.pipeline import VideoRemuxer
from relaystream.media.wire import VIDEO_CLOCK, EncodedPacket
from relaystream.rtc.room import Publication, RoomRegistry, TrackKind
from relaystream.rtc.signaling import SignalingSettings, cors
from relaystream.rtc.token import Privilege, generate_token
from relaystream.rtc.whep import WhepEndpoint
from tests.support.net import free_port

APP_ID = "5f8a1c2b3d4e5f6a7b8c9d0e"
APP_KEY = "0123456789abcdef0123456789abcdef"


@dataclass
class EmbeddedSfu:
    whep: WhepEndpoint
    publication: Publication
    whep_url: str

    def subscribe_token(self, user_id: str = "viewer") -> str:
        return generate_token(
            app_id=APP_ID,
            app_key=APP_KEY,
            room_id=self.publication.room.room_id,
            user_id=user_id,
            privileges=[Privilege.SUBSCRIBE_STREAM],
        )


def annexb_packets(clip: Path) -> tuple[list[EncodedPacket], int]:
    """The clip's H.264 as a remux worker sends it; and the clip's length in 90 kHz ticks."""
    packets: list[EncodedPacket] = []
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        remuxer = VideoRemuxer(stream)
        for packet in container.demux(stream):
            packets.extend(remuxer.process(packet))
    frame_ticks = packets[1].pts - packets[0].pts if len(packets) > 1 else 3000
    return packets, packets[-1].pts + frame_ticks


def as_room_packet(packet: EncodedPacket, pts: int) -> av.Packet[Any]:
    out = av.Packet(packet.data)
    out.pts = out.dts = pts
    out.time_base = VIDEO_CLOCK
    out.is_keyframe = packet.keyframe
    return out


async def feed_in_real_time(
    publication: Publication, packets: list[EncodedPacket], length: int
) -> None:
    """Publish ``packets`` paced by their timestamps, looping, until cancelled."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for loops in itertools.count():
        for packet in packets:
            pts = loops * length + packet.pts
            delay = started + pts / 90_000 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            publication.send(TrackKind.VIDEO, as_room_packet(packet, pts))


@contextlib.asynccontextmanager
async def embedded_sfu(
    clip: Path, settings: SignalingSettings | None = None, room_id: str = "room"
) -> AsyncIterator[EmbeddedSfu]:
    rooms = RoomRegistry()
    whep = WhepEndpoint(rooms, lambda app_id: APP_KEY if app_id == APP_ID else None, settings)
    publication = rooms.publish(APP_ID, room_id, "relay", frozenset({TrackKind.VIDEO}))
    app = web.Application(middlewares=[cors])
    app.add_routes(whep.routes())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    packets, length = await asyncio.to_thread(annexb_packets, clip)
    feeder = asyncio.create_task(feed_in_real_time(publication, packets, length))
    try:
        yield EmbeddedSfu(
            whep, publication, f"http://127.0.0.1:{port}/whep/{APP_ID}/{room_id}/relay"
        )
    finally:
        feeder.cancel()
        publication.end()
        await whep.close_all()
        await runner.cleanup()
