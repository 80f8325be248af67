"""Test media made on the fly with the project's own test-stream generator."""

from __future__ import annotations

from pathlib import Path

import av

from relaystream.media.testsrc import ClipSpec, make_test_clip

STANDARD_CLIP = ClipSpec(duration_s=20.0, width=640, height=360, frame_rate=30)


def remux(source: Path, target: Path, container_format: str) -> Path:
    """Copy every packet of ``source`` into another container, no re-encode."""
    with av.open(str(source)) as src, av.open(str(target), "w", format=container_format) as out:
        mapping = {s.index: out.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is None:
                continue
            packet.stream = mapping[packet.stream.index]
            out.mux(packet)
    return target


def make_clips(directory: Path, clip: ClipSpec = STANDARD_CLIP) -> dict[str, Path]:
    """The same clip as MP4, FLV and MPEG-TS, keyed by suffix without the dot."""
    directory.mkdir(parents=True, exist_ok=True)
    mp4 = make_test_clip(directory / "clip.mp4", clip)
    return {
        "mp4": mp4,
        "flv": remux(mp4, directory / "clip.flv", "flv"),
        "ts": remux(mp4, directory / "clip.ts", "mpegts"),
    }
