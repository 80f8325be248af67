"""What a DASH manifest says before any media is read: VOD or live, how long, and which
hosts its segments come from.

The manifest is fetched here, through netpolicy's checked client, because the reader
that plays it (the ffmpeg CLI, bridge.py) is outside this process: every host it names
is checked first. The CLI's own segment requests (and their redirects) are not.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin
from xml.etree import ElementTree

from relaystream.media.failures import SourceError
from relaystream.netpolicy import (
    AddressRefused,
    CheckedHttpClient,
    FetchError,
    HttpBody,
    HttpStatusError,
    Unresolvable,
)

MAX_MANIFEST_BYTES = 1_000_000
_DURATION = re.compile(
    r"^P(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


@dataclass(frozen=True)
class DashManifest:
    live: bool
    duration_s: float | None
    base_urls: tuple[str, ...]  # absolute, the manifest's own URL included


def parse_iso_duration(text: str) -> float | None:
    """``PT1H2M3.5S`` → 3723.5 seconds; None if it is not an ISO 8601 duration."""
    match = _DURATION.match(text.strip())
    if match is None:
        return None
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return (
        parts.get("days", 0) * 86_400
        + parts.get("hours", 0) * 3_600
        + parts.get("minutes", 0) * 60
        + parts.get("seconds", 0)
    )


def parse_manifest(url: str, text: bytes) -> DashManifest:
    try:
        root = ElementTree.fromstring(text)  # noqa: S314 (no entities: expat refuses them)
    except ElementTree.ParseError:
        raise SourceError("corrupt data: the DASH manifest is not valid XML") from None
    if not root.tag.endswith("MPD"):
        raise SourceError("corrupt data: not a DASH manifest")
    live = root.get("type", "static") == "dynamic"
    duration_text = root.get("mediaPresentationDuration")
    duration_s = parse_iso_duration(duration_text) if duration_text else None
    base_urls = [url]
    for element in root.iter():
        if element.tag.endswith("BaseURL") and element.text:
            base_urls.append(urljoin(url, element.text.strip()))
    return DashManifest(
        live=live or duration_s is None,
        duration_s=None if live else duration_s,
        base_urls=tuple(base_urls),
    )


def _read_capped(body: HttpBody, limit: int) -> bytes:
    """The body, or its first ``limit`` bytes (a raw read returns what has arrived)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := body.read(limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def fetch_manifest(
    url: str, client: CheckedHttpClient, *, timeout_s: float, check_url: Callable[[str], None]
) -> DashManifest:
    """Fetch and read the manifest through the checked client (which caps its size and
    checks every redirect); ``check_url`` then checks every BaseURL it names."""
    try:
        with client.open(url) as body:
            text = _read_capped(body, MAX_MANIFEST_BYTES + 1)
    except HttpStatusError as exc:
        raise SourceError(
            f"HTTP {exc.status}: the source server refused the manifest",
            retryable=exc.status >= 500 or exc.status == 429,
        ) from None
    except FetchError as exc:
        raise SourceError(exc.detail) from None
    except AddressRefused as exc:
        raise SourceError(f"address not allowed: {exc.detail}") from None
    except Unresolvable as exc:
        raise SourceError(f"unreachable: {exc}", retryable=True) from None
    except ssl.SSLCertVerificationError:
        raise SourceError("TLS: the source's certificate could not be verified") from None
    except ConnectionRefusedError:
        raise SourceError(
            "unreachable: the source server refused the connection", retryable=True
        ) from None
    except TimeoutError:
        raise SourceError(f"timed out after {timeout_s:g} s", retryable=True) from None
    except OSError:
        raise SourceError(
            "unreachable: the source server could not be reached", retryable=True
        ) from None
    if len(text) > MAX_MANIFEST_BYTES:
        raise SourceError(f"the DASH manifest is larger than {MAX_MANIFEST_BYTES // 1000} kB")
    manifest = parse_manifest(body.url, text)
    for base_url in manifest.base_urls:
        check_url(base_url)
    return manifest
