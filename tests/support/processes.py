"""Finding a server's media worker processes, to crash or freeze them in tests."""

from __future__ import annotations

from pathlib import Path


def media_worker_pids(server_pid: int) -> set[int]:
    """Media worker processes started by the server."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == server_pid and b"relaystream.media.worker" in cmdline:
            pids.add(int(entry.name))
    return pids


def media_workers_by_marker(name: str) -> dict[int, str]:
    """Every media worker on the machine whose environment sets ``name``: pid → value.

    Found by environment, not parent: a worker whose server was killed has been
    reparented and still counts while it runs."""
    found = {}
    prefix = name.encode() + b"="
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"relaystream.media.worker" not in (entry / "cmdline").read_bytes():
                continue
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
