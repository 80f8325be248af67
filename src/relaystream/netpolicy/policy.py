"""The rule for one outgoing connection: which URL may reach which address.

``AddressPolicy.refuse_literal`` is the cheap check the API makes (no DNS).
``AddressPolicy.destination`` is the full one a fetcher makes right before it connects:
it parses the URL, resolves the host once through a ``PinnedResolver`` (so every later
open of the same host in this fetcher gets the same answer, whatever DNS says by then),
checks every address, and returns the ``Destination`` to connect to.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import SplitResult, unquote, urlsplit

from relaystream.netpolicy.addresses import IPAddress, is_public, literal_address

DEFAULT_PORTS = {"http": 80, "https": 443, "rtmp": 1935, "rtmps": 443, "rtsp": 554}

# Characters that URL parsers disagree on: a host with one of these is refused rather
# than risk FFmpeg reading a different host than the one we checked.
_AMBIGUOUS_HOST_CHARACTERS = frozenset("\\ \t\r\n")


class AddressRefused(Exception):
    """The policy does not let this URL be fetched; ``detail`` says why, for users."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Unresolvable(Exception):
    """The host name has no address (a temporary failure is worth retrying)."""


@dataclass(frozen=True)
class ResolvedAddress:
    address: IPAddress
    # Vouched for by the operator's own hosts table: allowed even when not public.
    vouched: bool = False


class Resolver(Protocol):
    def resolve(self, host: str) -> Sequence[ResolvedAddress]:
        """Every address of ``host``; raises Unresolvable when there is none."""
        ...


class SystemResolver:
    """The system's ``getaddrinfo``, the same lookup FFmpeg would have made."""

    def resolve(self, host: str) -> Sequence[ResolvedAddress]:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise Unresolvable(f"cannot resolve host {host!r}") from exc
        answers: list[ResolvedAddress] = []
        for info in infos:
            address = literal_address(str(info[4][0]))
            if address is not None and all(a.address != address for a in answers):
                answers.append(ResolvedAddress(address))
        if not answers:
            raise Unresolvable(f"cannot resolve host {host!r}")
        return answers


class HostsTable:
    """Names the operator (or a test) maps to fixed addresses; others go to ``fallback``.

    An entry is vouched for: it may name a private address even when private sources
    are refused, the way a trusted prefix may. Empty unless configured.
    """

    def __init__(self, entries: dict[str, str], fallback: Resolver) -> None:
        self._entries = {
            name.lower().rstrip("."): _required_literal(address)
            for name, address in entries.items()
        }
        self._fallback = fallback

    def resolve(self, host: str) -> Sequence[ResolvedAddress]:
        address = self._entries.get(host.lower().rstrip("."))
        if address is None:
            return self._fallback.resolve(host)
        return [ResolvedAddress(address, vouched=True)]


def _required_literal(text: str) -> IPAddress:
    address = literal_address(text)
    if address is None:
        raise ValueError(f"{text!r} is not an IP address")
    return address


class PinnedResolver:
    """Resolves each host once and keeps the answer: a later DNS answer never counts.

    One fetcher (a media worker, a callback sender) owns one; the answers live as long
    as it does, which is what defeats DNS rebinding between a check and a connect, or
    between a playlist and its segments.
    """

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver
        self._answers: dict[str, Sequence[ResolvedAddress]] = {}

    def resolve(self, host: str) -> Sequence[ResolvedAddress]:
        key = host.lower()
        if key not in self._answers:
            self._answers[key] = self._resolver.resolve(host)
        return self._answers[key]


@dataclass(frozen=True)
class Destination:
    """A checked URL: where to connect, and the names to keep for Host, SNI and tcUrl."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]
    parts: SplitResult = field(repr=False)


def split_url(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise AddressRefused(f"not a valid URL ({exc})") from None
    return parts


def _host_of(parts: SplitResult) -> str:
    host = parts.hostname
    if not host:
        raise AddressRefused("the URL has no host")
    # A percent-encoded password is fine; a percent in the host is not.
    if "%" in parts.netloc.rpartition("@")[2] or any(
        character in _AMBIGUOUS_HOST_CHARACTERS for character in parts.netloc
    ):
        raise AddressRefused("the URL's host part has characters that are not allowed")
    return host


def _same_origin_prefix(url: SplitResult, prefix: SplitResult) -> bool:
    path = unquote(url.path)
    return (
        url.scheme.lower() == prefix.scheme.lower()
        and (url.hostname or "") == (prefix.hostname or "")
        and _port(url) == _port(prefix)
        and path.startswith(prefix.path or "/")
        # "/demo/../admin" starts with "/demo/" but is not under it.
        and ".." not in path.split("/")
        and url.username is None
    )


def _port(parts: SplitResult) -> int | None:
    return parts.port or DEFAULT_PORTS.get(parts.scheme.lower())


class AddressPolicy:
    """Whether a URL may be fetched, under ``allow_private`` and the trusted prefixes.

    A trusted prefix (``http://127.0.0.1:8080/demo/``) matches a URL of the same scheme,
    host and port whose path starts with the prefix's path; such a URL may reach any
    address. Everything else must resolve only to public addresses (or to a vouched
    entry of the hosts table) unless ``allow_private`` is set.
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        trusted_prefixes: Sequence[str] = (),
        resolver: Resolver | None = None,
        setting_name: str = "allow_private",
    ) -> None:
        self.allow_private = allow_private
        self._trusted = tuple(urlsplit(prefix) for prefix in trusted_prefixes)
        self._resolver = PinnedResolver(resolver or SystemResolver())
        self._setting_name = setting_name

    def is_trusted(self, url: str) -> bool:
        parts = split_url(url)
        return any(_same_origin_prefix(parts, prefix) for prefix in self._trusted)

    def refuse_literal(self, url: str) -> None:
        """Raise AddressRefused if the URL names a non-public address literally.

        Host names are left alone: resolving here would block the caller and could
        give another answer than the fetcher will get; the fetcher checks them.
        """
        parts = split_url(url)
        host = _host_of(parts)
        if self.allow_private or self.is_trusted(url):
            return
        address = literal_address(host)
        if address is not None and not is_public(address):
            raise self._refusal(host, address)

    def destination(self, url: str) -> Destination:
        """Resolve (once per host), check and pin the address to connect to."""
        parts = split_url(url)
        host = _host_of(parts)
        scheme = parts.scheme.lower()
        port = _port(parts)
        if port is None:
            raise AddressRefused(f"the URL has no port and {scheme!r} has no default one")
        literal = literal_address(host)
        if literal is not None:
            answers: Sequence[ResolvedAddress] = [ResolvedAddress(literal)]
        else:
            answers = self._resolver.resolve(host)
        if not (self.allow_private or self.is_trusted(url)):
            for answer in answers:
                if not answer.vouched and not is_public(answer.address):
                    raise self._refusal(host, answer.address)
        return Destination(
            url=url,
            scheme=scheme,
            host=host,
            port=port,
            addresses=tuple(answer.address for answer in answers),
            parts=parts,
        )

    def _refusal(self, host: str, address: IPAddress) -> AddressRefused:
        shown = host if str(address) == host else f"{host} ({address})"
        return AddressRefused(
            f"{shown} is not a public address; fetching from it is not allowed "
            f"unless {self._setting_name} is set"
        )
