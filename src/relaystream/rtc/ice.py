"""Which addresses a peer connection of ours gathers host candidates on, and announces.

Why this exists: aioice (0.13) finds host addresses itself, always leaves out 127.0.0.1,
and has no option to choose them, nor to announce an address other than the one a
socket is bound to. A server on loopback (the default) must offer loopback candidates,
and a server behind a 1:1 NAT must announce its public address. So, for each peer
connection we create, and only for it, two methods of its own ICE objects are wrapped:

- the aioice ``Connection.get_component_candidates`` of each transport gets the
  configured local addresses instead of the discovered ones (the sockets are bound there);
- the aiortc ``RTCIceGatherer.getLocalCandidates`` of each transport reports each host
  candidate at the announced addresses instead (what goes into the SDP). aioice keeps
  checking from the real sockets, so a NAT in front maps the announced address back.

Nothing process-wide is touched: another library's peer connections in the same process
keep aioice's own behaviour. The UDP ports stay aioice's choice (it binds port 0), so a
firewall must let the OS's ephemeral range through, or viewers use a TURN relay.

When it can go: once aioice takes the host addresses (and aiortc an announced address)
as options of a connection.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection


@dataclass(frozen=True)
class IceAddresses:
    """``local``: addresses to bind host candidates on (``0.0.0.0`` binds all of them);
    ``announced``: addresses to put in the SDP instead, e.g. a 1:1 NAT's public one."""

    local: tuple[str, ...] = ("127.0.0.1",)
    announced: tuple[str, ...] = ()


def use_ice_addresses(pc: RTCPeerConnection, addresses: IceAddresses) -> None:
    """Apply ``addresses`` to ``pc``'s transports: call it after adding the transceivers
    and before ``setLocalDescription`` (which gathers)."""
    for transceiver in pc.getTransceivers():
        gatherer = transceiver.sender.transport.transport.iceGatherer
        _bind_host_candidates_on(gatherer._connection, addresses.local)
        if addresses.announced:
            _announce_host_candidates_at(gatherer, addresses.announced)


def _bind_host_candidates_on(connection: Any, local: Sequence[str]) -> None:
    if getattr(connection, "_relaystream_local", None) == tuple(local):
        return  # a transport shared by several transceivers (BUNDLE) is done once
    gather = connection.get_component_candidates

    # The same signature as aioice's method, which takes a timeout in seconds.
    async def gather_on_configured(
        component: int,
        addresses: list[str],
        timeout: int = 5,  # noqa: ASYNC109
    ) -> list[Any]:
        return list(await gather(component=component, addresses=list(local), timeout=timeout))

    connection.get_component_candidates = gather_on_configured
    connection._relaystream_local = tuple(local)


def _announce_host_candidates_at(gatherer: Any, announced: Sequence[str]) -> None:
    if getattr(gatherer, "_relaystream_announced", None) == tuple(announced):
        return
    bound_candidates = gatherer.getLocalCandidates

    def announced_candidates() -> list[Any]:
        candidates = []
        for candidate in bound_candidates():
            if candidate.type != "host":
                candidates.append(candidate)
                continue
            candidates += [dataclasses.replace(candidate, ip=address) for address in announced]
        return candidates

    gatherer.getLocalCandidates = announced_candidates
    gatherer._relaystream_announced = tuple(announced)
