"""A long-lived child that demuxes many inputs the way a media worker does.

Starting a worker costs about half a second, far too much per fuzz example, so this
child reads inputs from stdin in a loop: each is ``u32 length`` (network order) and
that many bytes of a container. It opens them with PyAV from memory, selects tracks
and runs the remux and audio stages of the pipeline over every packet, then answers
one line on stdout:

    ok <packets>                       the input was read to the end
    fail <reason>                      a failure a worker would report (one line)
    unexpected <type> in <where>: ...  an exception a worker would not turn into a
                                       reason; <where> is the innermost function of
                                       relaystream it came through

A crash (signal) or a hang of the child is a failure of the code under test as well.
"""

from __future__ import annotations

import io
import struct
import sys
from typing import IO

import av

from relaystream.media.audio import AudioToOpus
from relaystream.media.pipeline import describe_tracks, select_tracks
from relaystream.media.source import SourceError, describe_ffmpeg_error
from relaystream.media.spec import MediaType
from relaystream.media.video import VideoRemuxer

_LENGTH = struct.Struct("!I")


def demux_all(data: bytes) -> int:
    """Packets relayed from ``data``; raises SourceError for what a worker reports."""
    try:
        container = av.open(io.BytesIO(data), mode="r", timeout=5.0)
    except Exception as exc:
        raise SourceError(describe_ffmpeg_error(exc)) from exc
    relayed = 0
    with container:
        tracks = select_tracks(container, MediaType.AUDIO_AND_VIDEO)
        describe_tracks(tracks)
        video = VideoRemuxer(tracks.video) if tracks.video is not None else None
        audio = AudioToOpus(tracks.audio) if tracks.audio is not None else None
        try:
            for packet in container.demux(tracks.streams):
                if packet.size == 0:
                    continue
                if packet.stream is tracks.video and video is not None:
                    relayed += sum(1 for _ in video.process(packet))
                elif audio is not None:
                    relayed += sum(1 for _ in audio.process(packet, 0.0))
            for processor in (video, audio):
                if processor is not None:
                    relayed += sum(1 for _ in processor.finish())
        except av.error.EOFError:
            pass
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(describe_ffmpeg_error(exc)) from exc
    return relayed


def answer(data: bytes) -> str:
    try:
        return f"ok {demux_all(data)}"
    except SourceError as exc:
        return f"fail {exc.detail}"
    except Exception as exc:
        return f"unexpected {type(exc).__name__} in {_where(exc)}: {exc}"


def _where(exc: BaseException) -> str:
    where = "?"
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if "relaystream" in code.co_filename:
            where = code.co_qualname
        tb = tb.tb_next
    return where


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    while header := stdin.read(_LENGTH.size):
        (length,) = _LENGTH.unpack(header)
        line = answer(stdin.read(length)).replace("\n", " | ")
        stdout.write(line.encode("utf-8", "backslashreplace") + b"\n")
        stdout.flush()


if __name__ == "__main__":
    av.logging.set_level(av.logging.PANIC)  # corrupt input makes FFmpeg chatty on stderr
    serve(sys.stdin.buffer, sys.stdout.buffer)
