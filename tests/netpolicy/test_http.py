"""Stories for the checked HTTP client, against real servers on 127.0.0.0/8."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from relaystream.netpolicy import (
    AddressPolicy,
    AddressRefused,
    CheckedHttpClient,
    FetchError,
    HostsTable,
    HttpLimits,
    HttpStatusError,
    ResolvedAddress,
    SystemResolver,
    literal_address,
)
from tests.support.net import connection_recorder, free_port, static_http_server
from tests.support.tls import https_file_server, make_certificates


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    port = free_port()
    with static_http_server(tmp_path, port=port, redirects={"/loop": "/loop"}):
        yield tmp_path, port


def media_test_client(**limits: float) -> CheckedHttpClient:
    """Private sources refused; "media.test" plays a public host on 127.0.0.1."""
    resolver = HostsTable({"media.test": "127.0.0.1"}, SystemResolver())
    policy = AddressPolicy(allow_private=False, resolver=resolver)
    return CheckedHttpClient(policy, limits=HttpLimits(**limits))  # type: ignore[arg-type]


def test_a_redirect_to_a_private_address_is_refused_before_connecting(tmp_path: Path) -> None:
    (tmp_path / "clip.flv").write_bytes(b"FLV")
    with connection_recorder() as forbidden:
        port = free_port()
        redirects = {
            "/to-literal": f"{forbidden.base_url}/clip.flv",
            "/to-name": f"http://localhost:{forbidden.port}/clip.flv",
        }
        with static_http_server(tmp_path, port=port, redirects=redirects):
            client = media_test_client()
            assert client.open(f"http://media.test:{port}/clip.flv").read() == b"FLV"
            for path in redirects:
                with pytest.raises(AddressRefused, match="not a public address"):
                    client.open(f"http://media.test:{port}{path}")
        assert forbidden.connections == 0


def test_the_host_name_is_kept_in_the_host_header() -> None:
    with _capturing_server() as (port, requests):
        body = media_test_client().open(f"http://media.test:{port}/live.flv?token=1")
        assert body.read() == b"ok"
    assert requests[0].startswith(b"GET /live.flv?token=1 HTTP/1.1\r\n")
    assert f"Host: media.test:{port}\r\n".encode() in requests[0]


def test_a_second_different_dns_answer_is_never_connected_to(tmp_path: Path) -> None:
    (tmp_path / "clip.flv").write_bytes(b"the first answer")
    port = free_port()
    resolver = _TurnsResolver({"rebind.test": ["127.0.0.1", "127.0.0.2"]})
    client = CheckedHttpClient(AddressPolicy(allow_private=False, resolver=resolver))
    with (
        static_http_server(tmp_path, port=port),
        connection_recorder("127.0.0.2", port) as second_answer,
    ):
        for _ in range(3):
            body = client.open(f"http://rebind.test:{port}/clip.flv")
            assert body.read() == b"the first answer"
    assert second_answer.connections == 0
    assert resolver.lookups == 1


def test_a_seekable_body_seeks_with_a_range_request(served: tuple[Path, int]) -> None:
    root, port = served
    data = os.urandom(3 << 20)
    (root / "vod.mp4").write_bytes(data)

    body = media_test_client().open(f"http://media.test:{port}/vod.mp4")

    assert body.seekable()
    assert body.seek(2_500_000) == 2_500_000
    assert body.read(1000) == data[2_500_000:2_501_000]
    body.seek(10)
    assert body.read(10) == data[10:20]
    body.seek(-5, os.SEEK_END)
    assert body.read(100) == data[-5:]


def test_errors_say_what_happened(served: tuple[Path, int]) -> None:
    root, port = served
    (root / "huge.m3u8").write_text("#EXTM3U\n" + "#EXT-X-DISCONTINUITY\n" * 200)
    client = media_test_client(max_manifest_bytes=1000)

    with pytest.raises(HttpStatusError) as missing:
        client.open(f"http://media.test:{port}/missing.flv")
    assert missing.value.status == 404
    with pytest.raises(FetchError, match="more than 5 redirects"):
        client.open(f"http://media.test:{port}/loop")
    with pytest.raises(FetchError, match="too large a playlist"):
        client.open(f"http://media.test:{port}/huge.m3u8")
    with pytest.raises(ConnectionRefusedError):
        client.open(f"http://media.test:{free_port()}/live.flv")


def test_only_http_urls_are_fetched() -> None:
    client = CheckedHttpClient(AddressPolicy(allow_private=True))
    with pytest.raises(AddressRefused, match="not an HTTP URL"):
        client.open("rtmp://127.0.0.1/app/stream")


class _TurnsResolver:
    """DNS whose answer for a name changes on each lookup; every answer is vouched for,
    so only pinning keeps the client on the first one."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self._answers = answers
        self.lookups = 0

    def resolve(self, host: str) -> Sequence[ResolvedAddress]:
        turn = self._answers[host][min(self.lookups, len(self._answers[host]) - 1)]
        self.lookups += 1
        address = literal_address(turn)
        assert address is not None
        return [ResolvedAddress(address, vouched=True)]


