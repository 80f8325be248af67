"""Per source kind: the FFmpeg options to open it with, and whether it is live.

One place per kind, so that a fix for HLS never changes how RTMP is read. The kind comes
from the URL alone (scheme, then the path's extension); FFmpeg still probes the content.
"""

from __future__ import annotations

from enum import StrEnum
from urllib.parse import urlsplit

import av.container

from relaystream.media.spec import PipelineSpec

# The FFmpeg protocols a source may use, also for what it references (HLS segments,
# redirects): never file, pipe, concat, subfile and the like.
PROTOCOL_WHITELIST = "http,https,tcp,tls,crypto,rtmp,rtmps,rtmpt,udp,rtsp,rtp,hls"
# Debian's CA bundle (package ca-certificates); FFmpeg verifies nothing unless told to.
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Only stream parameters are probed; a live source must not be read seconds ahead.
PROBE_BYTES = 2_000_000
PROBE_DURATION_US = 2_000_000


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


def _tls_options(spec: PipelineSpec) -> dict[str, str]:
    if not spec.tls_verify:
        return {"tls_verify": "0"}
    return {"tls_verify": "1", "ca_file": CA_BUNDLE}


def open_options(spec: PipelineSpec, kind: SourceKind) -> dict[str, str]:
    """FFmpeg options (format and protocol) for opening ``spec.url`` as ``kind``."""
    timeout_us = str(int(spec.open_timeout_s * 1_000_000))
    options = {
        "protocol_whitelist": PROTOCOL_WHITELIST,
        "rw_timeout": timeout_us,
        "analyzeduration": str(PROBE_DURATION_US),
        "probesize": str(PROBE_BYTES),
    }
    scheme = urlsplit(spec.url).scheme.lower()
    if scheme in {"https", "rtmps"}:
        options |= _tls_options(spec)
    if kind is SourceKind.HLS:
        options |= {
            # Start a live playlist three segments from its end: the live edge, with
            # enough buffered to ride out one slow segment.
            "live_start_index": "-3",
            "http_persistent": "1",
            "seg_max_retry": "2",
            "max_reload": "3",
        }
    elif kind is SourceKind.HTTP_FILE:
        # A VOD file whose connection drops is picked up at the same byte offset.
        options |= {"reconnect": "1"}
    elif kind is SourceKind.RTMP:
        options |= {"rtmp_live": "any", "tcp_nodelay": "1"}
    elif kind is SourceKind.RTSP:
        # TCP interleaving: no UDP ports to open, and no loss on a busy machine.
        options |= {"rtsp_transport": "tcp", "timeout": timeout_us}
        del options["rw_timeout"]
    return options


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
