"""Opening a source URL safely: scheme and address policy, then FFmpeg.

Per-kind FFmpeg options live in formats.py, the translation of errors in failures.py.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

import av
import av.container

from relaystream.media.failures import SourceError, classify, ffmpeg_error_log
from relaystream.media.formats import open_options, source_kind
from relaystream.media.spec import PipelineSpec

__all__ = [
    "ALLOWED_SCHEMES",
    "SourceError",
    "check_scheme",
    "check_source_address",
    "open_source",
]

# SRT is read through Debian's ffmpeg CLI (bridge.py): the bundled FFmpeg has none.
ALLOWED_SCHEMES = frozenset({"rtmp", "rtmps", "http", "https", "rtsp", "srt"})


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
    except UnicodeError:  # e.g. a DNS label over 63 characters
        raise SourceError(f"not a valid host name: {host[:80]!r}") from None
    except OSError as exc:
        # A name that does not exist stays so; a resolver that failed may answer later.
        temporary = isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_AGAIN
        raise SourceError(
            f"unreachable: cannot resolve host {host!r}", retryable=temporary
        ) from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise SourceError(
                f"host {host!r} resolves to a non-public address, which is not allowed"
            )


def open_source(spec: PipelineSpec) -> av.container.InputContainer:
    """Open the source for demuxing; failures are a SourceError that says why."""
    check_source_address(
        spec.url,
        allow_private=spec.allow_private_sources,
        trusted_prefixes=spec.trusted_url_prefixes,
    )
    kind = source_kind(spec.url)
    with ffmpeg_error_log() as log_lines:
        try:
            return av.open(
                spec.url, mode="r", options=open_options(spec, kind), timeout=spec.open_timeout_s
            )
        except Exception as exc:
            raise classify(
                exc, timeout_s=spec.open_timeout_s, media_flowed_s=None, log_lines=log_lines
            ) from exc
