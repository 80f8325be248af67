"""A viewer's machine that reaches a server behind a 1:1 NAT, built entirely inside
network namespaces the test made.

It runs inside the test's own namespace (tests/support/netns.py, ``LOOPBACK_ONLY``),
which plays the server's machine and the NAT in front of it, and makes a second one,
nested, for the viewer's machine, with a veth link between the two::

    viewer's namespace                          the test's namespace (server and NAT)
    169.254.77.2 rsnat1 -------- veth -------- rsnat0 169.254.77.1  <- server's ICE
    route: 127.0.0.2 over the link              nftables: 127.0.0.2 <-> 169.254.77.1

127.0.0.2 plays the server's public address. In the viewer's namespace it is not local
(that loopback keeps only 127.0.0.1) but routed over the link, as an address on the
internet would be. The test's namespace is the 1:1 NAT: what arrives for 127.0.0.2 goes
to 169.254.77.1 (DNAT), what the server sends over the link leaves from 127.0.0.2
(SNAT), and what arrives on the link for any other address is dropped, so the viewer
reaches the server only through the public address. Named counters count what arrived
there, before translation. The link's own addresses are link-local ones that exist only
on this link.

The server's end keeps the kernel's refusal of loopback-addressed packets from a link,
so 127.0.0.2 arriving there is delivered only once the NAT has translated it; the
viewer's end takes them (route_localnet). ARP cannot be had across such a pair (the
server's end would ask for the viewer from 127.0.0.2 and refuse the answer), and the link
is point to point, so each end has the other as a permanent neighbour at a fixed
hardware address, as a machine knows its router.

A namespace is configured only once it is known to be one this module or netns.py made:
nothing but ``lo`` in it, and the viewer's one differs from the caller's. Both vanish
with their last process, so nothing outlives the test run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

PUBLIC_ADDRESS = "127.0.0.2"
SERVER_PRIVATE_ADDRESS = "169.254.77.1"
VIEWER_ADDRESS = "169.254.77.2"
_SERVER_END, _VIEWER_END = "rsnat0", "rsnat1"
# Locally administered hardware addresses, made of the link addresses.
_SERVER_END_MAC, _VIEWER_END_MAC = "02:00:a9:fe:4d:01", "02:00:a9:fe:4d:02"
_TABLE = "one_to_one_nat"

_SERVER_SIDE = f"""
set -e
ip addr add {SERVER_PRIVATE_ADDRESS}/32 dev {_SERVER_END}
ip link set {_SERVER_END} up
ip route add {VIEWER_ADDRESS}/32 dev {_SERVER_END}
ip neigh replace {VIEWER_ADDRESS} lladdr {_VIEWER_END_MAC} dev {_SERVER_END} nud permanent
"""

# The loopback gives up 127.0.0.0/8 but 127.0.0.1, so 127.0.0.2 is a remote address.
_VIEWER_SIDE = f"""
set -e
ip link set lo up
ip addr del 127.0.0.1/8 dev lo
ip addr add 127.0.0.1/32 dev lo
ip addr add {VIEWER_ADDRESS}/32 dev {_VIEWER_END}
ip link set {_VIEWER_END} up
ip route add {PUBLIC_ADDRESS}/32 dev {_VIEWER_END}
ip neigh replace {PUBLIC_ADDRESS} lladdr {_SERVER_END_MAC} dev {_VIEWER_END} nud permanent
sysctl -qw net.ipv4.conf.{_VIEWER_END}.route_localnet=1
"""

_NAT = f"""
table ip {_TABLE} {{
    counter udp_at_public {{}}
    counter tcp_at_public {{}}

    chain arriving {{
        type filter hook prerouting priority raw; policy accept;
        iifname != "{_SERVER_END}" accept
        ip daddr != {PUBLIC_ADDRESS} drop
        meta l4proto udp counter name udp_at_public
        meta l4proto tcp counter name tcp_at_public
    }}
    chain public_to_private {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname "{_SERVER_END}" ip daddr {PUBLIC_ADDRESS} dnat to {SERVER_PRIVATE_ADDRESS}
    }}
    chain private_to_public {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{_SERVER_END}" ip saddr {SERVER_PRIVATE_ADDRESS} snat to {PUBLIC_ADDRESS}
    }}
}}
"""


class NatUnavailable(Exception):
    """This kernel or machine cannot build the viewer's network; the message says why."""


