"""The bridge between FFmpeg and the checked HTTP client: PyAV's ``io_open`` hook.

``av.open(url, io_open=CheckedOpener(...))`` makes FFmpeg ask us for every byte stream
it wants: the source URL itself and, for HLS (and DASH where the demuxer exists), each
playlist, segment and key. Each goes through netpolicy's ``CheckedHttpClient``, so the
address policy holds for all of them, redirects included. Anything that is not http(s)
(``file:``, ``data:``, ...) is refused; an AES-128 HLS segment (``crypto+http://...``)
is fetched through the client and decrypted here, since FFmpeg's own crypto protocol
would open the URL itself.

A refusal raises ``SourceRefused``: PyAV keeps the exception and raises it from the
next call into the container, so the relay ends with a SourceError naming the address.
Other failures of a nested open (a missing segment, a timeout) behave like FFmpeg's own
HTTP: the demuxer sees an empty stream and skips it. The first open reports them as the
same ``av.error`` exceptions FFmpeg's HTTP would have raised.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import av.error

from relaystream.netpolicy import (
    AddressRefused,
    CheckedHttpClient,
    FetchError,
    HttpBody,
    HttpStatusError,
    Unresolvable,
)

logger = logging.getLogger(__name__)

_AVIO_FLAG_WRITE = 2
_AES_BLOCK_BYTES = 16


class SourceRefused(PermissionError):
    """The address policy refused a URL the source led to; ``detail`` is for users."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class SourceFetchFailed(OSError):
    """The checked client gave up on a URL (redirect loop, oversized playlist...)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


_STATUS_ERRORS: dict[int, type[av.error.FFmpegError]] = {
    400: av.error.HTTPBadRequestError,
    401: av.error.HTTPUnauthorizedError,
    403: av.error.HTTPForbiddenError,
    404: av.error.HTTPNotFoundError,
    429: av.error.HTTPTooManyRequestsError,
}


def _as_ffmpeg_error(exc: HttpStatusError) -> av.error.FFmpegError:
    """The exception FFmpeg's own HTTP protocol raises for this status."""
    if exc.status in _STATUS_ERRORS:
        error_type = _STATUS_ERRORS[exc.status]
    elif exc.status < 500:
        error_type = av.error.HTTPOtherClientError
    else:
        error_type = av.error.HTTPServerError
    return error_type(0, exc.detail, exc.url)


class CheckedOpener:
    """PyAV's ``io_open`` callable: every URL FFmpeg opens, opened by our client."""

    def __init__(self, client: CheckedHttpClient) -> None:
        self._client = client
        self._opens = 0
        self._refusal: SourceRefused | None = None
        self._prefetched: HttpBody | None = None

    def prefetch(self, url: str) -> str:
        """Open the source URL before FFmpeg does; returns where redirects led.

        FFmpeg resolves a playlist's relative URLs against the URL it was given. With its
        own HTTP it learns a redirect's target; through io_open it cannot, so it is given
        the final URL, and its first open gets the body fetched here.
        """
        body = self(url, 0, {})
        if isinstance(body, HttpBody):
            self._prefetched = body
            return body.url
        return url

    def __call__(self, url: str, flags: int, options: Mapping[str, Any]) -> Any:
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None and prefetched.url == url:
            return prefetched
        if prefetched is not None:
            prefetched.close()
        first = self._opens == 0
        self._opens += 1
        if self._refusal is not None:
            # Once a source led somewhere it must not, nothing more is fetched for it,
            # and the first refusal is the one the relay reports.
            raise SourceRefused(self._refusal.detail)
        try:
            return self._open(url, flags, options, first=first)
        except SourceRefused as refusal:
            self._refusal = refusal
            raise

    def _open(self, url: str, flags: int, options: Mapping[str, Any], *, first: bool) -> Any:
        if flags & _AVIO_FLAG_WRITE:
            raise SourceRefused(f"the source asked to write to {url}")
        target, key = _strip_crypto(url, options)
        scheme = urlsplit(target).scheme.lower()
        if scheme not in {"http", "https"}:
            logger.warning("refused to open %r: only http(s) URLs are fetched", target[:200])
            raise SourceRefused(
                f"the source refers to a {scheme or 'local'}: URL, which is never opened"
            )
        try:
            body = self._client.open(target)
        except AddressRefused as exc:
            logger.warning("refused to open %s: %s", target, exc.detail)
            raise SourceRefused(f"address not allowed: {exc.detail}") from None
        except (HttpStatusError, FetchError, Unresolvable, OSError) as exc:
            if first:
                raise _first_open_error(exc) from None
            logger.warning("cannot open %s: %s; the demuxer skips it", target, exc)
            return _EmptyBody()
        return body if key is None else Aes128Reader(body, *key)


def _first_open_error(exc: Exception) -> Exception:
    if isinstance(exc, HttpStatusError):
        return _as_ffmpeg_error(exc)
    if isinstance(exc, FetchError):
        return SourceFetchFailed(exc.detail)
    if isinstance(exc, Unresolvable):
        return ConnectionError(str(exc))
    return exc


def _strip_crypto(url: str, options: Mapping[str, Any]) -> tuple[str, tuple[bytes, bytes] | None]:
    """``crypto+http://...`` with key and iv options → the URL and the AES key and IV."""
    for prefix in ("crypto+", "crypto:"):
        if url.startswith(prefix):
            try:
                key, iv = bytes.fromhex(options["key"]), bytes.fromhex(options["iv"])
            except (KeyError, ValueError):
                raise SourceRefused("an encrypted HLS segment came without a valid key") from None
            return url[len(prefix) :], (key, iv)
    return url, None


class _EmptyBody:
    """What a nested open that failed returns: FFmpeg's demuxers skip an empty stream."""

    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        pass


class Aes128Reader:
    """Decrypts an AES-128-CBC HLS segment (PKCS#7 padded) as it is read."""

    def __init__(self, body: HttpBody, key: bytes, iv: bytes) -> None:
        if len(key) != _AES_BLOCK_BYTES or len(iv) != _AES_BLOCK_BYTES:
            body.close()
            raise SourceRefused("an encrypted HLS segment has a key or IV of the wrong size")
        # Imported here: most sources are not encrypted, and the import costs memory.
        from cryptography.hazmat.primitives import padding
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        self._body = body
        self._decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        self._unpadder = padding.PKCS7(8 * _AES_BLOCK_BYTES).unpadder()
        self._plain = b""
        self._done = False

    def read(self, size: int = -1) -> bytes:
        size = size if size > 0 else 1 << 20
        while len(self._plain) < size and not self._done:
            chunk = self._body.read(max(size, 64 << 10))
            if chunk:
                self._plain += self._unpadder.update(self._decryptor.update(chunk))
            else:
                last = self._unpadder.update(self._decryptor.finalize())
                self._plain += last + self._unpadder.finalize()
                self._done = True
        data, self._plain = self._plain[:size], self._plain[size:]
        return data

    def close(self) -> None:
        self._body.close()
