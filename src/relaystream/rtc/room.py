"""The embedded SFU: rooms, publications, and packet fan-out to subscribers.

Listeners on a room learn when a publication starts and ends (``RoomRegistry.listen``),
which is how pages show who is in a room without polling.

A publication's track holds the packets since the last keyframe (a GOP cache) so a
viewer who joins mid-stream gets a decodable picture at once, and hands every packet to
each subscriber's bounded queue. A slow subscriber loses packets (video: until the next
keyframe), never slows the publisher or the other subscribers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from relaystream.rtc.keyframe_requests import KeyframeRequests
from relaystream.rtc.shared_packetization import OutgoingFrame

logger = logging.getLogger(__name__)

SUBSCRIBER_QUEUE_PACKETS = 256
GOP_CACHE_MAX_PACKETS = 600  # ~10 s of 60 fps video; longer GOPs are not cached


class TrackKind(StrEnum):
    AUDIO = "audio"
    VIDEO = "video"


class RoomEventKind(StrEnum):
    JOINED = "joined"
    LEFT = "left"


@dataclass(frozen=True)
class RoomEvent:
    """A publication started or ended in a room."""

    kind: RoomEventKind
    user_id: str
    tracks: frozenset[TrackKind]


RoomListener = Callable[[RoomEvent], None]


class ForwardedTrack(MediaStreamTrack):
    """One subscriber's copy of a published track: encoded frames, never decoded.

    ``recv`` returns ``av.Packet``s, which aiortc's own sender packetizes (a Janus or
    WHIP publisher's single track). A room viewer's sender reads ``next_frame``
    instead (``shared_packetization``): the frames are shared by every viewer of the
    publication, and so are their RTP payloads.
    """

    def __init__(
        self,
        kind: TrackKind,
        on_stop: Callable[[ForwardedTrack], None],
        queue_packets: int = SUBSCRIBER_QUEUE_PACKETS,
    ) -> None:
        super().__init__()
        self.kind = kind.value
        self._track_kind = kind
        self._on_stop = on_stop
        self._queue: asyncio.Queue[OutgoingFrame | None] = asyncio.Queue(queue_packets)
        self._waiting_for_keyframe = False
        self.packets_dropped = 0

    def offer(self, packet: av.Packet[Any]) -> None:
        self.offer_frame(OutgoingFrame(packet, is_video=self._track_kind is TrackKind.VIDEO))

    def offer_frame(self, frame: OutgoingFrame) -> None:
        is_video = self._track_kind is TrackKind.VIDEO
        if self._waiting_for_keyframe:
            if not frame.is_keyframe:
                self.packets_dropped += 1
                return
            self._waiting_for_keyframe = False
        if self._queue.full():
            self.packets_dropped += self._queue.qsize()
            self._clear()
            # Video after a gap is undecodable until the next keyframe.
            if is_video and not frame.is_keyframe:
                self._waiting_for_keyframe = True
                self.packets_dropped += 1
                return
        self._queue.put_nowait(frame)

    def finish(self) -> None:
        """No more packets: ``recv`` raises MediaStreamError once the queue drains."""
        if self._queue.full():
            self._clear()
        self._queue.put_nowait(None)

    async def recv(self) -> av.Packet[Any]:
        return (await self.next_frame()).packet

    async def next_frame(self) -> OutgoingFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        super().stop()
        self._on_stop(self)

    def _clear(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()


class PublishedTrack:
    """One published track and its subscribers."""

    def __init__(self, kind: TrackKind) -> None:
        self.kind = kind
        self._subscribers: set[ForwardedTrack] = set()
        self._gop_cache: list[OutgoingFrame] = []
        self._finished = False
        self.packets_in = 0
        self.bytes_in = 0
        # Set by the publication (its rate-limited keyframe requests): a viewer with no
        # cached GOP to start from then waits a round trip, not a whole keyframe
        # interval, when the publisher can make a keyframe on demand.
        self.request_keyframe: Callable[[], None] | None = None

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def push(self, packet: av.Packet[Any]) -> None:
        self.packets_in += 1
        self.bytes_in += packet.size
        # One frame for every subscriber: its RTP payloads are made once.
        frame = OutgoingFrame(packet, is_video=self.kind is TrackKind.VIDEO)
        if frame.is_video:
            self._remember(frame)
        for subscriber in tuple(self._subscribers):
            subscriber.offer_frame(frame)

    def subscribe(self) -> ForwardedTrack:
        # Room for the whole cached GOP on top of the usual backlog: dropping part of
        # it would drop the very keyframe a new viewer needs.
        track = ForwardedTrack(
            self.kind,
            on_stop=self._subscribers.discard,
            queue_packets=SUBSCRIBER_QUEUE_PACKETS + len(self._gop_cache),
        )
        if self._finished:
            track.finish()
            return track
        for frame in self._gop_cache:
            track.offer_frame(frame)
        self._subscribers.add(track)
        if self.kind is TrackKind.VIDEO and not self._gop_cache and self.request_keyframe:
            self.request_keyframe()
        return track

    def finish(self) -> None:
        self._finished = True
        for subscriber in tuple(self._subscribers):
            subscriber.finish()
        self._gop_cache.clear()

    def _remember(self, frame: OutgoingFrame) -> None:
        if frame.is_keyframe:
            self._gop_cache = [frame]
        elif self._gop_cache:
            if len(self._gop_cache) >= GOP_CACHE_MAX_PACKETS:
                self._gop_cache = []
            else:
                self._gop_cache.append(frame)


class Publication:
    """A participant publishing in a room: its tracks, who listens for its end, and
    where its viewers' keyframe requests go."""

    def __init__(self, room: Room, user_id: str, kinds: frozenset[TrackKind]) -> None:
        self.room = room
        self.user_id = user_id
        self.tracks = {kind: PublishedTrack(kind) for kind in kinds}
        self._end_listeners: list[Callable[[], None]] = []
        self.keyframe_requests = KeyframeRequests()
        if TrackKind.VIDEO in self.tracks:
            self.tracks[TrackKind.VIDEO].request_keyframe = self.request_keyframe
        self.ended = False

    def send(self, kind: TrackKind, packet: av.Packet[Any]) -> None:
        track = self.tracks.get(kind)
        if track is not None and not self.ended:
            track.push(packet)

    def on_end(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` when the publication ends (at once if it already has).

        Returns what removes the listener: a viewer that leaves first must not stay
        referenced for the publication's whole life.
        """
        if self.ended:
            self._tell(listener)
        else:
            self._end_listeners.append(listener)

        def remove() -> None:
            if listener in self._end_listeners:
                self._end_listeners.remove(listener)

        return remove

    def request_keyframe(self) -> None:
        """A viewer needs a keyframe; passed to the publisher, rate limited."""
        if not self.ended:
            self.keyframe_requests.request()

    def on_keyframe_request(self, handler: Callable[[], None]) -> Callable[[], None]:
        """Call ``handler`` when the publisher should send a keyframe; returns what
        unsubscribes it."""
        return self.keyframe_requests.subscribe(handler)

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.keyframe_requests.close()
        for track in self.tracks.values():
            track.finish()
        for listener in self._end_listeners:
            self._tell(listener)
        self.room.remove(self)

    def _tell(self, listener: Callable[[], None]) -> None:
        try:
            listener()
        except Exception:
            logger.exception("end listener of %s failed", self.user_id)


class UserAlreadyPublishing(Exception):
    """Another participant already publishes as this user id in this room."""


class Room:
    """``(app_id, room_id)``: exists while someone is in it."""

    def __init__(self, registry: RoomRegistry, app_id: str, room_id: str) -> None:
        self._registry = registry
        self.app_id = app_id
        self.room_id = room_id
        self.publications: dict[str, Publication] = {}

    def remove(self, publication: Publication) -> None:
        if self.publications.get(publication.user_id) is publication:
            del self.publications[publication.user_id]
            self._registry.announce(self, RoomEventKind.LEFT, publication)
        if not self.publications:
            self._registry.forget(self)


class RoomRegistry:
    """All rooms of this server."""

    def __init__(self) -> None:
        self._rooms: dict[tuple[str, str], Room] = {}
        # Keyed by room name, not Room: a listener outlives the rooms that come and go.
        self._listeners: dict[tuple[str, str], list[RoomListener]] = {}

    def publish(
        self, app_id: str, room_id: str, user_id: str, kinds: frozenset[TrackKind]
    ) -> Publication:
        room = self._rooms.get((app_id, room_id))
        if room is None:
            room = self._rooms[(app_id, room_id)] = Room(self, app_id, room_id)
        if user_id in room.publications:
            raise UserAlreadyPublishing(f"user {user_id!r} already publishes in room {room_id!r}")
        publication = room.publications[user_id] = Publication(room, user_id, kinds)
        self.announce(room, RoomEventKind.JOINED, publication)
        return publication

    def listen(self, app_id: str, room_id: str, listener: RoomListener) -> Callable[[], None]:
        """Tell ``listener`` of every publication that starts or ends in the room from now
        on; returns the function that stops it. ``publishers`` gives who is there now."""
        key = (app_id, room_id)
        self._listeners.setdefault(key, []).append(listener)

        def stop() -> None:
            listeners = self._listeners.get(key, [])
            if listener in listeners:
                listeners.remove(listener)
            if not listeners:
                self._listeners.pop(key, None)

        return stop

    def publishers(self, app_id: str, room_id: str) -> list[Publication]:
        room = self._rooms.get((app_id, room_id))
        return list(room.publications.values()) if room else []

    def announce(self, room: Room, kind: RoomEventKind, publication: Publication) -> None:
        event = RoomEvent(kind, publication.user_id, frozenset(publication.tracks))
        for listener in tuple(self._listeners.get((room.app_id, room.room_id), ())):
            try:
                listener(event)
            except Exception:
                logger.exception("room listener failed on %s", event)

    def find_publication(self, app_id: str, room_id: str, user_id: str) -> Publication | None:
        room = self._rooms.get((app_id, room_id))
        return room.publications.get(user_id) if room else None

    def viewer_count(self, app_id: str, room_id: str, user_id: str) -> int:
        """Viewers of ``user_id``'s publication (0 when it does not publish)."""
        publication = self.find_publication(app_id, room_id, user_id)
        if publication is None:
            return 0
        return max((t.subscriber_count for t in publication.tracks.values()), default=0)

    def room(self, app_id: str, room_id: str) -> Room | None:
        return self._rooms.get((app_id, room_id))

    def forget(self, room: Room) -> None:
        if self._rooms.get((room.app_id, room.room_id)) is room:
            del self._rooms[(room.app_id, room.room_id)]
