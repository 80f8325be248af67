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


def with_timestamp_jumps(source: Path, target: Path, offsets_s: list[float]) -> Path:
    """MPEG-TS made of ``source`` cut into equal sections, section i shifted by
    ``offsets_s[i]``: a jump forward (+1000 s) then back (0) is what a source whose
    encoder restarts, or a spliced playlist, sends."""
    with av.open(str(source)) as src:
        duration_s = (src.duration or 0) / 1_000_000
    section_s = duration_s / len(offsets_s)
    sections = []
    for index, offset_s in enumerate(offsets_s):
        part = target.with_suffix(f".{index}.ts")
        with (
            av.open(str(source)) as src,
            av.open(str(part), "w", format="mpegts") as out,
        ):
            mapping = {s.index: out.add_stream_from_template(s) for s in src.streams}
            for packet in src.demux():
                if packet.dts is None or packet.time_base is None:
                    continue
                at_s = float(packet.dts * packet.time_base)
                if not index * section_s <= at_s < (index + 1) * section_s:
                    continue
                shift = round(offset_s / packet.time_base)
                packet.dts += shift
                if packet.pts is not None:
                    packet.pts += shift
                packet.stream = mapping[packet.stream.index]
                out.mux(packet)
        sections.append(part.read_bytes())
        part.unlink()
    # MPEG-TS streams concatenate: the demuxer sees one stream whose clock jumps.
    target.write_bytes(b"".join(sections))
    return target
