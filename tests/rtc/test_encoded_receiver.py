"""The aiortc receiver patch: receivers chosen to forward hand out packets; others decode."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamTrack

from relaystream.rtc.encoded_receiver import forward_encoded
from relaystream.rtc.signaling import h264_only

GOP_FRAMES = 30  # the standard test clip: 30 fps, a keyframe every second


async def connect(player: MediaPlayer, *, forward: bool) -> tuple[list[RTCPeerConnection], Any]:
    """A sender and a receiver peer in this process; returns them and the received track."""
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sender.addTransceiver(player.video, direction="sendonly").setCodecPreferences(h264_only())
    received: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

    @receiver.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        received.set_result(track)

    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)
    if forward:
        transceiver = receiver.getTransceivers()[0]
        rtp_receiver: RTCRtpReceiver = transceiver.receiver
        forward_encoded(rtp_receiver)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)
    return [sender, receiver], await asyncio.wait_for(received, 10)


async def first_items(track: MediaStreamTrack, count: int) -> list[Any]:
    return [await asyncio.wait_for(track.recv(), 10) for _ in range(count)]


async def test_a_forwarding_receiver_hands_out_annexb_packets_and_another_still_decodes(
    clips: dict[str, Path],
) -> None:
    forwarding_player = MediaPlayer(str(clips["ts"]), decode=False)
    decoding_player = MediaPlayer(str(clips["ts"]), decode=False)
    forwarding_pcs, forwarded_track = await connect(forwarding_player, forward=True)
    decoding_pcs, decoded_track = await connect(decoding_player, forward=False)
    try:
        packets = await first_items(forwarded_track, GOP_FRAMES + 1)
        frames = await first_items(decoded_track, 3)
    finally:
        for pc in forwarding_pcs + decoding_pcs:
            await pc.close()
        for player in (forwarding_player, decoding_player):
            player.video.stop()

    assert all(isinstance(p, av.Packet) for p in packets)
    assert all(bytes(p).startswith(b"\x00\x00\x00\x01") for p in packets)  # Annex B
    # The stream starts on a keyframe and has the next one a GOP later.
    keyframes = [i for i, p in enumerate(packets) if p.is_keyframe]
    assert keyframes == [0, GOP_FRAMES]
    pts = [p.pts for p in packets]
    assert pts == sorted(pts) and pts[0] == 0
    assert packets[1].pts - packets[0].pts == 90_000 // 30
    assert all(isinstance(f, av.VideoFrame) and f.width == 640 for f in frames)
