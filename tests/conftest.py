"""Fixtures shared by the whole suite: real media, real servers, all on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clips import make_clips
from tests.support.net import static_http_server
from tests.support.postgres import PostgresCluster, postgres_cluster
from tests.support.sdk import RtcService
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, RelayServer, start_server


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_clips(tmp_path_factory.mktemp("clips"))


@pytest.fixture(scope="session")
def media_url(clips: dict[str, Path]) -> Iterator[str]:
    """Base URL of an HTTP server (with Range support) serving the clips."""
    with static_http_server(clips["mp4"].parent) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL for the session, started when a test first asks."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def relay_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayServer]:
    server = start_server(tmp_path_factory.mktemp("server"))
    yield server
    server.stop()


@pytest.fixture
def rtc(relay_server: RelayServer) -> RtcService:
    """The official Volcengine SDK, signed in with the test account."""
    return RtcService(relay_server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
