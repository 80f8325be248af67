"""Why a source cannot be relayed, in a user's words, and whether trying again may help.

Every error that reaches a user as ``StopDetail`` passes through here once: FFmpeg's
wording ("Immediate exit requested", "Input/output error") never leaves the worker.

Retryable (SPEC §3): a refused connection, a timeout, an HTTP 5xx, a live source that
drops or ends. Not retryable: an HTTP 4xx, an unsupported codec, a refused address, a
limit the source exceeds, corrupt data before any media flowed.
"""

from __future__ import annotations

import errno
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import av
import av.logging

from relaystream.media.fetch import SourceFetchFailed, SourceRefused


class SourceError(Exception):
    """The source cannot be relayed; ``detail`` is a short, user-facing reason."""

    def __init__(self, detail: str, *, retryable: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable


LogLine = tuple[int, str, str]  # (level, FFmpeg component, message), as PyAV gives them


@contextmanager
def ffmpeg_error_log() -> Iterator[list[LogLine]]:
    """Collect FFmpeg's error lines while opening a source, to say why it failed.

    Only around opening: PyAV's log callback takes the GIL from FFmpeg's own threads,
    which is safe while no decoder or encoder threads run, not during relay.
    """
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as lines:
            yield lines
    finally:
        av.logging.set_level(previous)


def _tls_failure(lines: list[LogLine]) -> SourceError | None:
    for _, component, message in lines:
        if component != "tls":
            continue
        if "verif" in message.lower() or "certificate" in message.lower():
            return SourceError("TLS: the source's certificate could not be verified")
        return SourceError("TLS: the secure connection to the source failed", retryable=True)
    return None


def _http_failure(exc: av.error.FFmpegError) -> SourceError | None:
    if isinstance(exc, av.error.HTTPNotFoundError):
        return SourceError("HTTP 404: the source server has no such stream")
    if isinstance(exc, av.error.HTTPForbiddenError):
        return SourceError("HTTP 403: access denied by the source server")
    if isinstance(exc, av.error.HTTPUnauthorizedError):
        return SourceError("HTTP 401: the source server wants credentials")
    if isinstance(exc, av.error.HTTPBadRequestError):
        return SourceError("HTTP 400: the source server refused the request")
    if isinstance(exc, av.error.HTTPTooManyRequestsError):
        # The server is up and asks us to come back later.
        return SourceError("HTTP 429: the source server is rate limiting", retryable=True)
    if isinstance(exc, av.error.HTTPClientError | av.error.HTTPOtherClientError):
        return SourceError("HTTP 4xx: the source server refused the request")
    if isinstance(exc, av.error.HTTPServerError):
        return SourceError("HTTP 5xx: the source server failed", retryable=True)
    return None


def classify(
    exc: BaseException,
    *,
    timeout_s: float,
    media_flowed_s: float | None,
    log_lines: list[LogLine] | None = None,
) -> SourceError:
    """Translate an error from opening or reading a source.

    ``media_flowed_s``: the source position reached, or None if no media flowed yet;
    corrupt data after good media is reported with where it happened. ``log_lines``:
    FFmpeg's error lines meanwhile (ffmpeg_error_log), which say more than its codes.
    """
    if isinstance(exc, SourceError):
        return exc
    if isinstance(exc, SourceRefused | SourceFetchFailed):
        # The checked client's own words: an address refused, a redirect loop, a
        # playlist too large. Trying again changes none of them.
        return SourceError(exc.detail)
    if isinstance(exc, av.error.FFmpegError):
        http = _http_failure(exc)
        if http is not None:
            return http
    tls = _tls_failure(log_lines or [])
    if tls is not None:
        return tls
    if isinstance(exc, ConnectionRefusedError):
        return SourceError("unreachable: the source server refused the connection", retryable=True)
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return SourceError("the source server closed the connection", retryable=True)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SourceError("TLS: the source's certificate could not be verified")
    if isinstance(exc, ssl.SSLError):
        return SourceError("TLS: the secure connection to the source failed", retryable=True)
    if type(exc) is ConnectionError:
        # The checked HTTP client's own words ("cannot resolve host 'x'"), not FFmpeg's.
        return SourceError(f"unreachable: {exc}", retryable=True)
    # FFmpeg's interrupt callback (PyAV's ``timeout``) ends a stalled read with "exit".
    if isinstance(exc, av.error.ExitError | av.error.TimeoutError | TimeoutError):
        return SourceError(f"timed out after {timeout_s:g} s", retryable=True)
    if isinstance(exc, av.error.InvalidDataError):
        if media_flowed_s is None:
            return SourceError("corrupt data: the source is not a recognisable media stream")
        return SourceError(f"corrupt data at {media_flowed_s:.1f} s into the source")
    if isinstance(exc, av.error.ProtocolNotFoundError):
        return SourceError("unsupported protocol")
    if isinstance(exc, av.error.DecoderNotFoundError):
        return SourceError("unsupported codec: no decoder for the source's media")
    if isinstance(exc, OSError) and exc.errno in {errno.ENETUNREACH, errno.EHOSTUNREACH}:
        return SourceError("unreachable: no route to the source server", retryable=True)
    if isinstance(exc, OSError) and exc.errno == errno.EIO:
        # FFmpeg's HTTP client says EIO both for a dropped connection and for a
        # redirect loop; only a connection problem is worth another try, and a redirect
        # loop fails the same way again, costing nothing but time.
        return SourceError(
            "the source connection failed (dropped, or too many redirects)", retryable=True
        )
    if isinstance(exc, av.error.FFmpegError | OSError):
        return SourceError("the source could not be read", retryable=media_flowed_s is not None)
    return SourceError("the source could not be read")
