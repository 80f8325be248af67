"""Remux mode forwards the source's H.264 untouched: it never decodes or encodes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from relaystream.media.events import WorkerEvent
from relaystream.media.pipeline import RelayPipeline
from relaystream.media.spec import MediaType, PipelineSpec, StreamMode
from relaystream.media.testsrc import ClipSpec, make_test_clip
from relaystream.media.wire import EncodedPacket, MessageKind
from tests.support.net import static_http_server


def relay_video(url: str, mode: StreamMode) -> bytes:
    """Run the pipeline in-process; the H.264 bitstream it would send to the room."""
    packets: list[EncodedPacket] = []
    events: list[WorkerEvent] = []
    spec = PipelineSpec(
        url=url,
        media_type=MediaType.VIDEO_ONLY,
        stream_mode=mode,
        video_width=320,
        video_height=180,
        frame_rate=15,
        allow_private_sources=True,
    )
    RelayPipeline(spec, packets.append, events.append).run()
    assert all(p.kind is MessageKind.VIDEO for p in packets)
    return b"".join(p.data for p in packets)


def test_remux_output_is_the_source_bitstream_byte_for_byte(tmp_path: Path) -> None:
    clip = make_test_clip(tmp_path / "clip.mp4", ClipSpec(duration_s=2.0, width=320, height=180))
    # The reference: the ffmpeg CLI copying the same video into an Annex B elementary stream.
    reference = tmp_path / "reference.h264"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(clip),
            "-an",
            "-c:v",
            "copy",
            "-bsf:v",
            "h264_mp4toannexb",
            "-f",
            "h264",
            str(reference),
        ],
        check=True,
    )
    with static_http_server(tmp_path) as base_url:
        remuxed = relay_video(f"{base_url}/clip.mp4", StreamMode.REMUX)
        transcoded = relay_video(f"{base_url}/clip.mp4", StreamMode.TRANSCODE)
    assert remuxed == reference.read_bytes()
    # The comparison can tell: a re-encoded stream is not the source's bitstream.
    assert transcoded and transcoded != reference.read_bytes()
