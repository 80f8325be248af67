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


def format_options(spec: PipelineSpec, kind: SourceKind) -> dict[str, str]:
    """FFmpeg options for reading ``spec.url`` as ``kind``, beyond those every source
    gets (source.py: protocol whitelist, timeouts, probing)."""
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
