"""Assembles one relaystream node: store, rooms, supervisor, API, WHEP/WHIP, pages, demo."""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from relaystream.api.access_log import RedactingAccessLogger
from relaystream.api.actions import Actions
from relaystream.api.app import OpenApiEndpoint
from relaystream.api.parser_errors import answer_parser_errors_with_envelopes
from relaystream.callbacks.delivery import CallbackDelivery, CallbackTarget, DeliverySettings
from relaystream.callbacks.operators import CallbackDeliveries
from relaystream.callbacks.outbox import CallbackOutbox
from relaystream.callbacks.sender import HttpCallbackSender
from relaystream.config import Config, RoomServer, RtcConfig
from relaystream.logs import log_event
from relaystream.media.launcher import worker_launcher
from relaystream.media.source import ALLOW_PRIVATE_SETTING
from relaystream.media.testsrc import ClipSpec, make_test_clip
from relaystream.metrics import MetricsEndpoint, TaskSample
from relaystream.netpolicy import AddressPolicy
from relaystream.rtc.ice import IceAddresses
from relaystream.rtc.ice_servers import IceServer
from relaystream.rtc.janus import JanusRoomConnector
from relaystream.rtc.offer_bounds import OfferBounds
from relaystream.rtc.publisher import EmbeddedRoomConnector, PerAppRoomConnector, RoomConnector
from relaystream.rtc.room import RoomRegistry
from relaystream.rtc.session_caps import SessionCaps, SessionLimits
from relaystream.rtc.signaling import SignalingSettings, cors
from relaystream.rtc.whep import WhepEndpoint
from relaystream.rtc.whip import WhipEndpoint
from relaystream.rtc.whip_publisher import WhipRoomConnector, WhipTarget
from relaystream.startup import node_id, open_task_store, prepare_data_dir
from relaystream.store import TaskStore
from relaystream.tasks.limits import RunningSlots
from relaystream.tasks.node import NodeSettings
from relaystream.tasks.retention import RetentionJob
from relaystream.tasks.runner import RunSettings, SourcePolicy
from relaystream.tasks.service import TaskService
from relaystream.tasks.supervisor import TaskSupervisor
from relaystream.web.pages import WebPages
from relaystream.web.room_access import RoomAccessEndpoint
from relaystream.web.room_events import RoomEventStreams

logger = logging.getLogger(__name__)

DEMO_CLIP_NAME = "testsrc.flv"
DEMO_CLIP = ClipSpec(duration_s=30.0, frame_rate=25, keyframe_interval_s=2.0)


@dataclass(frozen=True)
class ServerSettings:
    config: Config
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    tls: bool = False

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def demo_url_prefix(self) -> str:
        return f"{self.base_url}/demo/"


def ensure_demo_clip(data_dir: Path) -> Path:
    """The built-in test stream, made once into the data dir."""
    demo_dir = data_dir / "demo"
    clip = demo_dir / DEMO_CLIP_NAME
    if not clip.exists():
        demo_dir.mkdir(parents=True, exist_ok=True)
        partial = demo_dir / f"partial-{DEMO_CLIP_NAME}"
        make_test_clip(partial, DEMO_CLIP)
        partial.rename(clip)
    return clip


def signaling_settings(rtc: RtcConfig) -> SignalingSettings:
    return SignalingSettings(
        offer_bounds=OfferBounds(
            max_bytes=rtc.max_offer_bytes,
            max_media=rtc.max_offer_media,
            max_candidates=rtc.max_offer_candidates,
        ),
        session_limits=SessionLimits(per_room=rtc.max_sessions_per_room, per_node=rtc.max_sessions),
        connect_timeout_s=rtc.connect_timeout_s,
        ice_addresses=IceAddresses(local=rtc.ice_addresses, announced=rtc.announced_addresses),
        ice_servers=tuple(
            IceServer(urls=s.urls, username=s.username, credential=s.credential)
            for s in rtc.ice_servers
        ),
    )


def callback_delivery(
    config: Config, store: TaskStore, outbox: CallbackOutbox
) -> tuple[CallbackDelivery, HttpCallbackSender]:
    """The delivery worker of the configured callbacks, and the sender it owns."""
    settings = config.callbacks
    sender = HttpCallbackSender(
        allow_private=settings.allow_private,
        timeout_s=settings.timeout_s,
        threads=settings.max_in_flight,
    )

    def target(app_id: str) -> CallbackTarget | None:
        app = config.app(app_id)
        if app is None or not app.callback_url:
            return None
        return CallbackTarget(app.callback_url, app.callback_secret or "")

    delivery = CallbackDelivery(
        store,
        outbox,
        sender,
        target,
        DeliverySettings(
            timeout_s=settings.timeout_s,
            backoff_base_s=settings.backoff_base_s,
            backoff_cap_s=settings.backoff_cap_s,
            retry_window_s=settings.retry_window_s,
            poll_interval_s=settings.poll_interval_s,
            max_in_flight=settings.max_in_flight,
            max_in_flight_per_app=settings.max_in_flight_per_app,
        ),
    )
    return delivery, sender


