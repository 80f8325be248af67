"""Opening a source URL safely: scheme and address policy, FFmpeg options, error mapping."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

import av
import av.container

from relaystream.media.spec import PipelineSpec

ALLOWED_SCHEMES = frozenset({"rtmp", "rtmps", "http", "https", "srt", "rtsp"})

# The FFmpeg protocols a source may use, also for what it references (HLS segments,
# DASH fragments, redirects): never file, pipe, concat, subfile and the like.
_PROTOCOL_WHITELIST = "http,https,tcp,tls,crypto,rtmp,rtmps,rtmpt,srt,udp,rtsp,rtp,hls"


class SourceError(Exception):
    """The source cannot be relayed; ``detail`` is a short, user-facing reason."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _split(url: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise SourceError(f"not a valid URL ({exc})") from None


def check_scheme(url: str) -> str:
    """The URL's scheme, or SourceError if it is not one a relay may pull from."""
    scheme = _split(url).scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        allowed = ", ".join(sorted(ALLOWED_SCHEMES))
        raise SourceError(f"scheme {scheme or '(none)'!r} is not allowed; use one of {allowed}")
    return scheme


def check_source_address(
    url: str, *, allow_private: bool, trusted_prefixes: tuple[str, ...]
) -> None:
    """Refuse a URL whose host resolves to a loopback, private or link-local address.

    Without this, anyone who can call the API could make the server fetch from its own
    network (SSRF). The operator can allow it (``sources.allow_private``).
    """
    check_scheme(url)
    if allow_private or any(url.startswith(prefix) for prefix in trusted_prefixes):
        return
    host = _split(url).hostname
    if not host:
        raise SourceError("the URL has no host")
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError as exc:
        raise SourceError(f"unreachable: cannot resolve host {host!r}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise SourceError(
                f"host {host!r} resolves to a non-public address, which is not allowed"
            )


def open_source(spec: PipelineSpec) -> av.container.InputContainer:
    """Open the source for demuxing, mapping FFmpeg errors to a SourceError detail."""
    check_source_address(
        spec.url,
        allow_private=spec.allow_private_sources,
        trusted_prefixes=spec.trusted_url_prefixes,
    )
    timeout_us = str(int(spec.open_timeout_s * 1_000_000))
    options = {
        "protocol_whitelist": _PROTOCOL_WHITELIST,
        "rw_timeout": timeout_us,
        # Live sources must not be read far ahead just to guess stream parameters.
        "analyzeduration": "2000000",
        "probesize": "2000000",
    }
    if check_scheme(spec.url) in {"http", "https"}:
        options["reconnect"] = "1"
    try:
        return av.open(spec.url, mode="r", options=options, timeout=spec.open_timeout_s)
    except Exception as exc:
        raise SourceError(describe_ffmpeg_error(exc)) from exc


def describe_ffmpeg_error(exc: BaseException) -> str:
    """A short user-facing reason for a failure to open or read a source."""
    if isinstance(exc, av.error.HTTPNotFoundError):
        return "404 not found"
    if isinstance(exc, av.error.HTTPForbiddenError | av.error.HTTPUnauthorizedError):
        return "access denied by the source server"
    if isinstance(exc, av.error.HTTPError | av.error.HTTPClientError):
        return f"HTTP error from the source server: {exc.strerror}"
    if isinstance(exc, ConnectionError | av.error.TimeoutError | TimeoutError):
        return f"unreachable: {getattr(exc, 'strerror', None) or exc}"
    if isinstance(exc, av.error.InvalidDataError):
        return "corrupt data: the source is not a recognisable media stream"
    if isinstance(exc, av.error.ProtocolNotFoundError):
        return "unsupported protocol"
    if isinstance(exc, av.error.FFmpegError):
        return f"cannot read the source: {exc.strerror}"
    return f"cannot read the source: {type(exc).__name__}"
