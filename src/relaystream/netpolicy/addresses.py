"""Which IP addresses are public, and every way a URL host can spell one.

``literal_address`` reads a host the way ``getaddrinfo`` reads a numeric host before
any DNS lookup (the BSD ``inet_aton`` grammar FFmpeg inherits: ``127.1``, ``0x7f.1``,
``0177.0.0.1``, ``2130706433``) plus IPv6 in any form ``ipaddress`` accepts, so the
API can refuse a literal without resolving anything. ``is_public`` says whether an
address is globally routable; an IPv6 address that only wraps an IPv4 one (mapped,
compatible, NAT64, 6to4) is judged by the IPv4 address inside.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv6Address

IPAddress = IPv4Address | IPv6Address

_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")


def literal_address(host: str) -> IPAddress | None:
    """The address a numeric host names, or None when the host is a name to resolve."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    # A fully qualified literal ("127.0.0.1.") still names the same address.
    if host.endswith(".") and not host.endswith(".."):
        host = host[:-1]
    if ":" in host:
        try:
            return IPv6Address(host)
        except ValueError:
            return None
    return _inet_aton(host)


def _inet_aton(host: str) -> IPv4Address | None:
    """BSD ``inet_aton``: 1-4 parts, each decimal, 0-octal or 0x-hex; the last part
    fills the bytes that are left (``127.1`` is 127.0.0.1)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        value = _number(part)
        if value is None:
            return None
        values.append(value)
    *leading, last = values
    if any(value > 0xFF for value in leading):
        return None
    last_bits = 8 * (4 - len(leading))
    if last >= 1 << last_bits:
        return None
    number = 0
    for value in leading:
        number = number << 8 | value
    return IPv4Address(number << last_bits | last)


def _number(part: str) -> int | None:
    lowered = part.lower()
    try:
        if lowered.startswith("0x"):
            return int(lowered[2:], 16) if lowered[2:] else 0
        if lowered.startswith("0") and len(lowered) > 1:
            return int(lowered[1:], 8)
        return int(lowered, 10) if lowered.isdigit() else None
    except ValueError:
        return None


def embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address only carries, if it is one of those forms."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64_WELL_KNOWN or address in _IPV4_COMPATIBLE:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """Globally routable unicast: not loopback, private, link-local, unspecified,
    CGNAT, reserved, documentation, multicast, or an IPv6 wrapper of one of those."""
    if isinstance(address, IPv6Address):
        if address in _NAT64_LOCAL or address.scope_id:
            return False
        inner = embedded_ipv4(address)
        if inner is not None:
            return is_public(inner)
    return address.is_global and not address.is_multicast
