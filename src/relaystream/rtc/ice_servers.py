"""STUN/TURN servers handed to browsers, as WHEP/WHIP ``Link`` headers (RFC 9725 §4.6).

The server itself answers with host candidates (see ``ice.py``); a viewer behind a
restrictive NAT or firewall needs a TURN relay of its own choosing, which the operator
configures in ``[rtc] ice_servers`` and every offer/answer exchange advertises.

TURN credentials go only to a client whose token was accepted (the ``201`` answer): the
CORS preflight (``OPTIONS``) is answered to anyone, so it names only the servers that
need no credentials.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


def link_headers(servers: tuple[IceServer, ...], *, with_credentials: bool) -> list[str]:
    """One ``Link`` header value per URL; servers with credentials only if asked for."""
    values = []
    for server in servers:
        if server.credential is not None and not with_credentials:
            continue
        for url in server.urls:
            value = f'<{url}>; rel="ice-server"'
            if server.username is not None and server.credential is not None:
                value += (
                    f'; username="{_quoted(server.username)}"'
                    f'; credential="{_quoted(server.credential)}"; credential-type="password"'
                )
            values.append(value)
    return values


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
