"""Stories for the checking proxy that a helper program (the ffmpeg CLI) fetches through:
real requests from a real client, on 127.0.0.1."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaystream.netpolicy import AddressPolicy, HttpLimits
from relaystream.netpolicy.proxy import BadProxyRequest, CheckingProxy, parse_request
from tests.support.net import connection_recorder, static_http_server


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "segment.m4s").write_bytes(b"media bytes")
    with static_http_server(tmp_path) as base:
        yield base


def proxy_for(trusted: str) -> CheckingProxy:
    policy = AddressPolicy(allow_private=False, trusted_prefixes=(trusted,))
    return CheckingProxy(policy, HttpLimits(read_timeout_s=2, connect_timeout_s=2))


def fetch_through(proxy: CheckingProxy, url: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.url}))
    with opener.open(url, timeout=5) as response:
        body: bytes = response.read()
    return body


def test_a_request_the_policy_allows_is_carried(served: str) -> None:
    proxy = proxy_for(f"{served}/")
    try:
        assert fetch_through(proxy, f"{served}/segment.m4s") == b"media bytes"
    finally:
        proxy.close()
    assert proxy.refusal is None


def test_a_request_to_a_refused_address_is_answered_403_without_connecting(
    served: str,
) -> None:
    proxy = proxy_for(f"{served}/")
    with connection_recorder() as forbidden:
        try:
            with pytest.raises(urllib.error.HTTPError) as answered:
                fetch_through(proxy, f"{forbidden.base_url}/segment.m4s")
        finally:
            proxy.close()
        assert forbidden.connections == 0
    assert answered.value.code == 403
    assert proxy.refusal is not None
    assert proxy.refusal.startswith("address not allowed: 127.0.0.1")


def test_connect_to_a_private_literal_is_refused(served: str) -> None:
    proxy = proxy_for(f"{served}/")
    port = int(proxy.url.rpartition(":")[2])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(b"CONNECT 10.1.2.3:443 HTTP/1.1\r\nHost: 10.1.2.3:443\r\n\r\n")
            answer = client.recv(4096)
    finally:
        proxy.close()
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert proxy.refusal is not None and "10.1.2.3" in proxy.refusal


def test_the_upstream_request_is_origin_form_and_closes() -> None:
    request = parse_request(
        b"GET http://media.test:8080/a/seg.m4s?n=1 HTTP/1.1\r\n"
        b"Host: media.test:8080\r\nProxy-Connection: keep-alive\r\nRange: bytes=0-"
    )
    assert request.url == "http://media.test:8080/a/seg.m4s?n=1"
    assert request.head == (
        b"GET /a/seg.m4s?n=1 HTTP/1.1\r\nHost: media.test:8080\r\nRange: bytes=0-\r\n"
        b"Connection: close\r\n\r\n"
    )


@pytest.mark.parametrize(
    "head",
    [
        b"GET /relative HTTP/1.1\r\nHost: x",
        b"GET file:///etc/passwd HTTP/1.1",
        b"CONNECT no-port HTTP/1.1",
        b"garbage",
    ],
)
def test_requests_a_proxy_does_not_carry_are_refused(head: bytes) -> None:
    with pytest.raises(BadProxyRequest):
        parse_request(head)
