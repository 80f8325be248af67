"""What a DASH manifest says before any media is read: VOD or live, how long, and which
hosts its segments come from.

The manifest is fetched here, with a size cap, because the reader that plays it (the
ffmpeg CLI, bridge.py) is outside this process: every host it will reach must be checked
first.
"""

from __future__ import annotations

import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin
from xml.etree import ElementTree

from relaystream.media.failures import SourceError

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


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Every redirect target passes the same address check as the first URL."""

    def __init__(self, check_url: Callable[[str], None]) -> None:
        self._check_url = check_url

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        self._check_url(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_manifest(
    url: str, *, timeout_s: float, verify_tls: bool, check_url: Callable[[str], None]
) -> DashManifest:
    """Fetch and read the manifest; a manifest over MAX_MANIFEST_BYTES is refused.

    ``check_url`` raises SourceError for an address the policy refuses; it is applied to
    the manifest's URL, each redirect, and every BaseURL the manifest names.
    """
    check_url(url)
    if verify_tls:
        context = ssl.create_default_context()
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(
        _CheckedRedirects(check_url), urllib.request.HTTPSHandler(context=context)
    )
    request = urllib.request.Request(url, headers={"User-Agent": "relaystream"})  # noqa: S310
    try:
        with opener.open(request, timeout=timeout_s) as response:
            text = response.read(MAX_MANIFEST_BYTES + 1)
    except urllib.error.HTTPError as exc:
        retryable = exc.code >= 500 or exc.code == 429
        raise SourceError(
            f"HTTP {exc.code}: the source server refused the manifest", retryable=retryable
        ) from None
    except TimeoutError:
        raise SourceError(f"timed out after {timeout_s:g} s", retryable=True) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            raise SourceError("TLS: the source's certificate could not be verified") from None
        if isinstance(exc.reason, ConnectionRefusedError):
            raise SourceError(
                "unreachable: the source server refused the connection", retryable=True
            ) from None
        raise SourceError(
            "unreachable: the source server could not be reached", retryable=True
        ) from None
    if len(text) > MAX_MANIFEST_BYTES:
        raise SourceError(f"the DASH manifest is larger than {MAX_MANIFEST_BYTES // 1000} kB")
    manifest = parse_manifest(url, text)
    for base_url in manifest.base_urls:
        check_url(base_url)
    return manifest
