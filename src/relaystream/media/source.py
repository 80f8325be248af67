"""Opening a source URL safely: scheme, address policy (netpolicy), then FFmpeg.

Per-kind FFmpeg options live in formats.py, the translation of errors in failures.py.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

import av
import av.container

from relaystream.media.failures import SourceError, classify, ffmpeg_error_log
from relaystream.media.fetch import CheckedOpener
from relaystream.media.formats import (
    format_options,
    probe_options,
    source_kind,
    unverified_tls_context,
)
from relaystream.media.spec import PipelineSpec
from relaystream.netpolicy import (
    AddressPolicy,
    AddressRefused,
    CheckedHttpClient,
    HostsTable,
    HttpLimits,
    SystemResolver,
    Unresolvable,
)

ALLOWED_SCHEMES = frozenset({"rtmp", "rtmps", "http", "https", "srt", "rtsp"})

ALLOW_PRIVATE_SETTING = "sources.allow_private"

# The FFmpeg protocols a source may use. HTTP sources get none: every byte they need
# comes through our io_open, and a name that is no protocol keeps FFmpeg's own http,
# file, data and the like from opening anything on the side.
_NO_FFMPEG_PROTOCOLS = "none"
_PROTOCOL_WHITELISTS = {
    "rtmp": "rtmp,tcp",
    "rtmps": "rtmps,tcp,tls",
    "rtsp": "rtsp,tcp",
    "srt": "srt",
}
# Reads through Python cost CPU per call: few, large reads.
_IO_BUFFER_BYTES = 256 << 10

__all__ = ["ALLOWED_SCHEMES", "SourceError", "check_scheme", "open_source", "source_policy"]


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


def source_policy(spec: PipelineSpec) -> AddressPolicy:
    """The address policy of one worker: resolves each host once and keeps the answer."""
    resolver = HostsTable(dict(spec.hosts), SystemResolver()) if spec.hosts else None
    return AddressPolicy(
        allow_private=spec.allow_private_sources,
        trusted_prefixes=spec.trusted_url_prefixes,
        resolver=resolver,
        setting_name=ALLOW_PRIVATE_SETTING,
    )


def open_source(spec: PipelineSpec) -> av.container.InputContainer:
    """Open the source for demuxing, mapping FFmpeg errors to a SourceError detail.

    HTTP(S) sources (and all an HLS playlist refers to) are read through our checked
    client (``CheckedOpener``); FFmpeg's protocol whitelist names no protocol, so nothing
    can reach its own HTTP. Other protocols connect to the address the policy checked.
    """
    scheme = check_scheme(spec.url)
    policy = source_policy(spec)
    timeout_us = str(int(spec.open_timeout_s * 1_000_000))
    kind = source_kind(spec.url)
    options = probe_options(kind)
    io_open: CheckedOpener | None = None
    try:
        if scheme in {"http", "https"}:
            url = spec.url
            limits = HttpLimits(
                read_timeout_s=spec.open_timeout_s, connect_timeout_s=spec.open_timeout_s
            )
            # The app may turn certificate checks off (AppConfig.tls_verify).
            tls = None if spec.tls_verify else unverified_tls_context()
            io_open = CheckedOpener(CheckedHttpClient(policy, limits=limits, tls=tls))
            options |= {
                "protocol_whitelist": _NO_FFMPEG_PROTOCOLS,
                # HLS would reuse a connection behind our back (and cannot with custom I/O).
                "http_persistent": "0",
            }
        else:
            url, pinned_options = pin_stream_url(spec.url, policy)
            options |= pinned_options | {
                "protocol_whitelist": _PROTOCOL_WHITELISTS[scheme],
                "rw_timeout": timeout_us,
            }
    except (AddressRefused, Unresolvable) as exc:
        raise policy_failure(exc) from None
    options |= format_options(spec, kind)
    with ffmpeg_error_log() as log_lines:
        try:
            if io_open is not None:
                url = io_open.prefetch(url)
            return av.open(
                url,
                mode="r",
                options=options,
                timeout=spec.open_timeout_s,
                io_open=io_open,
                buffer_size=_IO_BUFFER_BYTES,
            )
        except Exception as exc:
            raise classify(
                exc, timeout_s=spec.open_timeout_s, media_flowed_s=None, log_lines=log_lines
            ) from exc


def policy_failure(exc: AddressRefused | Unresolvable) -> SourceError:
    if isinstance(exc, AddressRefused):
        return SourceError(f"address not allowed: {exc.detail}")
    return SourceError(f"unreachable: {exc}")


def pin_stream_url(url: str, policy: AddressPolicy) -> tuple[str, dict[str, str]]:
    """The URL rewritten to the checked address, and the options that keep its name.

    FFmpeg resolves a host itself when it connects; giving it the checked address
    instead means a second DNS answer cannot send it elsewhere. RTMP keeps the original
    host in ``tcUrl`` (what the server routes by), RTMPS in TLS SNI and verification.
    """
    destination = policy.destination(url)
    parts = destination.parts
    address = destination.addresses[0]
    host = f"[{address}]" if address.version == 6 else str(address)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{destination.port}" if userinfo else f"{host}:{destination.port}"
    pinned = parts._replace(netloc=netloc).geturl()
    options: dict[str, str] = {}
    if destination.scheme in {"rtmp", "rtmps"}:
        name = f"[{destination.host}]" if ":" in destination.host else destination.host
        app = rtmp_app(parts.path + (f"?{parts.query}" if parts.query else ""))
        options["rtmp_tcurl"] = f"{destination.scheme}://{name}:{destination.port}/{app}"
    if destination.scheme == "rtmps":
        options["verifyhost"] = destination.host
    if destination.scheme == "rtsp":
        # Over UDP, FFmpeg would send to whatever address the server's reply names.
        options["rtsp_transport"] = "tcp"
    return pinned, options


def rtmp_app(path: str) -> str:
    """The RTMP application FFmpeg derives from a URL path (``/live/stream`` → ``live``),
    so the ``tcUrl`` we send is the one FFmpeg would have sent with the host name."""
    if path.startswith("/ondemand/"):
        return "ondemand"
    rest = path[1:] if path else path
    first_slash = rest.find("/")
    if first_slash < 0:
        return rest
    after = rest[first_slash + 1 :]
    colon, second_slash = after.find(":"), after.find("/")
    if second_slash < 0 or (0 <= colon < second_slash):
        return rest[:first_slash]
    return rest[: first_slash + 1 + second_slash]


def describe_ffmpeg_error(exc: BaseException, timeout_s: float = 10.0) -> str:
    """A short user-facing reason for a failure to open or read a source."""
    return classify(exc, timeout_s=timeout_s, media_flowed_s=None).detail
