"""A real WebRTC viewer: an aiortc peer that subscribes over WHEP and decodes frames."""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import time
from dataclasses import dataclass, field

import aiohttp
import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, sdp
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from relaystream.rtc.ice import IceAddresses, use_ice_addresses


class WhepRefused(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"WHEP answered {status}: {text}")
        self.status = status


@dataclass(frozen=True)
class SeenFrame:
    """A decoded frame's properties (the pixels themselves are not kept)."""

    received_at: float
    media_time_s: float
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    keyframe: bool = False

    @classmethod
    def of(cls, frame: av.VideoFrame | av.AudioFrame) -> SeenFrame:
        media_time_s = float(frame.pts * frame.time_base)
        if isinstance(frame, av.VideoFrame):
            return cls(
                time.monotonic(),
                media_time_s,
                width=frame.width,
                height=frame.height,
                keyframe=bool(frame.key_frame),
            )
        return cls(time.monotonic(), media_time_s, sample_rate=frame.sample_rate)


@dataclass
class DecodedTrack:
    """What the viewer saw on one track."""

    kind: str
    frames: list[SeenFrame] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def duration_s(self) -> float:
        if len(self.frames) < 2:
            return 0.0
        return self.frames[-1].media_time_s - self.frames[0].media_time_s

    def frame_rate(self) -> float:
        return (len(self.frames) - 1) / self.duration_s() if self.duration_s() else 0.0


LOOPBACK = IceAddresses(local=("127.0.0.1",))


class WhepViewer:
    def __init__(
        self,
        whep_url: str,
        token: str,
        kinds: tuple[str, ...] = ("audio", "video"),
        *,
        ice_addresses: IceAddresses = LOOPBACK,
        ssl: ssl_module.SSLContext | None = None,
    ):
        self.whep_url = whep_url
        self.token = token
        self.kinds = kinds
        self.ice_addresses = ice_addresses  # loopback unless the test plays another host
        self.ssl = ssl
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.ice_server_links: list[str] = []  # the answer's Link headers (STUN/TURN)
        self.tracks: dict[str, DecodedTrack] = {}
        self.session_url: str | None = None
        self._readers: list[asyncio.Task[None]] = []

    async def connect(self) -> None:
        for kind in self.kinds:
            self.pc.addTransceiver(kind, direction="recvonly")
        use_ice_addresses(self.pc, self.ice_addresses)

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            decoded = self.tracks[track.kind] = DecodedTrack(track.kind)
            self._readers.append(asyncio.ensure_future(self._read(track, decoded)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with aiohttp.ClientSession(connector=self._connector()) as http:
            response = await http.post(
                self.whep_url,
                data=self.pc.localDescription.sdp,
                headers={
                    "Content-Type": "application/sdp",
                    "Authorization": f"Bearer {self.token}",
                },
            )
            text = await response.text()
            if response.status != 201:
                await self.pc.close()
                raise WhepRefused(response.status, text)
            location = response.headers["Location"]
            self.ice_server_links = response.headers.getall("Link", [])
        self.session_url = str(aiohttp.client.URL(self.whep_url).join(aiohttp.client.URL(location)))
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=text, type="answer"))

    def _connector(self) -> aiohttp.TCPConnector:
        return aiohttp.TCPConnector(ssl=self.ssl) if self.ssl else aiohttp.TCPConnector()

    async def _read(self, track: MediaStreamTrack, decoded: DecodedTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                decoded.frames.append(SeenFrame.of(frame))
        except MediaStreamError:
            decoded.ended.set()

    async def wait_for_media(
        self, kind: str, seconds: float, timeout_s: float = 30.0
    ) -> DecodedTrack:
        """Wait until ``seconds`` of media time of ``kind`` have been decoded."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            track = self.tracks.get(kind)
            if track is not None and track.duration_s() >= seconds:
                return track
            await asyncio.sleep(0.1)
        got = self.tracks[kind].duration_s() if kind in self.tracks else 0.0
        raise AssertionError(f"only {got:.2f} s of {kind} decoded in {timeout_s} s")

    async def send_picture_loss(self) -> None:
        """Send an RTCP PLI for the video track, as a player does when it lost a packet.

        aiortc sends one only when its jitter buffer sees a loss, which loopback never
        has, so this calls the receiver's own PLI sender directly.
        """
        assert self.pc.remoteDescription is not None
        answer = sdp.SessionDescription.parse(self.pc.remoteDescription.sdp)
        video = next(m for m in answer.media if m.kind == "video")
        receiver = next(t.receiver for t in self.pc.getTransceivers() if t.kind == "video")
        await receiver._send_rtcp_pli(video.ssrc[0].ssrc)

    def selected_remote_address(self) -> tuple[str, str]:
        """(local, remote) host of the ICE candidate pair this viewer's media flows on."""
        transport = self.pc.getTransceivers()[0].receiver.transport.transport
        pair = transport._connection._nominated[1]
        return pair.local_candidate.host, pair.remote_candidate.host

    async def close(self) -> None:
        if self.session_url:
            async with aiohttp.ClientSession(connector=self._connector()) as http:
                await http.delete(self.session_url)
        await self.pc.close()
        for reader in self._readers:
            reader.cancel()
