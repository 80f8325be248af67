"""The checked HTTP client: the only way relaystream fetches an http(s) URL.

Every request, and every redirect it is sent to, asks the ``AddressPolicy`` for a
``Destination`` first, then connects to the checked address itself: the host name is
never handed to anything that would resolve it again. The Host header and TLS SNI keep
the URL's host name, and https certificates are verified against it (the system CA
bundle). Each socket read has a timeout; redirects are limited; a playlist or manifest
is limited in size, a media body is not (a live stream never ends).

``post`` sends one small body (a callback) under a total deadline and follows no
redirect: a receiver answers where it was asked.

An ``HttpBody`` is a blocking, file-like reader meant for a worker thread (PyAV reads
it from FFmpeg's I/O callbacks). A seekable body seeks with a new ``Range`` request, so
an MP4 whose index sits at the end still opens, and a VOD body whose connection drops
resumes where it was.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import logging
import os
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urljoin

from relaystream.netpolicy.policy import AddressPolicy, AddressRefused, Destination

logger = logging.getLogger(__name__)

SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # Debian's ca-certificates
MAX_REDIRECTS = 5
MAX_MANIFEST_BYTES = 4 << 20
# What is read of a POST's answer: its status matters, its body does not.
_MAX_POST_ANSWER_BYTES = 64 << 10
# A forward seek shorter than this reads through instead of opening a new request.
_SKIP_BY_READING_BYTES = 256 << 10
_MAX_RESUMES = 3
_MANIFEST_TYPES = ("mpegurl", "dash+xml")
_MANIFEST_SUFFIXES = (".m3u8", ".m3u", ".mpd")
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_USER_AGENT = "relaystream"


class FetchError(Exception):
    """A fetch the client gave up on; ``detail`` says why, for users."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class HttpStatusError(FetchError):
    """The server answered with an error status."""

    def __init__(self, status: int, reason: str, url: str) -> None:
        super().__init__(f"HTTP {status} {reason}".rstrip())
        self.status = status
        self.url = url


def default_tls_context() -> ssl.SSLContext:
    cafile = SYSTEM_CA_BUNDLE if os.path.exists(SYSTEM_CA_BUNDLE) else None
    return ssl.create_default_context(cafile=cafile)


@dataclass(frozen=True)
class HttpLimits:
    read_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0
    max_redirects: int = MAX_REDIRECTS
    max_manifest_bytes: int = MAX_MANIFEST_BYTES


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP connection to a checked address that still speaks the URL's host name."""

    def __init__(
        self, destination: Destination, limits: HttpLimits, tls: ssl.SSLContext | None
    ) -> None:
        super().__init__(destination.host, destination.port, timeout=limits.read_timeout_s)
        self.destination = destination
        self._limits = limits
        self._tls = tls
        # Host header without ":443" for https, as browsers and FFmpeg send it.
        self.default_port = 443 if tls is not None else 80

    def connect(self) -> None:
        sock = connect_checked(self.destination, self._limits)
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_hostname=self.destination.host)
            except BaseException:
                sock.close()
                raise
        self.sock = sock


def connect_checked(destination: Destination, limits: HttpLimits) -> socket.socket:
    """Connect to the first of the checked addresses that answers."""
    last_error: OSError | None = None
    for address in destination.addresses:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(limits.connect_timeout_s)
        try:
            sock.connect((str(address), destination.port))
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        sock.settimeout(limits.read_timeout_s)
        return sock
    assert last_error is not None  # a Destination always has an address
    raise last_error


