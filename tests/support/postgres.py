"""A throwaway PostgreSQL cluster for the tests, on 127.0.0.1 in a temporary directory.

PostgreSQL refuses to run as root, so when the tests run as root the cluster is made
and run as Debian's ``postgres`` user (``runuser``); its directory is handed to that
user. Trust authentication: it listens on loopback only and lives as long as the test
session. Each test gets a database of its own (``fresh_database``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.net import free_port

_SERVICE_USER = "postgres"


@dataclass(frozen=True)
class PostgresCluster:
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{_SERVICE_USER}@127.0.0.1:{self.port}/{database}"

    def fresh_database(self) -> str:
        """A new empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _bin_dir() -> Path:
    """The newest installed server's binaries (Debian: /usr/lib/postgresql/N/bin)."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise RuntimeError("PostgreSQL is not installed (make check-system-deps installs it)")
    return candidates[-1].parent


def _as_service_user(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    return ["runuser", "-u", _SERVICE_USER, "--", *args]


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="relaystream-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        owner = pwd.getpwnam(_SERVICE_USER)
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = free_port()
    subprocess.run(
        _as_service_user(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", _SERVICE_USER, "--auth=trust"]
        ),
        check=True,
        capture_output=True,
    )
    options = f"-k {root} -c listen_addresses=127.0.0.1 -p {port} -c fsync=off"
    subprocess.run(
        _as_service_user(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(root / "server.log"),
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield PostgresCluster(port=port)
    finally:
        subprocess.run(
            _as_service_user(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
            ),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)
