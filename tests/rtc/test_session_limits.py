"""What one client cannot do to the SFU: open sessions without end, or leave half-open
ones behind."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection

from relaystream.rtc.ice import IceAddresses, use_ice_addresses
from relaystream.rtc.room import TrackKind
from relaystream.rtc.session_caps import SessionCaps, SessionLimits
from relaystream.rtc.signaling import SignalingSettings
from tests.support.sfu import embedded_sfu
from tests.support.viewer import WhepRefused, WhepViewer


async def post_offer_and_walk_away(url: str, token: str) -> None:
    """A client that asks for a session and never connects it."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    use_ice_addresses(pc, IceAddresses())
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            url,
            data=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
        )
        assert response.status == 201
    await pc.close()


async def test_a_full_room_refuses_with_503_and_a_session_that_never_connects_is_closed(
    clips: dict[str, Path],
) -> None:
    settings = SignalingSettings(
        session_limits=SessionLimits(per_room=2, per_node=10), connect_timeout_s=2.0
    )
    async with embedded_sfu(clips["mp4"], settings) as sfu:
        token = sfu.subscribe_token()
        watching = WhepViewer(sfu.whep_url, token, kinds=("video",))
        await watching.connect()
        try:
            await watching.wait_for_media("video", 0.5)
            walked_away_at = time.monotonic()
            await post_offer_and_walk_away(sfu.whep_url, token)
            assert sfu.whep.session_count == 2

            with pytest.raises(WhepRefused) as refused:
                await WhepViewer(sfu.whep_url, token).connect()
            assert refused.value.status == 503
            assert "maximum of 2 sessions" in str(refused.value)

            # The abandoned session is closed after connect_timeout_s: its place frees up.
            deadline = time.monotonic() + 15
            while sfu.whep.session_count > 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert sfu.whep.session_count == 1
            assert time.monotonic() - walked_away_at >= 1.5
            assert sfu.publication.tracks[TrackKind.VIDEO].subscriber_count == 1  # the watcher's
            late = WhepViewer(sfu.whep_url, token, kinds=("video",))
            await late.connect()
            await late.wait_for_media("video", 0.5)
            await late.close()
            # The one who stayed connected was never cut off by the timer.
            seen = len(watching.tracks["video"].frames)
            await watching.wait_for_media("video", watching.tracks["video"].duration_s() + 0.5)
            assert len(watching.tracks["video"].frames) > seen
        finally:
            await watching.close()


def test_the_node_cap_counts_every_room_and_a_slot_is_given_back_once() -> None:
    caps = SessionCaps(SessionLimits(per_room=5, per_node=2))
    first = caps.admit(("app", "a"))
    caps.admit(("app", "b"))
    with pytest.raises(web.HTTPServiceUnavailable) as full:
        caps.admit(("app", "c"))
    assert "maximum of 2 sessions" in (full.value.text or "")
    assert full.value.headers["Retry-After"]
    first.release()
    first.release()  # twice: still only one place freed
    caps.admit(("app", "c"))
    assert caps.total == 2
    with pytest.raises(web.HTTPServiceUnavailable):
        caps.admit(("app", "d"))
