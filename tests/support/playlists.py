"""HLS playlists and DASH manifests written at test time around one short TS clip."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from relaystream.media.testsrc import ClipSpec, make_test_clip
from tests.support.clips import remux

SEGMENT_CLIP = ClipSpec(duration_s=2.0, width=160, height=90, frame_rate=25)


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