async def build_app(settings: ServerSettings) -> web.Application:
    config = settings.config
    prepare_data_dir(settings.data_dir)
    store = await open_task_store(settings.data_dir, config.store.url)
    rooms = RoomRegistry()
    policy = SourcePolicy(
        allow_private=config.sources.allow_private,
        trusted_url_prefixes=(settings.demo_url_prefix, *config.sources.trusted_url_prefixes),
        hosts=dict(config.sources.hosts),
        tls_unverified_apps=frozenset(app.app_id for app in config.apps if not app.tls_verify),
        max_transcode_width=config.media.max_transcode_width,
        max_transcode_height=config.media.max_transcode_height,
        worker_memory_limit_mb=config.media.worker_memory_limit_mb,
    )
    # The API's instant check of a StreamUrl literal (workers resolve host names).
    stream_urls = AddressPolicy(
        allow_private=policy.allow_private,
        trusted_prefixes=policy.trusted_url_prefixes,
        setting_name=ALLOW_PRIVATE_SETTING,
    )
    slots = RunningSlots(per_node=config.tasks.max_running_per_node, per_app=config.max_running_for)
    outbox = CallbackOutbox(config.has_callbacks)
    janus_rooms = janus_connectors(config)
    # One fork server (or none) per server, shared by every task's workers.
    launcher = worker_launcher(config.media.worker_start)
    supervisor = TaskSupervisor(
        store,
        room_connector(config, rooms, janus_rooms),
        policy,
        slots,
        RunSettings(lifetime_s=config.tasks.lifetime_s, launcher=launcher),
        outbox,
        NodeSettings(
            node_id=config.node.id or node_id(settings.data_dir),
            advertise_url=config.node.advertise_url or settings.base_url,
            lease_s=config.node.lease_s,
            renew_s=config.node.renew_s,
        ),
    )
    delivery, sender = callback_delivery(config, store, outbox)
    retention = RetentionJob(
        store,
        retention_s=config.tasks.retention_s,
        interval_s=config.tasks.purge_interval_s,
        delivered_callbacks_s=config.callbacks.delivered_retention_s,
    )
    background: list[asyncio.Task[None]] = []
    tasks = TaskService(supervisor, config.app_key_for, rooms.viewer_count)
    signaling = signaling_settings(config.rtc)
    # One count for both endpoints: the node's cap is on every session it holds.
    session_caps = SessionCaps(signaling.session_limits)
    whep = WhepEndpoint(
        rooms,
        config.app_key_for,
        signaling,
        session_caps,
        owner_url=supervisor.owner_url,
        janus_hosted=janus_rooms.__contains__,
    )

    async def is_task_user(app_id: str, room_id: str, user_id: str) -> bool:
        return any(
            (task.key.app_id, task.key.room_id, task.user_id) == (app_id, room_id, user_id)
            for task in await supervisor.active_tasks()
        )

    whip = WhipEndpoint(
        rooms,
        config.app_key_for,
        reserved_user=is_task_user,
        settings=signaling,
        caps=session_caps,
        room_owner=supervisor.room_owner_url,
    )
    room_events = RoomEventStreams(rooms, config.app_key_for, room_owner=supervisor.room_owner_url)
    room_access = RoomAccessEndpoint(config.app_key_for, janus_rooms.get)
    pages = WebPages(
        region=config.region,
        demo_stream_url=settings.demo_url_prefix + DEMO_CLIP_NAME,
        room_owner=supervisor.room_owner_url,
        janus_origin=config.janus.browser_origin if config.janus else None,
    )
    ready = asyncio.Event()

    # Made on first start in the background: the service is ready at once, and the
    # first relay of the demo waits for the clip (a few seconds) instead.
    demo_clip_made = asyncio.ensure_future(asyncio.to_thread(ensure_demo_clip, settings.data_dir))

    async def demo_clip(_: web.Request) -> web.FileResponse:
        return web.FileResponse(await asyncio.shield(demo_clip_made))

    async def healthz(_: web.Request) -> web.Response:
        if not ready.is_set():
            return web.json_response({"status": "starting"}, status=503)
        node = supervisor.node
        return web.json_response(
            {
                "status": "ok",
                "node": node.node_id,
                "advertise_url": node.advertise_url,
                "lease_until_ms": supervisor.lease_until_ms,
                "tasks": len(supervisor.runs()),
            }
        )

    answer_parser_errors_with_envelopes(config.region)
    actions = Actions(
        config,
        tasks,
        stream_urls,
        CallbackDeliveries(store, outbox),
        lambda: supervisor.live_nodes,
    )
    metrics = MetricsEndpoint(
        lambda: task_samples(supervisor, rooms),
        token=config.metrics.token,
        api_actions=actions.table(),
    )
    app = web.Application(
        client_max_size=1 << 20,
        middlewares=[metrics.time_api, cors],
        handler_args={"access_log_class": RedactingAccessLogger},
    )
    app.add_routes(OpenApiEndpoint(config, actions).routes())
    app.add_routes(metrics.routes())
    app.add_routes(whep.routes())
    app.add_routes(whip.routes())
    app.add_routes(room_events.routes())
    app.add_routes(room_access.routes())
    app.add_routes(pages.routes())
    app.add_routes([web.get("/healthz", healthz)])
    app.add_routes([web.get(f"/demo/{DEMO_CLIP_NAME}", demo_clip)])

    async def on_startup(_: web.Application) -> None:
        await supervisor.resume()
        background.append(asyncio.create_task(retention.run_forever(), name="retention"))
        # The fork server imports in the background; a worker wanted sooner waits for it.
        background.append(asyncio.create_task(launcher.prepare(), name="worker-launcher"))
        # Events left undelivered by the last process (even a SIGKILLed one) go now.
        background.append(asyncio.create_task(delivery.run_forever(), name="callbacks"))
        # What exists now (modules, the app, resumed tasks) lives as long as the server:
        # keep it out of every full collection, whose pause would otherwise grow with it
        # and land on whichever request is being answered.
        gc.collect()
        gc.freeze()
        ready.set()

    async def on_shutdown(_: web.Application) -> None:
        room_events.close_all()

    async def on_cleanup(_: web.Application) -> None:
        active = len(supervisor.runs())
        log_event(logger, "shutting down", active_tasks=active, resume="on the next start")
        for job in background:
            job.cancel()
        # The workers first: they are what a SIGTERM is waiting for. The demo clip is not
        # waited for at all: its thread cannot be cancelled, took seconds on a busy first
        # start, and writes the clip aside, renaming it only once whole.
        await supervisor.shutdown()
        await asyncio.gather(*background, return_exceptions=True)
        await launcher.close()
        sender.close()
        await whip.close_all()
        await whep.close_all()
        await store.close()
        log_event(logger, "stopped")

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