@dataclass(frozen=True)
class PublicAddressTraffic:
    """Packets that arrived over the link for the public address, before translation."""

    udp_packets: int
    tcp_packets: int


@dataclass(frozen=True)
class ViewerMachine:
    """The viewer's namespace, held open by the process ``holder_pid``."""

    holder_pid: int

    def command(self, *argv: str) -> tuple[str, ...]:
        """``argv`` run on the viewer's machine (its network only; same files)."""
        return ("nsenter", f"--target={self.holder_pid}", "--net", *argv)


def traffic_at_public_address() -> PublicAddressTraffic:
    listing = json.loads(_run("nft", "-j", "list", "table", "ip", _TABLE))
    packets = {
        item["counter"]["name"]: int(item["counter"]["packets"])
        for item in listing["nftables"]
        if "name" in item.get("counter", {})
    }
    return PublicAddressTraffic(packets["udp_at_public"], packets["tcp_at_public"])


@contextmanager
def viewer_behind_one_to_one_nat() -> Iterator[ViewerMachine]:
    """Builds the viewer's machine, the link and the NAT; raises ``NatUnavailable`` when
    it cannot. Call it from the test's own namespace (see ``netns.LOOPBACK_ONLY``)."""
    for tool in ("nft", "nsenter"):
        if shutil.which(tool) is None:
            raise NatUnavailable(f"needs {tool} (make check-system-deps installs it)")
    _refuse_unless_only_loopback(())
    # The holder keeps the viewer's namespace alive until its stdin closes: when this
    # ends, or when the process running it does, however it ends.
    holder = subprocess.Popen(
        ("unshare", "--net", "sh", "-c", "echo made; exec cat >/dev/null"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        if holder.stdout.readline().strip() != "made":
            raise NatUnavailable(f"no nested network namespace: {holder.communicate()[1]}")
        viewer = ViewerMachine(holder.pid)
        if os.readlink(f"/proc/{holder.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            raise RuntimeError("the viewer's namespace is this one")
        _refuse_unless_only_loopback(viewer.command())
        _build(viewer)
        yield viewer
    finally:
        holder.stdin.close()  # the namespace goes, and its veth end takes ours along
        holder.wait(10)
        subprocess.run(("nft", "delete", "table", "ip", _TABLE), capture_output=True, check=False)


def _build(viewer: ViewerMachine) -> None:
    try:
        _run(
            "ip", "link", "add", _SERVER_END, "address", _SERVER_END_MAC, "type", "veth",
            "peer", "name", _VIEWER_END, "address", _VIEWER_END_MAC,
            "netns", str(viewer.holder_pid),
        )  # fmt: skip
    except subprocess.CalledProcessError as error:
        raise NatUnavailable(f"this kernel offers no veth links: {error.stderr}") from error
    _run("sh", "-c", _SERVER_SIDE)
    _run(*viewer.command("sh", "-c", _VIEWER_SIDE))
    try:
        _run("nft", "-f", "-", stdin=_NAT)
    except subprocess.CalledProcessError as error:
        raise NatUnavailable(f"this kernel offers no nftables NAT: {error.stderr}") from error


def _refuse_unless_only_loopback(enter: tuple[str, ...]) -> None:
    """Never configure a namespace someone else made (the host's above all)."""
    listing = _run(*enter, "ip", "-o", "link", "show")
    names = [line.split(":")[1].strip() for line in listing.splitlines()]
    if names != ["lo"]:
        raise RuntimeError(f"refusing to touch a network namespace with {names}")


def _run(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True)
    return done.stdout
