"""How many viewer/publisher sessions a node and each of its rooms may hold at once.

Every session costs a peer connection, UDP sockets and a packetizer; without a cap one
client can open sessions until the node runs out of memory or descriptors. A refusal is
``503 Service Unavailable`` with ``Retry-After``: the node is full, the request was fine.
Shared by every signaling endpoint that opens sessions (WHEP, WHIP).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from aiohttp import web

RoomKey = tuple[str, str]  # (app_id, room_id)
RETRY_AFTER_S = 5


@dataclass(frozen=True)
class SessionLimits:
    per_room: int = 100
    per_node: int = 500


class SessionSlot:
    """One admitted session's place; ``release`` gives it back (only once)."""

    def __init__(self, caps: SessionCaps, room: RoomKey) -> None:
        self._caps = caps
        self.room = room
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._caps._give_back(self.room)


class SessionCaps:
    """Counts open sessions per node and per room; admits while under the limits."""

    def __init__(self, limits: SessionLimits) -> None:
        self.limits = limits
        self._per_room: Counter[RoomKey] = Counter()
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    def admit(self, room: RoomKey) -> SessionSlot:
        """A slot in ``room``, or HTTP 503 when the node or the room is full."""
        if self._total >= self.limits.per_node:
            raise _full(f"this server holds its maximum of {self.limits.per_node} sessions")
        if self._per_room[room] >= self.limits.per_room:
            raise _full(f"this room holds its maximum of {self.limits.per_room} sessions")
        self._per_room[room] += 1
        self._total += 1
        return SessionSlot(self, room)

    def _give_back(self, room: RoomKey) -> None:
        self._total -= 1
        self._per_room[room] -= 1
        if self._per_room[room] <= 0:
            del self._per_room[room]


def _full(reason: str) -> web.HTTPServiceUnavailable:
    return web.HTTPServiceUnavailable(
        text=f"{reason}; try again later\n", headers={"Retry-After": str(RETRY_AFTER_S)}
    )