def janus_connectors(config: Config) -> dict[str, JanusRoomConnector]:
    """The connector of each app whose rooms live on Janus, by AppId."""
    janus = config.janus
    if janus is None:
        return {}
    connector = JanusRoomConnector(
        janus.url,
        config.app_key_for,
        IceAddresses(local=config.rtc.ice_addresses),
        browser_url=janus.url_for_browsers,
    )
    return {app.app_id: connector for app in config.apps if app.room_server is RoomServer.JANUS}


def room_connector(
    config: Config, rooms: RoomRegistry, janus_rooms: dict[str, JanusRoomConnector]
) -> RoomConnector:
    """Each app's room server: the embedded SFU unless its config names another."""
    ice = IceAddresses(local=config.rtc.ice_addresses)
    per_app: dict[str, RoomConnector] = dict(janus_rooms)
    for app in config.apps:
        if app.whip is not None:
            target = WhipTarget(app.whip.url_template, app.whip.bearer_token)
            per_app[app.app_id] = WhipRoomConnector(target, config.app_key_for, ice)
    return PerAppRoomConnector(EmbeddedRoomConnector(rooms, config.app_key_for), per_app)


def task_samples(supervisor: TaskSupervisor, rooms: RoomRegistry) -> list[TaskSample]:
    """What /metrics shows of each active task, read from its run and its room."""
    samples = []
    for run in supervisor.runs():
        key, stats = run.task.key, run.current_stats()
        progress = stats.progress
        frames_in: dict[str, int] = {}
        bytes_in: dict[str, int] = {}
        if progress is not None:
            for track, counters in (("video", progress.video), ("audio", progress.audio)):
                if counters is not None:
                    frames_in[track] = counters.packets
                    bytes_in[track] = counters.bytes
        samples.append(
            TaskSample(
                app_id=key.app_id,
                room_id=key.room_id,
                task_id=key.task_id,
                running=run.flowing,
                frames_in=frames_in,
                bytes_in=bytes_in,
                frames_out={"video": stats.video_frames_sent, "audio": stats.audio_frames_sent},
                bytes_out=stats.bytes_sent,
                viewers=rooms.viewer_count(key.app_id, key.room_id, run.task.user_id),
                worker_cpu_s=stats.worker_cpu_s,
                worker_memory_bytes=stats.worker_memory_bytes,
            )
        )
    return samples
