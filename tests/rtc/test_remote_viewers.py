"""A viewer on another machine: HTTPS to the server, media to the address it announces.

127.0.0.2 plays the viewer's machine. The server binds its ICE sockets on every local
address (0.0.0.0, as behind a 1:1 NAT where the public address is not a local one) and
announces 127.0.0.1 as its public address: without the announcement its only candidate
would be 0.0.0.0, which no viewer can reach. Every packet stays on loopback. A public
address that is not local at all, reached only through a 1:1 NAT, is in
test_viewer_behind_nat.py.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiortc import sdp

from relaystream.rtc.ice import IceAddresses
from tests.support.sdk import RtcService
from tests.support.server import ACCESS_KEY_ID, APP_ID, SECRET_ACCESS_KEY, RelayServer, start_server
from tests.support.tasks import running_relay
from tests.support.viewer import WhepViewer

ROOM = "room-remote"
REMOTE_CONFIG = """
[rtc]
ice_addresses = ["0.0.0.0"]
announced_addresses = ["127.0.0.1"]

[[rtc.ice_servers]]
urls = ["stun:127.0.0.1:3478"]

[[rtc.ice_servers]]
urls = ["turn:127.0.0.1:3478?transport=udp"]
username = "viewer"
credential = "turn-secret"
"""
STUN_LINK = '<stun:127.0.0.1:3478>; rel="ice-server"'
TURN_LINK = (
    '<turn:127.0.0.1:3478?transport=udp>; rel="ice-server"; username="viewer"; '
    'credential="turn-secret"; credential-type="password"'
)


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, certificate_authority: trustme.CA
) -> Iterator[RelayServer]:
    workdir = tmp_path_factory.mktemp("remote")
    issued = certificate_authority.issue_cert("127.0.0.1")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    issued.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    trusting = ssl.create_default_context()
    certificate_authority.configure_trust(trusting)
    relay_server = start_server(
        workdir,
        extra_config=REMOTE_CONFIG,
        serve_args=("--tls-cert", str(cert), "--tls-key", str(key)),
        tls=trusting,
    )
    yield relay_server
    relay_server.stop()


@pytest.fixture
def rtc_over_https(
    server: RelayServer,
    certificate_authority: trustme.CA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> RtcService:
    """The official SDK over HTTPS, trusting the test's certificate authority."""
    bundle = tmp_path / "ca.pem"
    certificate_authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    return RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY, scheme="https")


async def test_a_viewer_on_another_host_watches_over_https_through_the_announced_address(
    server: RelayServer, rtc_over_https: RtcService, long_clip_url: str
) -> None:
    assert server.base_url.startswith("https://")
    async with running_relay(rtc_over_https, server, long_clip_url, ROOM) as whep_url:
        viewer = WhepViewer(
            whep_url,
            server.subscribe_token(ROOM),
            kinds=("video",),
            ice_addresses=IceAddresses(local=("127.0.0.2",)),
            ssl=server.tls,
        )
        await viewer.connect()
        try:
            await viewer.wait_for_media("video", 1.0)
            assert viewer.pc.remoteDescription is not None
            answer = sdp.SessionDescription.parse(viewer.pc.remoteDescription.sdp)
            offered = {c.ip for m in answer.media for c in m.ice_candidates}
            assert offered == {"127.0.0.1"}  # announced; never the bound 0.0.0.0
            assert viewer.selected_remote_address() == ("127.0.0.2", "127.0.0.1")
            # A viewer whose token passed is handed both servers, TURN secret included.
            assert viewer.ice_server_links == [STUN_LINK, TURN_LINK]
        finally:
            await viewer.close()


async def test_the_preflight_names_stun_but_keeps_turn_credentials_to_token_holders(
    server: RelayServer,
) -> None:
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=server.tls)) as http,
        http.options(f"{server.base_url}/whep/app/{ROOM}/relay") as response,
    ):
        links = response.headers.getall("Link")
        exposed = response.headers["Access-Control-Expose-Headers"]
    assert links == [STUN_LINK]
    assert "Link" in exposed


async def test_a_preflight_with_a_subscribe_token_is_handed_the_turn_credentials(
    server: RelayServer,
) -> None:
    url = f"{server.base_url}/whep/{APP_ID}/{ROOM}/relay"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=server.tls)) as http:
        good = {"Authorization": f"Bearer {server.subscribe_token(ROOM)}"}
        async with http.options(url, headers=good) as response:
            assert response.status == 204
            assert response.headers.getall("Link") == [STUN_LINK, TURN_LINK]
        wrong_room = {"Authorization": f"Bearer {server.subscribe_token('another-room')}"}
        async with http.options(url, headers=wrong_room) as response:
            assert response.status == 403
            assert TURN_LINK not in response.headers.getall("Link", [])


async def test_plain_http_is_not_answered_on_the_https_port(server: RelayServer) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            await http.get(f"http://{server.host}/healthz")
