"""The run of one relay task for its whole life.

A run waits for the task's start time, joins the room once as the task's virtual user,
and keeps that publication until the task ends. Media workers come and go underneath
it — a source that drops is reconnected with backoff, a crashed worker is relaunched,
an Update switches to a new worker — and a RoomTimeline keeps the room's timestamps
rising across them, so viewers stay connected and see at most a pause.

The run's own timers decide when it ends: idle (no media reached the room for
MaxIdleTime, however that happened) and lifetime (from the later of the Start call and
StartTimeStamp). The supervisor learns of visible changes through RunHooks and
persists them; the run itself stores nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import av

from relaystream.media.events import (
    CommandName,
    SourceEnded,
    SourceFailed,
    SourceOpened,
    SourceProgress,
    WorkerCommand,
    lease_command,
)
from relaystream.media.launcher import SpawnLauncher, WorkerLauncher
from relaystream.media.process import MediaWorker, WorkerCrashed
from relaystream.media.spec import PipelineSpec
from relaystream.media.wire import EncodedPacket, MessageKind
from relaystream.rtc.publisher import JoinRefused, JoinRequest, RoomConnector, RoomPublisher
from relaystream.rtc.room import TrackKind
from relaystream.tasks.control import pipeline_fields
from relaystream.tasks.model import RelayTask, StopReason
from relaystream.tasks.room_link import RoomLink
from relaystream.tasks.timeline import RoomTimeline

logger = logging.getLogger(__name__)

_TRACK_KIND = {MessageKind.VIDEO: TrackKind.VIDEO, MessageKind.AUDIO: TrackKind.AUDIO}


@dataclass(frozen=True)
class SourcePolicy:
    """What the operator lets a source URL reach, and what a worker may spend on it."""

    allow_private: bool = False
    trusted_url_prefixes: tuple[str, ...] = ()
    hosts: dict[str, str] = field(default_factory=dict)
    # Apps whose https/rtmps sources are read without checking certificates.
    tls_unverified_apps: frozenset[str] = frozenset()
    max_transcode_width: int = 4096
    max_transcode_height: int = 2160
    worker_memory_limit_mb: int | None = 1024


@dataclass(frozen=True)
class RunSettings:
    """Timings of a run (tests shorten them instead of sleeping for minutes), and how
    its workers are started."""

    lifetime_s: float = 72 * 3600
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 10.0
    # Relaunches of a worker that crashed before any media flowed, before giving up.
    max_crash_relaunches: int = 3
    position_save_interval_s: float = 2.0
    timer_tick_s: float = 0.25
    launcher: WorkerLauncher = field(default_factory=SpawnLauncher)


class RunHooks(Protocol):
    """What a run tells its supervisor, which persists it before it is acted on."""

    async def media_flowing(self) -> None:
        """Media reaches the room (first time, or again after a reconnect)."""

    async def reconnecting(self, detail: str) -> None:
        """The source is lost and being reconnected; media has stopped."""

    async def position(self, position_s: float) -> None:
        """Where a VOD has got to, so a restarted run resumes near it."""


@dataclass
class RunStats:
    """Live statistics of a run, shown by GetRelayStream."""

    opened: SourceOpened | None = None
    progress: SourceProgress | None = None
    video_frames_sent: int = 0
    audio_frames_sent: int = 0
    bytes_sent: int = 0
    first_packet_at: float | None = None
    reconnects: int = 0
    last_error: str = ""
    worker_cpu_s: float = 0.0
    worker_memory_bytes: int = 0
    # Where the task publishes ("embedded", or the external SFU's URL) and whether that
    # link is up now.
    room_target: str = ""
    room_link_healthy: bool = False

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


def pipeline_spec(
    task: RelayTask, policy: SourcePolicy, start_position_s: float = 0.0
) -> PipelineSpec:
    return PipelineSpec(
        **pipeline_fields(task.control),
        allow_private_sources=policy.allow_private,
        trusted_url_prefixes=policy.trusted_url_prefixes,
        hosts=policy.hosts,
        tls_verify=task.key.app_id not in policy.tls_unverified_apps,
        max_transcode_width=policy.max_transcode_width,
        max_transcode_height=policy.max_transcode_height,
        memory_limit_mb=policy.worker_memory_limit_mb,
        start_position_s=start_position_s,
    )


def _sent_kinds(task: RelayTask) -> frozenset[TrackKind]:
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
    """Runs one task until it ends; cancellation stops it cleanly (worker gone, room left)."""

    def __init__(
        self,
        task: RelayTask,
        connector: RoomConnector,
        policy: SourcePolicy,
        hooks: RunHooks,
        settings: RunSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.task = task
        self.stats = RunStats()
        self._connector = connector
        self._policy = policy
        self._hooks = hooks
        self._settings = settings or RunSettings()
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._timeline = RoomTimeline(clock)
        self._log = {"task": str(task.key), "user": task.user_id}
        self._worker: MediaWorker | None = None
        self._link: RoomLink | None = None
        self._switching = False
        self._flowing = False
        self._last_media_at = clock()
        self._saved_position_at = clock()
        self._position_s = task.resume_position_s
        # Unix time after which this node may no longer run the task (its lease, less a
        # margin); None when no lease applies. Workers are told it and stop at it.
        self._lease_deadline_s: float | None = None

    @property
    def lifetime_deadline(self) -> float:
        """Unix time at which the task expires; fixed by what was persisted at Start."""
        started_s = max(self.task.create_time_ms / 1000, self.task.control.start_timestamp_s)
        return started_s + self._settings.lifetime_s

    @property
    def flowing(self) -> bool:
        """Media is reaching the room now (the task shows status 2)."""
        return self._flowing

    def current_stats(self) -> RunStats:
        if self._worker is not None:
            self.stats.worker_cpu_s = self._worker.cpu_seconds()
            self.stats.worker_memory_bytes = self._worker.memory_bytes()
        if self._link is not None:
            self.stats.room_target = self._link.target
            self.stats.room_link_healthy = self._link.healthy
        return self.stats

    @property
    def lease_lapsed(self) -> bool:
        """The lease deadline the run was last given has passed."""
        return self._lease_deadline_s is not None and self._wall_clock() >= self._lease_deadline_s

    def extend_lease(self, deadline_s: float) -> None:
        """The node renewed the task's lease: the worker may run until ``deadline_s``."""
        self._lease_deadline_s = deadline_s
        if self._worker is not None:
            self._worker.send(lease_command(deadline_s))

    def apply_control(self, task: RelayTask) -> None:
        """Relay ``task``'s (updated, already persisted) Control from now on: a new
        worker replaces the current one while the publication stays in the room. A run
        still waiting for its start time simply starts with it."""
        self.task = task
        worker = self._worker
        if worker is not None:
            self._switching = True
            worker.retire()

    async def run(self) -> RunOutcome:
        if not await self._wait_for_start_time():
            return RunOutcome(StopReason.EXPIRED, "the task's lifetime ended before it started")
        try:
            publisher = await self._join(check_expiry=self.task.start_time_ms == 0)
        except JoinRefused as exc:
            reason = StopReason.TOKEN_INVALID if exc.token_invalid else StopReason.SOURCE_ERROR
            return RunOutcome(reason, exc.reason)
        link = self._link = RoomLink(
            publisher,
            # A rejoin after a lost link is no new admission: the token's expiry stays
            # unchecked, as after a restart.
            lambda: self._join(check_expiry=False),
            sleep=self._sleep,
            backoff_initial_s=self._settings.reconnect_initial_s,
            backoff_max_s=self._settings.reconnect_max_s,
        )
        # A viewer's PLI/FIR (rate limited by the room) asks the current worker for a
        # keyframe; a remux worker cannot make one and ignores it.
        link.on_keyframe_request(self._request_keyframe)
        try:
            return await self._race(
                self._relay(link), self._watch_timers(), self._watch_room_link(link)
            )
        finally:
            await link.leave()

    async def _join(self, *, check_expiry: bool) -> RoomPublisher:
        request = JoinRequest(
            app_id=self.task.key.app_id,
            room_id=self.task.key.room_id,
            user_id=self.task.user_id,
            token=self.task.token,
            sends=_sent_kinds(self.task),
            # Admitted once (at Start, or at its scheduled start): a rejoin after a
            # restart must not fail because the token has expired since.
            check_expiry=check_expiry,
        )
        return await self._connector.join(request)

    async def _watch_room_link(self, link: RoomLink) -> RunOutcome:
        """Ends the run only when the room refuses to take the task back."""

        async def lost(detail: str) -> None:
            self.stats.last_error = detail
            if self._flowing:
                self._flowing = False
                await self._hooks.reconnecting(detail)

        refused = await link.keep_joined(lost)
        return RunOutcome(StopReason.TOKEN_INVALID, refused.reason)

    def _request_keyframe(self) -> None:
        if self._worker is not None:
            self._worker.send(WorkerCommand(CommandName.KEYFRAME))

    async def _wait_for_start_time(self) -> bool:
        """Sleep until StartTimeStamp; False if the lifetime ends first."""
        delay_s = self.task.control.start_timestamp_s - self._wall_clock()
        if delay_s > 0:
            logger.info("task %s scheduled in %.0f s", self._log["task"], delay_s)
            await self._sleep(delay_s)
        self._last_media_at = self._clock()
        return self._wall_clock() < self.lifetime_deadline

    async def _race(self, *runs: Awaitable[RunOutcome]) -> RunOutcome:
        """The outcome of whichever finishes first; the others are cancelled."""
        tasks = [asyncio.ensure_future(run) for run in runs]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            return next(iter(done)).result()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _watch_timers(self) -> RunOutcome:
        max_idle_s = self.task.max_idle_s
        while True:
            if self._wall_clock() >= self.lifetime_deadline:
                return RunOutcome(StopReason.EXPIRED)
            idle_s = self._clock() - self._last_media_at
            if idle_s >= max_idle_s:
                detail = f"no media for {max_idle_s} s"
                if self.stats.last_error:
                    detail += f"; last error: {self.stats.last_error}"
                return RunOutcome(StopReason.IDLE_TIMEOUT, detail)
            await self._sleep(self._settings.timer_tick_s)

    async def _relay(self, publisher: RoomLink) -> RunOutcome:
        """Run workers one after another until one ends the task."""
        settings = self._settings
        backoff_s = settings.reconnect_initial_s
        crashes = 0
        while True:
            final, flowed = await self._run_one_worker(publisher)
            if self._switching:  # an Update: the next worker takes over at once
                self._switching = False
                continue
            if isinstance(final, SourceEnded):
                return RunOutcome(StopReason.SOURCE_ENDED)
            if isinstance(final, SourceFailed) and not final.retryable:
                self.stats.last_error = final.detail
                return RunOutcome(StopReason.SOURCE_ERROR, final.detail)
            if flowed:
                backoff_s, crashes = settings.reconnect_initial_s, 0
            if isinstance(final, WorkerCrashed):
                crashes += 1
                if crashes > settings.max_crash_relaunches:
                    return RunOutcome(StopReason.SOURCE_ERROR, final.detail)
            self.stats.last_error = final.detail
            logger.warning("task %s: reconnecting: %s", self._log["task"], final.detail)
            if self._flowing:
                self._flowing = False
                await self._hooks.reconnecting(final.detail)
            await self._sleep(backoff_s)
            backoff_s = min(backoff_s * 2, settings.reconnect_max_s)

    async def _run_one_worker(
        self, publisher: RoomLink
    ) -> tuple[SourceEnded | SourceFailed | WorkerCrashed, bool]:
        """Run a worker to its end: (its final message, whether media flowed)."""
        live = self.stats.opened is not None and self.stats.opened.live
        spec = pipeline_spec(self.task, self._policy, 0.0 if live else self._position_s)
        lease_s = self._lease_deadline_s
        if lease_s is not None and self._wall_clock() >= lease_s:
            # Frozen past the lease: another node may run the task now; no new worker.
            return WorkerCrashed("the task's lease expired"), False
        worker = self._worker = MediaWorker(
            spec, log_fields=self._log, launcher=self._settings.launcher
        )
        self._timeline.new_worker()
        flowed = False
        try:
            await worker.start()
            if lease_s is not None:
                worker.send(lease_command(lease_s))
            async for message in worker.messages():
                if isinstance(message, EncodedPacket):
                    if await self._forward(publisher, message):
                        flowed = True
                elif isinstance(message, SourceEnded | SourceFailed | WorkerCrashed):
                    return message, flowed
                else:
                    await self._note(message)
            return WorkerCrashed("media worker stopped"), flowed
        finally:
            self._worker = None
            await worker.stop()

    async def _forward(self, publisher: RoomLink, packet: EncodedPacket) -> bool:
        rebased = self._timeline.rebase(packet)
        if rebased is None:
            return False
        publisher.send(_TRACK_KIND[rebased.kind], _to_av_packet(rebased))
        self.stats.count(rebased)
        self._last_media_at = self._clock()
        if not self._flowing:
            self._flowing = True
            if self.stats.last_error:
                self.stats.reconnects += 1
            await self._hooks.media_flowing()
        return True

    async def _note(self, event: SourceOpened | SourceProgress) -> None:
        if isinstance(event, SourceOpened):
            self.stats.opened = event
            return
        self.stats.progress = event
        self._position_s = event.position_s
        now = self._clock()
        if now - self._saved_position_at >= self._settings.position_save_interval_s:
            self._saved_position_at = now
            await self._hooks.position(event.position_s)
