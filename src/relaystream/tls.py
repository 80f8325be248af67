"""HTTPS for the whole server: the TLS context made from the operator's PEM files.

Browsers give a page a camera, and a viewer on another machine a trustworthy page, only
from a secure origin; behind a TLS-terminating proxy none of this is needed.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from relaystream.config import ConfigError


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side TLS context for ``cert`` (with its chain) and ``key``; ConfigError
    naming the file if either cannot be used."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile=cert, keyfile=key)
    except FileNotFoundError as exc:
        raise ConfigError(f"TLS: cannot read {exc.filename}") from None
    except ssl.SSLError as exc:
        raise ConfigError(f"TLS: {cert} and {key} are not a usable PEM pair: {exc}") from None
    return context
