"""Finding a server's media worker processes, to crash or freeze them in tests.

A worker is spawned (``python -m relaystream.media.worker``) or forked by the server's
fork server, whose command line it then shares; every worker names itself
WORKER_PROCESS_NAME in /proc/PID/comm as soon as it runs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from relaystream.media.worker import WORKER_PROCESS_NAME

_SPAWNED_WORKER = b"relaystream.media.worker"
_FORK_SERVER = b"relaystream.media.forkserver"


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _is_fork_server(pid: int) -> bool:
    try:
        return _FORK_SERVER in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _is_media_worker(entry: Path) -> bool:
    """A live media worker (an exited one, not yet reaped, no longer counts)."""
    try:
        if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
        if (entry / "comm").read_text().strip() == WORKER_PROCESS_NAME:
            return True
        cmdline = (entry / "cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    if _SPAWNED_WORKER in cmdline:
        return True
    # Forked a moment ago, not yet renamed: everything a fork server forks is a worker.
    parent = _parent(int(entry.name))
    return _FORK_SERVER in cmdline and parent is not None and _is_fork_server(parent)


def media_worker_pids(server_pid: int) -> set[int]:
    """Media worker processes started by the server (spawned, or forked by its fork
    server)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not _is_media_worker(entry):
            continue
        parent = _parent(int(entry.name))
        if parent == server_pid or (
            parent is not None and _parent(parent) == server_pid and _is_fork_server(parent)
        ):
            pids.add(int(entry.name))
    return pids


def media_workers_by_marker(name: str) -> dict[int, str]:
    """Every media worker on the machine whose environment sets ``name``: pid → value.

    Found by environment, not parent: a worker whose server was killed has been
    reparented and still counts while it runs. (A forked worker has the environment of
    its fork server, which has the server's.)"""
    found = {}
    prefix = name.encode() + b"="
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not _is_media_worker(entry):
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state == "Z":  # exited, not yet reaped: it pulls nothing
            continue
        for variable in environ:
            if variable.startswith(prefix):
                found[int(entry.name)] = variable[len(prefix) :].decode()
    return found


def process_group_members(pgids: set[int]) -> set[int]:
    """Live processes in any of the process groups ``pgids`` (a worker leads its own
    group, so this finds a worker and whatever it started, even once reparented)."""
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields: state, ppid, pgrp, ...; a zombie is already gone for our purpose.
        if fields[0] != "Z" and int(fields[2]) in pgids:
            members.add(int(entry.name))
    return members


async def blocked_writing(pid: int, within_s: float) -> bool:
    """Whether one of the process's threads is stuck in a write to a full pipe within
    ``within_s`` (a worker's stdout, when nobody reads it: its stderr is drained)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        threads = Path(f"/proc/{pid}/task").glob("*/wchan")
        if any(wchan.read_text().strip().endswith("pipe_write") for wchan in threads):
            return True
        await asyncio.sleep(0.05)
    return False
