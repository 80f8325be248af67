"""This node among the others sharing the store: its id, its leases, where tasks go.

A node runs a task only while it holds the task's lease (relaystream.store.leases); it
renews its leases and its node row every ``renew_s``, each lease for ``lease_s``. Its
workers are told a fencing deadline ``fence_margin_s`` before the lease expires, so
they have stopped before any other node may take the task.

Placement: an active task without a lease (new, or its node is gone) is taken by the
live, non-draining node with the most free slots (ties: the smallest id); the others
leave it to that node, unless they are the only ones left.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from relaystream.store import TaskStore
from relaystream.store.leases import LeaseStore, NodeInfo, TaskLeaseKey
from relaystream.tasks.model import TaskKey

# PostgreSQL INTEGER: an "unlimited" slot count is shown as this.
_MAX_CAPACITY = 2**31 - 1


class SharedTaskStore(TaskStore, LeaseStore, Protocol):
    """A task store that also keeps node rows and leases (both stores do)."""


@dataclass(frozen=True)
class NodeSettings:
    node_id: str = "local"
    advertise_url: str = ""
    lease_s: float = 6.0
    renew_s: float = 2.0
    fence_margin_s: float = 1.0

    @property
    def lease_ms(self) -> int:
        return int(self.lease_s * 1000)


def now_ms() -> int:
    return int(time.time() * 1000)


def lease_key(key: TaskKey) -> TaskLeaseKey:
    return TaskLeaseKey(key.app_id, key.room_id, key.task_id)


def capacity_of(per_node: int) -> int:
    return min(per_node, _MAX_CAPACITY)


def freest_node(nodes: list[NodeInfo], at_ms: int) -> NodeInfo | None:
    """The live, non-draining node with the most free slots; None if there is none."""
    live = [n for n in nodes if n.lease_until_ms >= at_ms and not n.draining]
    if not live:
        return None
    return min(live, key=lambda n: (-(n.capacity - n.leases), n.node_id))
