"""Checks that run before the server listens, so a broken setup fails fast.

A server that cannot keep tasks must not start half-way: a process supervisor only
restarts (and an operator only notices) a process that exits. Each check raises
``StartupError`` with one line that names the path and the cause.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path

import psycopg
import psycopg_pool

from relaystream.store.postgres import PostgresTaskStore, redacted_url
from relaystream.store.sqlite import SqliteTaskStore


class StartupError(Exception):
    """The server cannot start; the message is one line for the operator."""


def prepare_data_dir(data_dir: Path) -> None:
    """Create ``data_dir`` if needed and prove that files can be written in it."""
    probe = data_dir / f".write-probe-{uuid.uuid4().hex}"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        # A directory can exist and still refuse writes (permissions, a read-only mount).
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"the data dir {data_dir} is not usable: {exc.strerror or exc}"
        ) from None


async def open_task_store(
    data_dir: Path, url: str | None = None
) -> SqliteTaskStore | PostgresTaskStore:
    """The configured store: PostgreSQL at ``url``, else SQLite in ``data_dir``."""
    if url is not None:
        return await _open_postgres(url)
    path = data_dir / "relaystream.db"
    if path.exists() and not path.is_file():
        # Checked here: SQLite's own failure to open it surfaces late, from a thread.
        raise StartupError(f"the task store {path} is not usable: not a regular file")
    try:
        return await SqliteTaskStore.open(path)
    except (OSError, sqlite3.Error) as exc:
        raise StartupError(f"the task store {path} is not usable: {exc}") from None


async def _open_postgres(url: str) -> PostgresTaskStore:
    try:
        return await PostgresTaskStore.open(url)
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        # The driver's message may quote the URL; only the redacted one is shown.
        reason = type(exc).__name__
        raise StartupError(f"the task store {redacted_url(url)} is not usable: {reason}") from None


def node_id(data_dir: Path) -> str:
    """This node's id, made once and kept in the data dir (stable across restarts, so a
    restarted node takes back its own tasks at once)."""
    path = data_dir / "node-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        made = f"node-{uuid.uuid4().hex[:8]}"
        path.write_text(made + "\n")
        return made