class _capturing_server:
    """Answers one request with "ok" and keeps its raw bytes."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.requests: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> tuple[int, list[bytes]]:
        self._thread.start()
        return int(self._listener.getsockname()[1]), self.requests

    def __exit__(self, *_: object) -> None:
        self._thread.join(5)
        self._listener.close()

    def _serve(self) -> None:
        connection, _ = self._listener.accept()
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(4096)
            self.requests.append(request)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def test_https_verifies_the_certificate_against_the_host_name(tmp_path: Path) -> None:
    (tmp_path / "live.flv").write_bytes(b"FLV over TLS")
    certificates = make_certificates(tmp_path, "media.test")
    resolver = HostsTable({"media.test": "127.0.0.1", "other.test": "127.0.0.1"}, _NoDns())
    policy = AddressPolicy(allow_private=False, resolver=resolver)
    trusting = CheckedHttpClient(policy, tls=certificates.client_context())

    with https_file_server(tmp_path, certificates) as (port, server_names):
        # Connected to 127.0.0.1, yet SNI and the check use the name in the URL.
        assert trusting.open(f"https://media.test:{port}/live.flv").read() == b"FLV over TLS"
        assert server_names == ["media.test"]
        with pytest.raises(ssl.SSLCertVerificationError, match=r"other\.test"):
            trusting.open(f"https://other.test:{port}/live.flv")
        # The default context trusts the system's CAs only.
        with pytest.raises(ssl.SSLCertVerificationError):
            CheckedHttpClient(policy).open(f"https://media.test:{port}/live.flv")


class _NoDns:
    def resolve(self, host: str) -> Sequence[ResolvedAddress]:
        raise AssertionError(f"{host} must not be resolved")


@contextmanager
def answering_once(answer: bytes) -> Iterator[int]:
    """A listener on 127.0.0.1 that reads one request and sends ``answer``; its port."""
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(answer)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        yield listener.getsockname()[1]
        thread.join(5)


def test_a_post_gets_the_answers_status_and_follows_no_redirect() -> None:
    with connection_recorder() as elsewhere:
        moved = f"HTTP/1.1 302 Found\r\nLocation: {elsewhere.base_url}/\r\n"
        with answering_once(moved.encode() + b"Content-Length: 0\r\n\r\n") as port:
            client = media_test_client()
            assert client.post(f"http://media.test:{port}/hook", b"{}", total_timeout_s=5) == 302
        with answering_once(b"HTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\nno") as port:
            assert client.post(f"http://media.test:{port}/hook", b"{}", total_timeout_s=5) == 500
        with pytest.raises(AddressRefused, match="not a public address"):
            client.post(f"{elsewhere.base_url}/hook", b"{}", total_timeout_s=5)
    assert elsewhere.connections == 0


def test_a_post_to_a_receiver_that_trickles_ends_at_its_deadline() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        stop = threading.Event()

        def trickle() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                # A byte every 0.3 s: no single read ever times out.
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100:
                    if stop.is_set():
                        return
                    try:
                        connection.sendall(bytes([byte]))
                    except OSError:
                        return
                    stop.wait(0.3)

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        client = media_test_client(read_timeout_s=1.0)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"no answer within 1\.5 s"):
            client.post(f"http://media.test:{port}/hook", b"{}", total_timeout_s=1.5)
        assert 1.4 <= time.monotonic() - started < 3.0
        stop.set()
        thread.join(5)
