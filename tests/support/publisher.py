"""A real WHIP publisher: an aiortc peer that sends a clip's H.264 and Opus into a room."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer


class WhipRefused(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"WHIP answered {status}: {text}")
        self.status = status


class WhipPublisher:
    """Publishes ``clip`` (an MPEG-TS with H.264 and maybe AAC): its H.264 packets as they
    are (no encode in the test process), its audio encoded to Opus by aiortc."""

    def __init__(self, whip_url: str, token: str, clip: Path, *, audio: bool = True) -> None:
        self.whip_url = whip_url
        self.token = token
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._players = [MediaPlayer(str(clip), decode=False)]
        if audio:
            self._players.append(MediaPlayer(str(clip)))
        self.session_url: str | None = None

    async def connect(self) -> None:
        self.pc.addTransceiver(self._players[0].video, direction="sendonly")
        if len(self._players) > 1:
            self.pc.addTransceiver(self._players[1].audio, direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with aiohttp.ClientSession() as http:
            response = await http.post(
                self.whip_url,
                data=self.pc.localDescription.sdp,
                headers={
                    "Content-Type": "application/sdp",
                    "Authorization": f"Bearer {self.token}",
                },
            )
            text = await response.text()
            if response.status != 201:
                await self.close()
                raise WhipRefused(response.status, text)
            location = response.headers["Location"]
        self.session_url = str(aiohttp.client.URL(self.whip_url).join(aiohttp.client.URL(location)))
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=text, type="answer"))

    async def leave(self) -> int:
        """DELETE the session; returns the status the server answered."""
        assert self.session_url is not None
        async with aiohttp.ClientSession() as http:
            response = await http.delete(self.session_url)
        await self.close()
        return response.status

    async def close(self) -> None:
        await self.pc.close()
        for player in self._players:
            for track in (player.audio, player.video):
                if track is not None:
                    track.stop()
