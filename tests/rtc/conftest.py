"""Fixtures for the SFU stories: a source long enough for a relay to outlive a test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from relaystream.media.testsrc import ClipSpec, make_test_clip
from tests.support.net import static_http_server

# Small and low-rate, so it is quick to make, yet longer than any test here runs.
LONG_CLIP = ClipSpec(duration_s=150.0, width=320, height=180, frame_rate=15)


@pytest.fixture(scope="session")
def long_clip_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a 150 s MPEG-TS clip (320x180, 15 fps, a keyframe a second) on 127.0.0.1."""
    directory = tmp_path_factory.mktemp("long-clip")
    make_test_clip(Path(directory) / "long.ts", LONG_CLIP)
    with static_http_server(directory) as base_url:
        yield f"{base_url}/long.ts"
