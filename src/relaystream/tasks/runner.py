"""One run of a relay task: wait for its start time, join the room, run a media worker
and forward what it produces, then report why it ended."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import av

from relaystream.media.process import MediaWorker
from relaystream.media.spec import PipelineSpec
from relaystream.media.wire import EncodedPacket, MessageKind, WorkerEvent
from relaystream.rtc.publisher import JoinRefused, RoomConnector, RoomPublisher
from relaystream.rtc.room import TrackKind
from relaystream.tasks.control import pipeline_fields
from relaystream.tasks.model import RelayTask, StopReason

logger = logging.getLogger(__name__)

_TRACK_KIND = {MessageKind.VIDEO: TrackKind.VIDEO, MessageKind.AUDIO: TrackKind.AUDIO}


@dataclass(frozen=True)
class SourcePolicy:
    """What the operator lets a source URL reach."""

    allow_private: bool = False
    trusted_url_prefixes: tuple[str, ...] = ()


@dataclass
class RunStats:
    """Live statistics of a run, shown by GetRelayStream."""

    input: dict[str, Any] = field(default_factory=dict)
    video_frames_sent: int = 0
    audio_frames_sent: int = 0
    bytes_sent: int = 0
    first_packet_at: float | None = None
    reconnects: int = 0
    last_error: str = ""
    worker_cpu_s: float = 0.0

    def count(self, packet: EncodedPacket) -> None:
        if self.first_packet_at is None:
            self.first_packet_at = time.monotonic()
        if packet.kind is MessageKind.VIDEO:
            self.video_frames_sent += 1
        else:
            self.audio_frames_sent += 1
        self.bytes_sent += len(packet.data)

    def output_rates(self) -> tuple[float, float]:
        """(video frames/s, kbit/s) averaged since media started flowing."""
        if self.first_packet_at is None:
            return 0.0, 0.0
        elapsed_s = max(time.monotonic() - self.first_packet_at, 1e-3)
        return self.video_frames_sent / elapsed_s, self.bytes_sent * 8 / 1000 / elapsed_s


@dataclass(frozen=True)
class RunOutcome:
    reason: StopReason
    detail: str = ""


def pipeline_spec(task: RelayTask, policy: SourcePolicy) -> PipelineSpec:
    return PipelineSpec(
        **pipeline_fields(task.control),
        allow_private_sources=policy.allow_private,
        trusted_url_prefixes=policy.trusted_url_prefixes,
    )


def _track_kinds(task: RelayTask) -> frozenset[TrackKind]:
    kinds = set()
    if task.control.media_type.wants_audio:
        kinds.add(TrackKind.AUDIO)
    if task.control.media_type.wants_video:
        kinds.add(TrackKind.VIDEO)
    return frozenset(kinds)


def _to_av_packet(packet: EncodedPacket) -> av.Packet[Any]:
    out = av.Packet(packet.data)
    out.pts = packet.pts
    out.dts = packet.pts
    out.time_base = packet.time_base
    out.is_keyframe = packet.keyframe
    return out


class RelayRun:
    """Runs one task until its source ends or fails; cancellation stops it cleanly."""

    def __init__(
        self,
        task: RelayTask,
        connector: RoomConnector,
        policy: SourcePolicy,
        on_media_flowing: Callable[[], Awaitable[None]],
    ) -> None:
        self.task = task
        self.stats = RunStats()
        self._connector = connector
        self._policy = policy
        self._on_media_flowing = on_media_flowing
        self._log = {"task": str(task.key), "user": task.user_id}
        self._worker: MediaWorker | None = None

    def apply_control(self, task: RelayTask) -> None:
        """Take an Update (already persisted): ``task`` carries the new Control.

        A run still waiting for its start time uses it when it starts. Switching a
        running worker to it without leaving the room is for the run rework to fill in
        here; until then the current worker keeps the old Control.
        """
        self.task = task

    def current_stats(self) -> RunStats:
        if self._worker is not None:
            self.stats.worker_cpu_s = self._worker.cpu_seconds()
        return self.stats

    async def run(self) -> RunOutcome:
        await self._wait_for_start_time()
        try:
            publisher = await self._connector.join(
                app_id=self.task.key.app_id,
                room_id=self.task.key.room_id,
                user_id=self.task.user_id,
                token=self.task.token,
                kinds=_track_kinds(self.task),
            )
        except JoinRefused as exc:
            reason = StopReason.TOKEN_INVALID if exc.token_invalid else StopReason.SOURCE_ERROR
            return RunOutcome(reason, exc.reason)
        try:
            return await self._relay(publisher)
        finally:
            await publisher.leave()

    async def _wait_for_start_time(self) -> None:
        delay_s = self.task.control.start_timestamp_s - time.time()
        if delay_s > 0:
            logger.info("task %s scheduled in %.0f s", self._log["task"], delay_s)
            await asyncio.sleep(delay_s)

    async def _relay(self, publisher: RoomPublisher) -> RunOutcome:
        worker = self._worker = MediaWorker(
            pipeline_spec(self.task, self._policy), log_fields=self._log
        )
        try:
            await worker.start()
            async for message in worker.messages():
                if isinstance(message, EncodedPacket):
                    first = self.stats.first_packet_at is None
                    publisher.send(_TRACK_KIND[message.kind], _to_av_packet(message))
                    self.stats.count(message)
                    if first:
                        await self._on_media_flowing()
                else:
                    outcome = self._handle_event(message)
                    if outcome is not None:
                        return outcome
            return RunOutcome(StopReason.SOURCE_ERROR, "media worker ended without a reason")
        finally:
            await worker.stop()
            self._worker = None

    def _handle_event(self, event: WorkerEvent) -> RunOutcome | None:
        if event.type == "opened":
            self.stats.input = dict(event.fields.get("input", {}))
        elif event.type == "stats":
            for track, values in event.fields.get("input", {}).items():
                self.stats.input.setdefault(track, {}).update(values)
        elif event.type == "ended":
            return RunOutcome(StopReason.SOURCE_ENDED)
        elif event.type == "error":
            detail = str(event.fields.get("detail", "unknown error"))
            self.stats.last_error = detail
            logger.warning("task %s: source error: %s", self._log["task"], detail)
            return RunOutcome(StopReason.SOURCE_ERROR, detail)
        return None
