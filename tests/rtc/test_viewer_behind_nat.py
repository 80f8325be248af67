"""A server behind a real 1:1 NAT: it binds a private address and announces 127.0.0.2.

A viewer on another machine reaches it only through that public address: its HTTPS
request (to a certificate the test makes for 127.0.0.2) and its media both cross an
nftables 1:1 NAT in front of the server (tests/support/one_to_one_nat.py). The story
runs in a network namespace the outer test makes (tests/support/netns.py); the viewer's
machine is a second one nested in it. Nothing touches the host's network.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from aiortc import sdp

from relaystream.media.testsrc import ClipSpec, make_test_clip
from tests.support.net import static_http_server
from tests.support.netns import LOOPBACK_ONLY, can_isolate, expect_passed, is_isolated, run_isolated
from tests.support.one_to_one_nat import (
    PUBLIC_ADDRESS,
    SERVER_PRIVATE_ADDRESS,
    VIEWER_ADDRESS,
    NatUnavailable,
    ViewerMachine,
    traffic_at_public_address,
    viewer_behind_one_to_one_nat,
)
from tests.support.remote_viewer import RemoteViewing
from tests.support.sdk import RtcService
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, RelayServer, start_server
from tests.support.tasks import running_relay

ROOM = "room-behind-nat"
REPOSITORY = Path(__file__).parents[2]
# Of the test's own namespace: 127.0.0.1 for the API client, the private one for the NAT.
EVERY_ADDRESS = "0.0.0.0"  # noqa: S104
# Longer than the story runs, and quick to make inside the namespace, where the session's
# long clip cannot be shared.
CLIP = ClipSpec(duration_s=40.0, width=320, height=180, frame_rate=15)


@pytest.mark.skipif(not can_isolate(), reason="needs root, unshare and ip")
@pytest.mark.skipif(is_isolated(), reason="this is the outer run")
def test_the_nat_story_passes_in_network_namespaces_of_its_own(tmp_path: Path) -> None:
    story = f"{__file__}::test_a_viewer_reaches_the_server_only_through_its_public_address"
    expect_passed(run_isolated([story], tmp_path / "isolated", setup=LOOPBACK_ONLY))


@pytest.fixture(scope="module")
def viewer_machine() -> Iterator[ViewerMachine]:
    try:
        with viewer_behind_one_to_one_nat() as machine:
            yield machine
    except NatUnavailable as unavailable:
        pytest.skip(str(unavailable))


@pytest.fixture(scope="module")
def clip_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("clip")
    make_test_clip(directory / "clip.ts", CLIP)
    with static_http_server(directory) as base_url:
        yield f"{base_url}/clip.ts"


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    certificate_authority: trustme.CA,
    viewer_machine: ViewerMachine,
) -> Iterator[RelayServer]:
    """Bound to every address of its machine, ICE on the private one, 127.0.0.2 announced;
    its certificate names the public address (and 127.0.0.1, for the API client here)."""
    workdir = tmp_path_factory.mktemp("behind-nat")
    issued = certificate_authority.issue_cert(PUBLIC_ADDRESS, "127.0.0.1")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    issued.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    trusting = ssl.create_default_context()
    certificate_authority.configure_trust(trusting)
    relay_server = start_server(
        workdir,
        extra_config=f"""
[rtc]
ice_addresses = ["{SERVER_PRIVATE_ADDRESS}"]
announced_addresses = ["{PUBLIC_ADDRESS}"]
""",
        serve_args=("--host", EVERY_ADDRESS, "--tls-cert", str(cert), "--tls-key", str(key)),
        tls=trusting,
    )
    yield relay_server
    relay_server.stop()


async def watch_from(
    machine: ViewerMachine, whep_url: str, token: str, ca_file: Path
) -> RemoteViewing:
    """One second of video decoded by a viewer on ``machine``."""
    viewer = await asyncio.create_subprocess_exec(
        *machine.command(
            sys.executable, "-m", "tests.support.remote_viewer",
            whep_url, token, str(ca_file), VIEWER_ADDRESS, "1.0",
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPOSITORY,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(viewer.communicate(), timeout=40)
    finally:
        if viewer.returncode is None:
            viewer.kill()
            await viewer.wait()
    assert viewer.returncode == 0, err.decode(errors="replace")
    return RemoteViewing.from_json(out)


@pytest.mark.skipif(not is_isolated(), reason="runs inside the outer test's namespace")
async def test_a_viewer_reaches_the_server_only_through_its_public_address(
    viewer_machine: ViewerMachine,
    server: RelayServer,
    certificate_authority: trustme.CA,
    clip_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca_file = tmp_path / "ca.pem"
    certificate_authority.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))  # the SDK trusts it too
    rtc = RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY, scheme="https")
    before = traffic_at_public_address()
    async with running_relay(rtc, server, clip_url, ROOM) as whep_url:
        public_whep_url = whep_url.replace(server.host, f"{PUBLIC_ADDRESS}:{server.port}")
        assert public_whep_url.startswith(f"https://{PUBLIC_ADDRESS}:")
        viewing = await watch_from(
            viewer_machine, public_whep_url, server.subscribe_token(ROOM), ca_file
        )
    after = traffic_at_public_address()

    assert viewing.video_s >= 1.0 and viewing.width == CLIP.width
    answer = sdp.SessionDescription.parse(viewing.answer_sdp)
    assert {c.ip for m in answer.media for c in m.ice_candidates} == {PUBLIC_ADDRESS}
    assert viewing.pair == (VIEWER_ADDRESS, PUBLIC_ADDRESS)
    # The HTTPS exchange and the media both arrived at the public address, through the NAT.
    assert after.tcp_packets > before.tcp_packets
    assert after.udp_packets > before.udp_packets
