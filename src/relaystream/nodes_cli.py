"""``relaystream nodes`` and ``relaystream drain``: the nodes sharing a store, from the
store itself (the config's ``[store] url``, or the SQLite file in the data dir).

Drain marks a node as draining in the store; the node hands its tasks back on its next
lease round, the other nodes take them (each continues with one reconnect), and it
takes no new ones until it starts again (a start clears the mark) or ``--undo``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from relaystream.config import ConfigError, load_config
from relaystream.startup import StartupError, open_task_store
from relaystream.store.leases import NodeInfo


def add_commands(commands: argparse._SubParsersAction[Any]) -> None:
    nodes = commands.add_parser(
        "nodes",
        help="list the nodes sharing the store, their leases and tasks",
        description="List the nodes that share the task store: each one's advertised URL, "
        "until when its lease runs, its task leases and running slots.",
    )
    _store_options(nodes)
    drain = commands.add_parser(
        "drain",
        help="move a node's tasks to the other nodes (before maintenance)",
        description="Mark NODE as draining: it hands its tasks to the other nodes (one "
        "reconnect each) and takes no new ones. Waits until it holds none.",
    )
    drain.add_argument("node", help="the node id (see `relaystream nodes`)")
    drain.add_argument("--undo", action="store_true", help="let the node take tasks again")
    drain.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    _store_options(drain)


def _store_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("RELAYSTREAM_CONFIG"),
        help="config file whose [store] url to use",
    )
    command.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="the SQLite store's data dir"
    )


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except (ConfigError, StartupError) as exc:
        print(f"relaystream {args.command}: {exc}", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace) -> int:
    url = load_config(args.config).store.url if args.config else None
    store = await open_task_store(args.data_dir, url)
    try:
        if args.command == "nodes":
            _print_nodes(await store.nodes())
            return 0
        if not await store.set_draining(args.node, not args.undo):
            print(f"relaystream drain: no node {args.node!r}", file=sys.stderr)
            return 1
        if args.undo:
            print(f"{args.node}: takes tasks again")
            return 0
        deadline = time.monotonic() + args.timeout
        while True:
            [node] = [n for n in await store.nodes() if n.node_id == args.node]
            if node.leases == 0:
                print(f"{args.node}: drained")
                return 0
            if time.monotonic() > deadline:
                print(f"{args.node}: still holds {node.leases} tasks", file=sys.stderr)
                return 1
            await asyncio.sleep(0.2)
    finally:
        await store.close()


def _print_nodes(nodes: list[NodeInfo]) -> None:
    now_ms = time.time() * 1000
    print(f"{'NODE':<20} {'STATE':<9} {'LEASE':>7} {'TASKS':>5} {'SLOTS':>10}  URL")
    for node in nodes:
        left_s = (node.lease_until_ms - now_ms) / 1000
        state = "draining" if node.draining else ("up" if left_s >= 0 else "gone")
        print(
            f"{node.node_id:<20} {state:<9} {left_s:>6.1f}s {node.leases:>5} "
            f"{node.capacity:>10}  {node.advertise_url}"
        )