class CheckedHttpClient:
    """GET requests that only ever reach addresses the policy allows."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        limits: HttpLimits | None = None,
        tls: ssl.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.policy = policy
        self.limits = limits or HttpLimits()
        self._tls = tls  # made on the first https request: loading the CAs costs memory
        self._headers = {"User-Agent": _USER_AGENT, **(headers or {})}

    def open(self, url: str) -> HttpBody:
        """GET ``url``, following checked redirects."""
        response, connection, final_url = self.follow(url, offset=0)
        return HttpBody(self, final_url, response, connection)

    def follow(
        self, url: str, *, offset: int
    ) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection, str]:
        """The response to GET ``url`` from byte ``offset``, after checked redirects."""
        for _ in range(self.limits.max_redirects + 1):
            response, connection = self._request(url, offset)
            if response.status in _REDIRECT_STATUSES:
                location = response.getheader("Location")
                connection.close()
                if not location:
                    raise FetchError(f"HTTP {response.status} without a Location header")
                url = urljoin(url, location)
                continue
            if response.status >= 400:
                connection.close()
                raise HttpStatusError(response.status, response.reason, url)
            return response, connection, url
        raise FetchError(f"more than {self.limits.max_redirects} redirects")

    def post(
        self,
        url: str,
        body: bytes,
        *,
        content_type: str = "application/json",
        total_timeout_s: float,
    ) -> int:
        """POST ``body`` to ``url`` and return the answer's status (any status: the
        caller decides what a 3xx, 4xx or 5xx means). A receiver that has not answered
        within ``total_timeout_s``, even one that trickles bytes, gets its connection
        shut: the call raises ``TimeoutError``."""
        connection = self._connection(url)
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            sock = connection.sock
            if sock is not None:
                # Wakes the thread blocked in recv (a close alone would not).
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(total_timeout_s, expire)
        timer.daemon = True
        timer.start()
        headers = {**self._headers, "Content-Type": content_type}
        try:
            connection.request("POST", _target(connection.destination), body, headers)
            response = connection.getresponse()
            response.read(_MAX_POST_ANSWER_BYTES)
            return response.status
        except (OSError, http.client.HTTPException) as exc:
            if expired.is_set():
                raise TimeoutError(f"no answer within {total_timeout_s:g} s") from None
            if isinstance(exc, OSError):
                raise
            raise FetchError(f"not an HTTP answer ({type(exc).__name__})") from None
        finally:
            timer.cancel()
            connection.close()

    def _connection(self, url: str) -> _PinnedConnection:
        destination = self.policy.destination(url)
        if destination.scheme not in {"http", "https"}:
            raise AddressRefused(f"{destination.scheme}: is not an HTTP URL")
        tls = None
        if destination.scheme == "https":
            self._tls = tls = self._tls or default_tls_context()
        return _PinnedConnection(destination, self.limits, tls)

    def _request(
        self, url: str, offset: int
    ) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        connection = self._connection(url)
        headers = dict(self._headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            connection.request("GET", _target(connection.destination), headers=headers)
            return connection.getresponse(), connection
        except BaseException:
            connection.close()
            raise


def _target(destination: Destination) -> str:
    parts = destination.parts
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _is_manifest(url: str, content_type: str) -> bool:
    path = url.split("?", 1)[0].lower()
    return any(kind in content_type for kind in _MANIFEST_TYPES) or path.endswith(
        _MANIFEST_SUFFIXES
    )


class HttpBody(io.RawIOBase):
    """The body of one GET, read in large pieces; seekable when the server allows."""

    def __init__(
        self,
        client: CheckedHttpClient,
        url: str,
        response: http.client.HTTPResponse,
        connection: http.client.HTTPConnection,
    ) -> None:
        super().__init__()
        self.url = url
        self._client = client
        self._response = response
        self._connection = connection
        self._position = 0
        self._resumes = 0
        self._length = _total_length(response)
        ranges = response.getheader("Accept-Ranges", "").lower() == "bytes"
        self._seekable = self._length is not None and (ranges or response.status == 206)
        content_type = (response.getheader("Content-Type") or "").lower()
        self._limit = client.limits.max_manifest_bytes if _is_manifest(url, content_type) else None
        if self._limit is not None and self._length is not None and self._length > self._limit:
            self.close()
            raise FetchError(f"{url} is larger than {self._limit} bytes, too large a playlist")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def tell(self) -> int:
        return self._position

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = 1 << 20
        while True:
            data = self._response.read1(size)
            if data or size == 0:
                break
            if not self._ended_early():
                return b""
            self._resume()
        self._position += len(data)
        if self._limit is not None and self._position > self._limit:
            raise FetchError(f"{self.url} is larger than {self._limit} bytes, too large a playlist")
        return data

    def _ended_early(self) -> bool:
        return self._length is not None and self._position < self._length

    def _resume(self) -> None:
        """The connection ended before the body did: ask again from where it stopped."""
        if not self._seekable or self._resumes >= _MAX_RESUMES:
            raise ConnectionResetError(f"the connection to {self.url} ended early")
        self._resumes += 1
        logger.warning("resuming %s at byte %d", self.url, self._position)
        self._reopen(self._position)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._position + offset
        elif whence == io.SEEK_END and self._length is not None:
            target = self._length + offset
        else:
            raise OSError(f"cannot seek in {self.url} that way")
        if target == self._position:
            return target
        if 0 < target - self._position <= _SKIP_BY_READING_BYTES:
            while self._position < target:
                if not self.read(target - self._position):
                    break
            return self._position
        if not self._seekable:
            raise OSError(f"{self.url} cannot seek: the server does not serve byte ranges")
        self._reopen(target)
        return target

    def _reopen(self, offset: int) -> None:
        self._connection.close()
        response, connection, _ = self._client.follow(self.url, offset=offset)
        if response.status != 206 and offset:
            connection.close()
            raise OSError(f"{self.url} ignored a byte range request")
        self._response, self._connection = response, connection
        self._position = offset

    def close(self) -> None:
        if not self.closed:
            self._connection.close()
        super().close()


def _total_length(response: http.client.HTTPResponse) -> int | None:
    content_range = response.getheader("Content-Range")
    if response.status == 206 and content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        return int(total) if total.isdigit() else None
    length = response.getheader("Content-Length")
    if response.status == 200 and length is not None and length.strip().isdigit():
        return int(length)
    return None
