"""A forward proxy on 127.0.0.1 that checks every request a helper program makes.

Some sources are read by a program outside our process (DASH by the ffmpeg CLI, see
``relaystream.media.bridge``). Checking the URLs a manifest names is not enough: the
program resolves host names itself (a second DNS answer could point anywhere), follows
redirects, and builds segment URLs from templates. So the program gets this proxy as
its ``http_proxy``: plain http requests arrive with their absolute URL, https ones as
``CONNECT host:port`` (TLS stays end to end, certificates are still checked by the
program). Each is checked by the same ``AddressPolicy`` as every other fetch, and the
proxy connects to the checked address itself. A refusal is answered with 403 and kept,
so the task fails with the policy's own words instead of the program's.

One upstream request per client connection (``Connection: close``): a proxy that kept
a client connection open could be asked for another host on it without a new check.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from relaystream.netpolicy.http import HttpLimits, connect_checked
from relaystream.netpolicy.policy import AddressPolicy, AddressRefused, Unresolvable

logger = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 << 10
MAX_CONNECTIONS = 8
_CHUNK_BYTES = 64 << 10
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "upgrade"}
)


@dataclass(frozen=True)
class ProxyRequest:
    method: str
    url: str  # what the policy checks: the absolute URL, or https://host:port/ for CONNECT
    head: bytes  # what to send upstream first (empty for CONNECT)


class BadProxyRequest(Exception):
    """A request this proxy does not carry (answered with 400)."""


class BadProxyRequestHead(OSError):
    """The client sent no complete request head: nothing to answer."""


def parse_request(head: bytes) -> ProxyRequest:
    """Read a proxy request's head: CONNECT host:port, or a method with an absolute URL."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise BadProxyRequest("undecodable request") from None
    request_line, _, header_block = text.partition("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadProxyRequest("not an HTTP/1 request line")
    method, target, version = parts
    if method == "CONNECT":
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            raise BadProxyRequest("CONNECT needs host:port")
        return ProxyRequest(method, f"https://{host}:{port}/", b"")
    url = urlsplit(target)
    if url.scheme != "http" or not url.netloc:
        raise BadProxyRequest("a proxied request needs an absolute http URL")
    origin_form = url.path or "/"
    if url.query:
        origin_form += f"?{url.query}"
    headers = [f"{method} {origin_form} {version}"]
    for line in header_block.split("\r\n"):
        name = line.partition(":")[0].strip().lower()
        if line and name not in _HOP_BY_HOP:
            headers.append(line)
    headers.append("Connection: close")
    return ProxyRequest(method, target, ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1"))


class CheckingProxy:
    """The proxy for one worker's helper program; ``url`` is its ``http_proxy``."""

    def __init__(self, policy: AddressPolicy, limits: HttpLimits) -> None:
        self._policy = policy
        self._limits = limits
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._closed = threading.Event()
        self.refusal: str | None = None  # the first refused URL's reason, for the task
        port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        threading.Thread(target=self._accept, name="checking-proxy", daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                client.close()  # more than the program needs: refuse, never queue
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            with client:
                client.settimeout(self._limits.read_timeout_s)
                self._forward(client)
        except OSError as exc:
            logger.debug("proxied connection ended: %s", exc)
        finally:
            self._slots.release()

    def _forward(self, client: socket.socket) -> None:
        head, rest = _read_head(client)
        try:
            request = parse_request(head)
            destination = self._policy.destination(request.url)
        except BadProxyRequest as exc:
            client.sendall(_answer(400, "Bad Request", str(exc)))
            return
        except AddressRefused as exc:
            self.refusal = self.refusal or f"address not allowed: {exc.detail}"
            client.sendall(_answer(403, "Forbidden", "address not allowed"))
            return
        except Unresolvable as exc:
            client.sendall(_answer(502, "Bad Gateway", str(exc)))
            return
        try:
            upstream = connect_checked(destination, self._limits)
        except OSError as exc:
            client.sendall(_answer(502, "Bad Gateway", f"unreachable: {exc.strerror or exc}"))
            return
        with upstream:
            if request.method == "CONNECT":
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream.sendall(request.head)
            if rest:
                upstream.sendall(rest)
            self._pump(client, upstream)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        """Copy bytes both ways until either side closes or stays silent too long."""
        peers = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
            while not self._closed.is_set():
                ready = selector.select(self._limits.read_timeout_s)
                if not ready:
                    return
                for key, _ in ready:
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(_CHUNK_BYTES)
                    if not data:
                        return
                    target = peers[source]
                    target.settimeout(self._limits.read_timeout_s)
                    target.sendall(data)
                    target.setblocking(False)


def _read_head(client: socket.socket) -> tuple[bytes, bytes]:
    """The request head (up to the blank line) and any bytes read past it."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_HEADER_BYTES:
            raise BadProxyRequestHead
        chunk = client.recv(4096)
        if not chunk:
            raise BadProxyRequestHead
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    return head, rest


def _answer(status: int, reason: str, detail: str) -> bytes:
    body = (detail + "\n").encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
