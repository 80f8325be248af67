"""A real Janus (Debian's ``janus``) on 127.0.0.1, and an aiortc subscriber that joins
its VideoRoom through Janus's own HTTP API.

Janus gets a config dir made here: the HTTP transport only, bound to 127.0.0.1; the
VideoRoom plugin only; ICE only on the namespace's own interface (tests/support/netns.py:
Janus gathers nothing on ``lo``), no STUN. Run it only inside such a namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from relaystream.rtc.ice import IceAddresses, use_ice_addresses
from relaystream.rtc.janus import JanusRoomAccess, JanusSession
from tests.support.net import free_port
from tests.support.netns import CANDIDATE_INTERFACE
from tests.support.server import stop_process
from tests.support.viewer import DecodedTrack, SeenFrame

JANUS_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
_OTHER_PLUGINS = (
    "audiobridge duktape echotest lua nosip recordplay sip streaming textroom videocall voicemail"
)
_OTHER_TRANSPORTS = "mqtt nanomsg pfunix rabbitmq websockets"


def _disable(kind: str, names: str) -> str:
    return ",".join(f"libjanus_{name}.so" for name in names.split())


@contextlib.contextmanager
def janus_server(workdir: Path, *, allow_origin: str | None = None) -> Iterator[str]:
    """Janus's HTTP API URL, while Janus runs; with ``allow_origin``, browsers let only
    pages of that origin read its answers. (Not ``enforce_cors``: it also refuses every
    request without an ``Origin``, relaystream's own included.)"""
    cors = f'allow_origin = "{allow_origin}"' if allow_origin else ""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (workdir / "janus.jcfg").write_text(
        f"""
general: {{
  configs_folder = "{workdir}"
  plugins_folder = "{JANUS_LIB}/plugins"
  transports_folder = "{JANUS_LIB}/transports"
  events_folder = "{JANUS_LIB}/events"
  loggers_folder = "{JANUS_LIB}/loggers"
  debug_level = 4
  interface = "127.0.0.1"
  session_timeout = 60
}}
plugins: {{ disable = "{_disable("plugin", _OTHER_PLUGINS)}" }}
transports: {{ disable = "{_disable("transport", _OTHER_TRANSPORTS)}" }}
events: {{ broadcast = false }}
loggers: {{ disable = "libjanus_jsonlog.so" }}
nat: {{
  ice_enforce_list = "{CANDIDATE_INTERFACE}"
  nice_debug = false
}}
media: {{ ipv6 = false }}
"""
    )
    (workdir / "janus.transport.http.jcfg").write_text(
        f"""
general: {{
  base_path = "/janus"
  http = true
  port = {port}
  ip = "127.0.0.1"
  https = false
}}
admin: {{ admin_http = false }}
cors: {{
  {cors}
}}
"""
    )
    (workdir / "janus.plugin.videoroom.jcfg").write_text("general: { }\n")
    log = (workdir / "janus.log").open("ab")
    process = subprocess.Popen(
        ["janus", "--configs-folder", str(workdir), "--config", str(workdir / "janus.jcfg")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/janus"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, (workdir / "janus.log").read_text()
            try:
                with urllib.request.urlopen(f"{url}/info", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, (workdir / "janus.log").read_text()
                time.sleep(0.2)
        yield url
    finally:
        stop_process(process)


async def list_participants(url: str, room: int) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        session = JanusSession(http, url)
        await session.open()
        try:
            data = await session.request({"request": "listparticipants", "room": room})
        finally:
            await session.destroy()
    return list(data.get("participants", []))


class JanusSubscriber:
    """Watches one publisher of a Janus VideoRoom and decodes what it sends."""

    def __init__(self, url: str, access: JanusRoomAccess, display: str) -> None:
        self._url = url
        self._access = access
        self._display = display
        self._http = aiohttp.ClientSession()
        self._session = JanusSession(self._http, url)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.tracks: dict[str, DecodedTrack] = {}
        self._readers: list[asyncio.Task[None]] = []

    async def connect(self) -> None:
        participants = await list_participants(self._url, self._access.room)
        feed = next(p["id"] for p in participants if p.get("display") == self._display)
        await self._session.open()
        join = {
            "request": "join",
            "ptype": "subscriber",
            "room": self._access.room,
            "pin": self._access.pin,
            "streams": [{"feed": feed}],
        }
        await self._session.message(join)
        offer = await self._jsep("offer")

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            decoded = self.tracks[track.kind] = DecodedTrack(track.kind)
            self._readers.append(asyncio.ensure_future(self._read(track, decoded)))

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        use_ice_addresses(self.pc, IceAddresses())
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await self._session.message(
            {"request": "start", "room": self._access.room},
            {"type": "answer", "sdp": self.pc.localDescription.sdp},
        )
        await self._session.end_of_candidates()

    async def _jsep(self, kind: str) -> str:
        async with asyncio.timeout(10):
            while True:
                event = await self._session.next_event()
                jsep = event.get("jsep")
                if jsep and jsep.get("type") == kind:
                    return str(jsep["sdp"])

    async def _read(self, track: MediaStreamTrack, decoded: DecodedTrack) -> None:
        try:
            while True:
                decoded.frames.append(SeenFrame.of(await track.recv()))
        except MediaStreamError:
            decoded.ended.set()

    async def wait_for_media(
        self, kind: str, seconds: float, timeout_s: float = 30.0
    ) -> DecodedTrack:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            track = self.tracks.get(kind)
            if track is not None and track.duration_s() >= seconds:
                return track
            await asyncio.sleep(0.1)
        raise AssertionError(f"not {seconds} s of {kind} decoded from Janus in {timeout_s} s")

    async def close(self) -> None:
        for reader in self._readers:
            reader.cancel()
        await self._session.destroy()
        await self.pc.close()
        await self._http.close()
