"""Runs one test inside a network namespace of its own, for stories that need more than
the loopback interface, without touching the host's network.

Two setups: ``LINK_WITH_LOOPBACK_ADDRESS`` is for Janus (libnice), which never gathers
ICE candidates on ``lo`` and binds each candidate to its interface (IP_UNICAST_IF): the
namespace gets, besides ``lo``, a veth pair whose both ends stay inside it, with
127.0.0.2 on one end; the sysctls let loopback-addressed packets cross that pair
(route_localnet, accept_local, no reverse-path filter). ``LOOPBACK_ONLY`` is for a story
that builds its own links inside (tests/support/one_to_one_nat.py). Nothing in the
namespace can reach any other network, and it vanishes with its last process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

ISOLATED_ENV = "RELAYSTREAM_ISOLATED_NETNS"
# The interface Janus is held to (its ice_enforce_list) inside the namespace.
CANDIDATE_INTERFACE = "relaystream0"
# Its address: the only one Janus offers candidates on.
CANDIDATE_ADDRESS = "127.0.0.2"

LINK_WITH_LOOPBACK_ADDRESS = f"""
set -e
ip link set lo up
ip link add {CANDIDATE_INTERFACE} type veth peer name relaystream1
ip addr add {CANDIDATE_ADDRESS}/32 dev {CANDIDATE_INTERFACE}
ip link set {CANDIDATE_INTERFACE} up
ip link set relaystream1 up
for conf in all default lo {CANDIDATE_INTERFACE} relaystream1; do
  sysctl -qw net.ipv4.conf.$conf.route_localnet=1 net.ipv4.conf.$conf.accept_local=1 \\
    net.ipv4.conf.$conf.rp_filter=0
done
exec "$@"
"""
LOOPBACK_ONLY = """
set -e
ip link set lo up
exec "$@"
"""


def can_isolate() -> bool:
    return (
        os.geteuid() == 0 and shutil.which("unshare") is not None and shutil.which("ip") is not None
    )


def is_isolated() -> bool:
    return os.environ.get(ISOLATED_ENV) == "1"


def run_isolated(
    nodeids: Sequence[str],
    basetemp: Path,
    timeout_s: float = 180,
    *,
    setup: str = LINK_WITH_LOOPBACK_ADDRESS,
) -> subprocess.CompletedProcess[str]:
    """Runs pytest on ``nodeids`` in a fresh network namespace set up by the shell script
    ``setup`` (which ends by running its arguments); its output is returned."""
    command = [sys.executable, "-m", "pytest", *nodeids, "-q", "-rs", "-p", "no:cacheprovider"]
    return subprocess.run(
        ["unshare", "--net", "sh", "-c", setup, "sh", *command, f"--basetemp={basetemp}"],
        env={**os.environ, ISOLATED_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def expect_passed(run: subprocess.CompletedProcess[str], count: int = 1) -> None:
    """The outer test's verdict on ``run_isolated``: pass when its ``count`` tests passed,
    skip with the reason when they skipped (a kernel without veth, say), fail otherwise."""
    lines = run.stdout.strip().splitlines()
    summary = lines[-1] if lines else ""
    if run.returncode == 0 and summary.startswith(f"{count} skipped"):
        reasons = [line.split(": ", 1)[-1] for line in lines if line.startswith("SKIPPED")]
        pytest.skip(f"in its network namespace: {reasons[0] if reasons else summary}")
    assert run.returncode == 0 and summary.startswith(f"{count} passed"), run.stdout + run.stderr
