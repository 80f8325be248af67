"""WebRTC viewers that count the frames they receive instead of decoding them.

A decoding viewer of a 720p30 stream costs a good part of a core; on a 2-core machine
that would compete with what a benchmark measures. aiortc reassembles each frame from
its RTP packets and then hands it to the decoder it got from ``get_decoder``: while
``counting_decoders()`` is active, every receiver created gets a ``CountingDecoder``
instead, which counts the frames and returns none (optionally the first one still
decodes, as proof that the stream is watchable). The replacement is undone on exit, so
a later benchmark in the same process gets aiortc's own decoders back.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class CountingDecoder:
    """Stands in for aiortc's decoder of one track: counts reassembled frames; decodes
    them only if given a real decoder."""

    def __init__(self, kind: str, real: Any | None) -> None:
        self.kind = kind  # "audio" or "video"
        self.real = real
        self.frames = 0
        self.decoded = 0

    def decode(self, encoded_frame: Any) -> list[Any]:
        self.frames += 1
        if self.real is None:
            return []
        frames = self.real.decode(encoded_frame)
        self.decoded += len(frames)
        return list(frames)


@contextmanager
def counting_decoders(*, decode_first_video: bool = False) -> Iterator[list[CountingDecoder]]:
    """Receivers made inside count their frames; yields the decoders as they are made.

    aiortc asks for a decoder on the receiver's own thread, hence the lock.
    """
    import aiortc.rtcrtpreceiver as receiver

    make_decoder = receiver.get_decoder
    decoders: list[CountingDecoder] = []
    lock = threading.Lock()

    def get_decoder(codec: Any) -> CountingDecoder:
        kind = codec.mimeType.partition("/")[0].lower()
        with lock:
            first_video = not any(d.kind == "video" for d in decoders)
            real = make_decoder(codec) if decode_first_video and first_video else None
            decoder = CountingDecoder(kind, real)
            decoders.append(decoder)
        return decoder

    receiver.get_decoder = get_decoder
    try:
        yield decoders
    finally:
        receiver.get_decoder = make_decoder
