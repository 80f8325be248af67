"""Per source kind: the FFmpeg options to open it with, and whether it is live.

One place per kind, so that a fix for HLS never changes how RTMP is read. The kind comes
from the URL alone (scheme, then the path's extension); FFmpeg still probes the content.
"""

from __future__ import annotations

import ssl
from enum import StrEnum
from urllib.parse import urlsplit

import av.container

from relaystream.media.spec import PipelineSpec

# Debian's CA bundle (package ca-certificates); FFmpeg verifies nothing unless told to.
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


class SourceKind(StrEnum):
    HLS = "hls"
    DASH = "dash"
    HTTP_FILE = "http"  # MP4, FLV, MPEG-TS... over HTTP(S), VOD or an endless live body
    RTMP = "rtmp"
    RTSP = "rtsp"
    SRT = "srt"


# Live kinds that deliver packets as they are produced, not a segment at a time: their
# pacer catches up with the live edge (pacing.py).
CONTINUOUS_KINDS = frozenset(
    {SourceKind.RTMP, SourceKind.RTSP, SourceKind.SRT, SourceKind.HTTP_FILE}
)

# How much of a source FFmpeg reads before the first packet comes out. FLV and MPEG-TS
# announce no stream list, so a stream exists only once its first packet was read, and a
# relay picks its tracks once: the probe must last long enough to see each. A live RTMP
# server starts a new reader's video at the next keyframe while its audio flows at once,
# so that is up to a keyframe interval; 2 s (as much media as bytes allow) covers the
# usual one. A source with both streams is done as soon as both have their codec
# parameters (H.264 SPS/PPS in FLV's sequence header, AAC's config in its first tag); a
# source with only one waits the full 2 s, as the ffmpeg CLI would (5 s).
_PROBE = {"analyzeduration": "2000000", "probesize": "2000000"}
# FFmpeg also reads 40 frames of a millisecond-timestamped stream (FLV) to guess its
# frame rate, which holds the first frame of a live stream by 1.3 s at 30 fps. FLV's
# metadata states the rate and our timestamps come from the packets: no guess needed.
_NO_FRAME_RATE_GUESS = {"fpsprobesize": "0"}
_STREAMING_KINDS = frozenset({SourceKind.RTMP, SourceKind.SRT, SourceKind.HTTP_FILE})

# Read by Debian's ffmpeg CLI (bridge.py): the bundled FFmpeg has no SRT protocol and
# no DASH demuxer.
BRIDGED_KINDS = frozenset({SourceKind.DASH, SourceKind.SRT})


def source_kind(url: str) -> SourceKind:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in {"rtmp", "rtmps"}:
        return SourceKind.RTMP
    if scheme == "rtsp":
        return SourceKind.RTSP
    if scheme == "srt":
        return SourceKind.SRT
    path = parts.path.lower()
    if path.endswith((".m3u8", ".m3u")):
        return SourceKind.HLS
    if path.endswith(".mpd"):
        return SourceKind.DASH
    return SourceKind.HTTP_FILE


def unverified_tls_context() -> ssl.SSLContext:
    """For an app that turned certificate checks off: encrypted, but anyone's server."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def probe_options(kind: SourceKind) -> dict[str, str]:
    """FFmpeg's probing options for reading ``kind``."""
    return _PROBE | (_NO_FRAME_RATE_GUESS if kind in _STREAMING_KINDS else {})


def format_options(spec: PipelineSpec, kind: SourceKind) -> dict[str, str]:
    """FFmpeg options for reading ``spec.url`` as ``kind``, beyond those every source
    gets (source.py: protocol whitelist, timeouts) and its probing (probe_options)."""
    if kind is SourceKind.HLS:
        # Start a live playlist three segments from its end: the live edge, with enough
        # buffered to ride out one slow segment.
        return {"live_start_index": "-3", "max_reload": "3"}
    if kind is SourceKind.RTMP:
        options = {"rtmp_live": "any", "tcp_nodelay": "1"}
        if urlsplit(spec.url).scheme.lower() == "rtmps":
            # FFmpeg's TLS checks nothing unless asked; HTTPS goes through netpolicy's
            # client, which does.
            options |= {"tls_verify": "1", "ca_file": CA_BUNDLE} if spec.tls_verify else {}
        return options
    if kind is SourceKind.RTSP:
        # TCP interleaving: no UDP ports to open, and no loss on a busy machine.
        return {"rtsp_transport": "tcp", "timeout": str(int(spec.open_timeout_s * 1_000_000))}
    return {}


def is_live(container: av.container.InputContainer, kind: SourceKind) -> bool:
    """A source with a known duration (HLS: ``#EXT-X-ENDLIST``) is VOD, the rest live.

    RTMP and SRT are live by nature, whatever their metadata claims.
    """
    if kind in {SourceKind.RTMP, SourceKind.SRT}:
        return True
    return container.duration is None or container.duration <= 0


def duration_s(container: av.container.InputContainer) -> float | None:
    if container.duration is None or container.duration <= 0:
        return None
    return container.duration / 1_000_000
