"""Several nodes: a room lives on one node, and requests for it on another are sent there.

WHIP, the room page and its event stream answer ``307`` with the same path on the node
that hosts the room (runs its relay tasks), so a publisher or a page that reached any
node ends up where the room's viewers and publishers are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

# (app_id, room_id) → the base URL of the node that hosts the room, if another.
RoomOwnerLookup = Callable[[str, str], Awaitable[str | None]]


async def redirect_to_room_owner(
    request: web.Request, lookup: RoomOwnerLookup | None, app_id: str, room_id: str
) -> None:
    """Raise a 307 to the room's node when another node hosts it."""
    if lookup is None:
        return
    owner = await lookup(app_id, room_id)
    if owner is not None:
        # 307 keeps the method and body: a WHIP offer is posted again, as it was.
        raise web.HTTPTemporaryRedirect(owner.rstrip("/") + request.path_qs)
