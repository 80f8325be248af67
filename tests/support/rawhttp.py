"""Raw HTTP/1.1 over a socket, for requests no client library would send."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # lowercase names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(host: str, port: int, request: bytes, *, timeout_s: float = 10.0) -> RawResponse:
    """Send ``request`` as is and read one response (the request should ask to close)."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(status_line.split()[1]), headers, body)


def build_request(
    method: str, target: str, headers: dict[str, str | bytes], body: bytes = b""
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode("latin-1")]
    if not any(name.lower() == "host" for name in headers):
        lines.append(b"Host: 127.0.0.1")  # HTTP/1.1 requires one
    for name, value in headers.items():
        raw = value if isinstance(value, bytes) else value.encode("latin-1")
        lines.append(name.encode("latin-1") + b": " + raw)
    if body or method in {"POST", "PUT", "PATCH"}:
        lines.append(f"Content-Length: {len(body)}".encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
