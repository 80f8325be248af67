"""HLS playlists and DASH manifests written at test time around one short TS clip."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from relaystream.media.testsrc import ClipSpec, make_test_clip
from tests.support.clips import remux
from tests.support.net import ConnectionRecorder, connection_recorder, free_port, static_http_server

SEGMENT_CLIP = ClipSpec(duration_s=2.0, width=160, height=90, frame_rate=25)
# The host name tests use for a "public" origin; the hosts table puts it on 127.0.0.1.
PUBLIC_HOSTS = {"media.test": "127.0.0.1"}


def make_segment(directory: Path) -> Path:
    """A 2 s MPEG-TS segment (H.264 + AAC) in ``directory``, made once."""
    segment = directory / "segment.ts"
    if not segment.exists():
        mp4 = make_test_clip(directory / "segment-source.mp4", SEGMENT_CLIP)
        remux(mp4, segment, "mpegts")
    return segment


def write_playlist(path: Path, segment_urls: list[str], *, key_url: str | None = None) -> Path:
    """A VOD media playlist; with ``key_url``, AES-128 with a zero IV."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2", "#EXT-X-MEDIA-SEQUENCE:0"]
    if key_url is not None:
        lines.append(f'#EXT-X-KEY:METHOD=AES-128,URI="{key_url}",IV=0x{"00" * 16}')
    for url in segment_urls:
        lines += ["#EXTINF:2.0,", url]
    lines.append("#EXT-X-ENDLIST")
    path.write_text("\n".join(lines) + "\n")
    return path


def encrypt_segment(segment: Path, target: Path, key_path: Path) -> Path:
    """``segment`` encrypted the HLS AES-128 way, its key written to ``key_path``."""
    key = os.urandom(16)
    key_path.write_bytes(key)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(segment.read_bytes()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).encryptor()
    target.write_bytes(encryptor.update(padded) + encryptor.finalize())
    return target


def write_dash_manifest(path: Path, base_url: str) -> Path:
    """A static DASH manifest whose only representation lives under ``base_url``."""
    path.write_text(
        f"""<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT2S"
     minBufferTime="PT2S" profiles="urn:mpeg:dash:profile:isoff-live:2011">
  <BaseURL>{base_url}</BaseURL>
  <Period id="0" start="PT0S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4">
      <Representation id="0" codecs="avc1.64000c" bandwidth="100000" width="160" height="90">
        <SegmentTemplate timescale="1000" duration="2000" startNumber="1"
                         initialization="init-$RepresentationID$.m4s"
                         media="chunk-$RepresentationID$-$Number$.m4s"/>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"""
    )
    return path


@dataclass
class Origin:
    """A "public" HTTP origin on 127.0.0.1 whose sources lead to ``forbidden``, a
    127.0.0.1 listener on another port that records any connection."""

    root: Path
    port: int
    forbidden: ConnectionRecorder

    @property
    def url(self) -> str:
        return f"http://media.test:{self.port}"


@contextmanager
def serve_origin(root: Path) -> Iterator[Origin]:
    """Serves, under ``root``: ``clean.m3u8``, ``encrypted.m3u8`` (AES-128), ``vod.mp4``
    (index at the end), ``moved/clean.m3u8`` (a redirect to ``clean.m3u8``), and
    sources that lead elsewhere: ``redirect.flv``,
    ``segments-elsewhere.m3u8``, ``key-elsewhere.m3u8``, ``elsewhere.mpd``, and
    ``local-segments.m3u8`` (a ``file:`` and a ``data:`` segment)."""
    segment = make_segment(root)
    encrypt_segment(segment, root / "encrypted.ts", root / "key.bin")
    make_test_clip(root / "vod.mp4", ClipSpec(duration_s=1.0, width=160, height=90))
    with connection_recorder() as forbidden:
        elsewhere = forbidden.base_url
        write_playlist(root / "clean.m3u8", ["segment.ts", "segment.ts"])
        write_playlist(root / "encrypted.m3u8", ["encrypted.ts"], key_url="key.bin")
        write_playlist(root / "segments-elsewhere.m3u8", [f"{elsewhere}/segment.ts"] * 2)
        write_playlist(
            root / "key-elsewhere.m3u8", ["encrypted.ts"], key_url=f"{elsewhere}/key.bin"
        )
        data_url = "data:video/mp2t;base64," + base64.b64encode(segment.read_bytes()).decode()
        write_playlist(root / "local-segments.m3u8", [segment.as_uri(), data_url])
        write_dash_manifest(root / "elsewhere.mpd", f"{elsewhere}/dash/")
        port = free_port()
        redirects = {
            "/redirect.flv": f"{elsewhere}/clip.flv",
            "/moved/clean.m3u8": "/clean.m3u8",
        }
        with static_http_server(root, port=port, redirects=redirects):
            yield Origin(root, port, forbidden)
