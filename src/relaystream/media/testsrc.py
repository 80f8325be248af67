"""The built-in test stream: a synthetic H.264 + AAC clip made with FFmpeg's lavfi sources.

The demo relays it, and the test suite makes its sources with it, so no binary media
file is ever shipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.container
from av.video.frame import PictureType

# Container format name by file suffix.
_FORMATS = {".mp4": "mp4", ".flv": "flv", ".ts": "mpegts", ".mkv": "matroska"}


@dataclass(frozen=True)
class ClipSpec:
    """What the clip looks like; defaults give a small, quick-to-make stream."""

    duration_s: float = 6.0
    width: int = 640
    height: int = 360
    frame_rate: int = 30
    keyframe_interval_s: float = 1.0
    # Live encoders send none, since WebRTC receivers expect decode order to be
    # display order; VOD files often have some.
    b_frames: int = 0
    video_codec: str = "libx264"
    audio_codec: str | None = "aac"
    audio_rate: int = 44_100
    tone_hz: int = 440


def make_test_clip(path: Path, clip: ClipSpec | None = None) -> Path:
    """Write a clip with a moving test pattern and a sine tone; returns ``path``."""
    clip = clip or ClipSpec()
    with av.open(str(path), "w", format=_FORMATS[path.suffix]) as out:
        video_out = _add_video_stream(out, clip)
        audio_out = _add_audio_stream(out, clip) if clip.audio_codec else None
        tone = _tone_frames(audio_out, clip) if audio_out is not None else iter(())
        pending_audio = next(tone, None)
        # Interleave by time so the file streams well over HTTP and FLV.
        for index, frame in enumerate(_pattern_frames(clip)):
            frame_time_s = index / clip.frame_rate
            while audio_out is not None and pending_audio is not None:
                if _seconds(pending_audio) > frame_time_s:
                    break
                out.mux(audio_out.encode(pending_audio))
                pending_audio = next(tone, None)
            out.mux(video_out.encode(frame))
        out.mux(video_out.encode(None))
        if audio_out is not None:
            while pending_audio is not None:
                out.mux(audio_out.encode(pending_audio))
                pending_audio = next(tone, None)
            out.mux(audio_out.encode(None))
    return path


def _seconds(frame: av.AudioFrame) -> float:
    return float((frame.pts or 0) * (frame.time_base or 0))


def _add_video_stream(out: av.container.OutputContainer, clip: ClipSpec) -> av.VideoStream:
    stream = out.add_stream(clip.video_codec, rate=clip.frame_rate)
    assert isinstance(stream, av.VideoStream)
    stream.width = clip.width
    stream.height = clip.height
    stream.pix_fmt = "yuv420p"
    stream.codec_context.gop_size = max(1, round(clip.keyframe_interval_s * clip.frame_rate))
    stream.codec_context.max_b_frames = clip.b_frames
    if clip.video_codec == "libx264":
        stream.codec_context.options = {"preset": "veryfast"}
    return stream


def _add_audio_stream(out: av.container.OutputContainer, clip: ClipSpec) -> av.AudioStream:
    stream = out.add_stream(clip.audio_codec or "aac", rate=clip.audio_rate)
    assert isinstance(stream, av.AudioStream)
    stream.layout = "stereo"
    return stream


def _pattern_frames(clip: ClipSpec) -> Iterator[av.VideoFrame]:
    pattern = av.open(
        f"testsrc2=size={clip.width}x{clip.height}:rate={clip.frame_rate}"
        f":duration={clip.duration_s}",
        format="lavfi",
    )
    with pattern:
        for frame in pattern.decode(video=0):
            frame = frame.reformat(format="yuv420p")
            frame.pict_type = PictureType.NONE
            yield frame


def _tone_frames(stream: av.AudioStream, clip: ClipSpec) -> Iterator[av.AudioFrame]:
    tone = av.open(
        f"sine=frequency={clip.tone_hz}:sample_rate={clip.audio_rate}:duration={clip.duration_s}",
        format="lavfi",
    )
    resampler = av.AudioResampler(
        format=stream.codec_context.format,
        layout="stereo",
        rate=clip.audio_rate,
        frame_size=stream.codec_context.frame_size or 1024,
    )
    samples = 0
    with tone:
        for frame in [*tone.decode(audio=0), None]:
            for resampled in resampler.resample(frame):
                resampled.pts = samples
                resampled.time_base = Fraction(1, clip.audio_rate)
                samples += resampled.samples
                yield resampled
