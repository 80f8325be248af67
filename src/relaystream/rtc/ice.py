"""Which local addresses ICE offers as host candidates.

aioice always leaves out 127.0.0.1, and offers no option to choose addresses. A server
bound to loopback (the default) must offer loopback candidates, or no peer on the same
machine could connect without leaving it, so we replace aioice's address discovery with
the configured list.
"""

from __future__ import annotations

from collections.abc import Sequence

import aioice.ice

_discover_host_addresses = aioice.ice.get_host_addresses


def use_ice_addresses(addresses: Sequence[str] | None) -> None:
    """Offer exactly ``addresses`` as host candidates; ``None`` restores discovery."""
    if addresses is None:
        aioice.ice.get_host_addresses = _discover_host_addresses
        return
    fixed = list(addresses)

    def configured_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in fixed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = configured_addresses
