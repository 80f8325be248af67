"""Which addresses a URL may reach, and the checked HTTP client that enforces it.

relaystream fetches URLs that API callers name (relay sources, later callback URLs), so
without a policy anyone who can call the API could make the server read from its own
network: databases, metadata endpoints, admin ports (SSRF). This package owns that
policy for every fetcher and knows nothing about media.

The design, in the order a fetch meets it:

- ``addresses``: ``literal_address`` reads every numeric spelling of a host the way
  ``getaddrinfo`` would (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``,
  ``[::ffff:127.0.0.1]``, ``[::127.0.0.1]``, a trailing dot); ``is_public`` refuses
  anything not globally routable (loopback, private, link-local, unspecified, CGNAT,
  reserved, multicast, and IPv6 forms that wrap such an IPv4 address: mapped,
  compatible, NAT64, 6to4).
- ``policy``: ``AddressPolicy.refuse_literal`` is the API's instant check of a literal
  (host names are not resolved there: it would block and could differ later).
  ``AddressPolicy.destination`` is the fetcher's check: resolve once (``PinnedResolver``
  keeps the first answer for the fetcher's lifetime, so a second, different DNS answer
  never counts), check every address, return the address to connect to. Trusted URL
  prefixes (the server's own demo stream) and the operator's hosts table are allowed
  whatever their address; ``allow_private`` turns the address check off.
- ``http``: ``CheckedHttpClient`` connects to the checked address itself (keeping the
  host name for the Host header, TLS SNI and certificate checks), checks each redirect
  again, limits redirects and playlist sizes, and times out every read.

- ``proxy``: ``CheckingProxy`` is a forward proxy on 127.0.0.1 for a program outside
  our process (the ffmpeg CLI reading DASH): each request it carries is checked the
  same way, and the proxy connects to the checked address itself.

Protocols other than HTTP (RTMP, RTSP, SRT) use ``destination`` and connect to the
returned address (see ``relaystream.media.source``).

Errors (each with a user-facing ``detail`` or message):

    AddressRefused     the policy refuses the URL (no connection was made)
    Unresolvable       the host name has no address
    FetchError         the client gave up: too many redirects, a playlist too large
     └ HttpStatusError  the server answered 4xx/5xx (``status``)
    OSError            from the socket: refused, reset, timed out, TLS verification
"""

from __future__ import annotations

from relaystream.netpolicy.addresses import is_public, literal_address
from relaystream.netpolicy.http import (
    CheckedHttpClient,
    FetchError,
    HttpBody,
    HttpLimits,
    HttpStatusError,
)
from relaystream.netpolicy.policy import (
    AddressPolicy,
    AddressRefused,
    Destination,
    HostsTable,
    PinnedResolver,
    ResolvedAddress,
    Resolver,
    SystemResolver,
    Unresolvable,
)

__all__ = [
    "AddressPolicy",
    "AddressRefused",
    "CheckedHttpClient",
    "Destination",
    "FetchError",
    "HostsTable",
    "HttpBody",
    "HttpLimits",
    "HttpStatusError",
    "PinnedResolver",
    "ResolvedAddress",
    "Resolver",
    "SystemResolver",
    "Unresolvable",
    "is_public",
    "literal_address",
]
