"""Settings: the TOML config file, or a demo account made on first start.

See the README for every key. Unknown keys are an error, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import string
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from relaystream.media.launcher import WorkerStart
from relaystream.netpolicy import literal_address

DEMO_ACCOUNT_FILE = "demo-account.toml"
APP_ID_LENGTH = 24


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AccessKeyConfig(_Strict):
    id: Annotated[str, Field(min_length=1)]
    secret: Annotated[str, Field(min_length=1, repr=False)]
    apps: tuple[str, ...] = ()


class RoomServer(StrEnum):
    """Where an app's rooms live."""

    EMBEDDED = "embedded"
    JANUS = "janus"


class JanusConfig(_Strict):
    # Janus's HTTP API, e.g. "http://127.0.0.1:8088/janus".
    url: Annotated[str, Field(pattern=r"^https?://")]
    # The same API as viewers' browsers reach it (the room page talks to Janus directly);
    # ``url`` when unset.
    browser_url: Annotated[str | None, Field(pattern=r"^https?://")] = None

    @property
    def url_for_browsers(self) -> str:
        return self.browser_url or self.url

    @property
    def browser_origin(self) -> str:
        """``scheme://host[:port]`` of ``url_for_browsers``: what the room page may fetch."""
        parts = urlsplit(self.url_for_browsers)
        return f"{parts.scheme}://{parts.netloc}"

    @model_validator(mode="after")
    def _browser_origin_is_plain(self) -> JanusConfig:
        # It goes into the room page's Content-Security-Policy as it is; and a browser's
        # fetch refuses a URL with credentials in it.
        if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", self.browser_origin):
            raise ValueError(
                f"{self.url_for_browsers!r} has no plain scheme://host:port origin for "
                "browsers (set browser_url)"
            )
        return self


class WhipConfig(_Strict):
    """An app's relays published to a WHIP endpoint instead of the embedded SFU."""

    url_template: Annotated[str, Field(pattern=r"^https?://")]
    bearer_token: Annotated[str, Field(repr=False)] = ""


class AppConfig(_Strict):
    app_id: Annotated[str, Field(min_length=APP_ID_LENGTH, max_length=APP_ID_LENGTH)]
    app_key: Annotated[str, Field(min_length=1, repr=False)]
    callback_url: str | None = None
    callback_secret: Annotated[str | None, Field(repr=False)] = None
    qps_limit: Annotated[int, Field(gt=0)] = 150
    # Running tasks of this AppId on one node; [tasks] max_running_per_app when unset.
    max_running_tasks: Annotated[int | None, Field(gt=0)] = None
    # https and rtmps sources must present a certificate the system trusts; an app that
    # pulls from servers with self-signed certificates may turn this off.
    tls_verify: bool = True
    room_server: RoomServer = RoomServer.EMBEDDED
    whip: WhipConfig | None = None


class SourcesConfig(_Strict):
    allow_private: bool = False
    # URL prefixes allowed whatever address they reach (an internal CDN, a test origin).
    trusted_url_prefixes: tuple[str, ...] = ()
    # Host names pinned to fixed addresses, allowed even when private (split horizon).
    hosts: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _hosts_are_addresses(self) -> SourcesConfig:
        for name, address in self.hosts.items():
            if literal_address(address) is None:
                raise ValueError(f"hosts.{name}: {address!r} is not an IP address")
        return self


class MediaConfig(_Strict):
    """Limits on one media worker, so that one source cannot starve the others."""

    # The server kills a worker whose resident memory passes this; its task ends with a
    # reason that says so, and is not relaunched.
    worker_memory_limit_mb: Annotated[int, Field(ge=64)] = 1024
    # Transcoding a larger picture is refused (portrait measured like landscape).
    max_transcode_width: Annotated[int, Field(ge=16)] = 4096
    max_transcode_height: Annotated[int, Field(ge=16)] = 2160
    # Forked from a pre-imported fork server (fast, shares library pages), or spawned.
    worker_start: WorkerStart = WorkerStart.FORK


class CallbacksConfig(_Strict):
    allow_private: bool = False  # lets callback_url reach loopback/private addresses
    timeout_s: Annotated[float, Field(gt=0)] = 5.0  # one POST, answer included
    # Retries back off from backoff_base_s, doubling up to backoff_cap_s, for
    # retry_window_s after the event; then it is kept as failed.
    backoff_base_s: Annotated[float, Field(gt=0)] = 1.0
    backoff_cap_s: Annotated[float, Field(gt=0)] = 300.0
    retry_window_s: Annotated[float, Field(gt=0)] = 3600.0
    poll_interval_s: Annotated[float, Field(gt=0)] = 1.0
    max_in_flight: Annotated[int, Field(gt=0)] = 32
    max_in_flight_per_app: Annotated[int, Field(gt=0)] = 4
    # Delivered events are kept this long (operators can look them up), then purged.
    delivered_retention_s: Annotated[float, Field(gt=0)] = 24 * 3600


class TasksConfig(_Strict):
    lifetime_s: Annotated[int, Field(gt=0)] = 72 * 3600
    # Ended tasks are kept this long (List and Get still show them), then purged.
    retention_s: Annotated[float, Field(gt=0)] = 7 * 24 * 3600
    purge_interval_s: Annotated[float, Field(gt=0)] = 3600
    # Tasks holding a media worker (scheduled ones do not count), on one node.
    max_running_per_node: Annotated[int, Field(gt=0)] = 64
    max_running_per_app: Annotated[int, Field(gt=0)] = 64


class IceServerConfig(_Strict):
    """A STUN or TURN server handed to browsers (never used by the server itself)."""

    urls: Annotated[tuple[str, ...], Field(min_length=1)]
    username: str | None = None
    credential: Annotated[str | None, Field(repr=False)] = None


class StoreConfig(_Strict):
    # Where tasks live: SQLite in the data dir when unset, or a PostgreSQL URL
    # ("postgresql://user:password@host:5432/db") that several nodes share.
    url: Annotated[str | None, Field(repr=False, pattern=r"^postgres(ql)?://")] = None


class NodeConfig(_Strict):
    # This node's name among those sharing the store; made once and kept in the data
    # dir when unset.
    id: Annotated[str | None, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")] = (
        None
    )
    # The base URL other nodes redirect viewers to; http://HOST:PORT of serve when unset.
    advertise_url: Annotated[str | None, Field(pattern=r"^https?://")] = None
    # A task's lease, and how often it is renewed (a dead node's tasks move within
    # about lease_s + renew_s).
    lease_s: Annotated[float, Field(gt=0)] = 6.0
    renew_s: Annotated[float, Field(gt=0)] = 2.0

    @model_validator(mode="after")
    def _renewed_in_time(self) -> NodeConfig:
        if self.renew_s * 2 > self.lease_s:
            raise ValueError("renew_s must be at most half of lease_s")
        return self


class RtcConfig(_Strict):
    # Local addresses the SFU binds its ICE host candidates on; loopback by default,
    # since the server listens on 127.0.0.1 unless told otherwise. "0.0.0.0" binds all.
    ice_addresses: tuple[str, ...] = ("127.0.0.1",)
    # What viewers are told instead of the bound addresses: a 1:1 NAT's public address.
    announced_addresses: tuple[str, ...] = ()
    ice_servers: tuple[IceServerConfig, ...] = ()
    # Bounds on an SDP offer, checked before it is parsed.
    max_offer_bytes: Annotated[int, Field(gt=0)] = 32 * 1024
    max_offer_media: Annotated[int, Field(gt=0)] = 8
    max_offer_candidates: Annotated[int, Field(ge=0)] = 64
    # Open WHEP/WHIP sessions; over either cap a new one is refused with 503.
    max_sessions_per_room: Annotated[int, Field(gt=0)] = 100
    max_sessions: Annotated[int, Field(gt=0)] = 500
    # A session not connected by then is closed.
    connect_timeout_s: Annotated[float, Field(gt=0)] = 30.0

    @model_validator(mode="after")
    def _addresses_are_ip_literals(self) -> RtcConfig:
        for key in ("ice_addresses", "announced_addresses"):
            for address in getattr(self, key):
                try:
                    ipaddress.ip_address(address)
                except ValueError:
                    raise ValueError(f"{key}: {address!r} is not an IP address") from None
        return self


class ServerConfig(_Strict):
    # HTTPS for everything the server answers (API, WHEP/WHIP, pages): PEM files.
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> ServerConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self


class MetricsConfig(_Strict):
    # When set, GET /metrics needs "Authorization: Bearer <token>".
    token: Annotated[str | None, Field(min_length=1, repr=False)] = None


class Config(_Strict):
    region: str = "cn-north-1"
    access_keys: tuple[AccessKeyConfig, ...] = ()
    apps: tuple[AppConfig, ...] = ()
    sources: SourcesConfig = SourcesConfig()
    tasks: TasksConfig = TasksConfig()
    callbacks: CallbacksConfig = CallbacksConfig()
    store: StoreConfig = StoreConfig()
    node: NodeConfig = NodeConfig()
    rtc: RtcConfig = RtcConfig()
    media: MediaConfig = MediaConfig()
    metrics: MetricsConfig = MetricsConfig()
    server: ServerConfig = ServerConfig()
    janus: JanusConfig | None = None

    @model_validator(mode="after")
    def _apps_exist(self) -> Config:
        known = {app.app_id for app in self.apps}
        for key in self.access_keys:
            for app_id in key.apps:
                if app_id not in known:
                    raise ValueError(f"access key {key.id!r} names app {app_id!r}, not in [[apps]]")
        for app in self.apps:
            if app.room_server is RoomServer.JANUS and self.janus is None:
                raise ValueError(f'app {app.app_id!r} has room_server = "janus" but no [janus]')
            if app.room_server is RoomServer.JANUS and app.whip is not None:
                raise ValueError(f'app {app.app_id!r}: room_server = "janus" and [apps.whip]')
        return self

    def secret_for(self, access_key_id: str) -> str | None:
        for key in self.access_keys:
            if key.id == access_key_id:
                return key.secret
        return None

    def apps_of(self, access_key_id: str) -> tuple[str, ...]:
        for key in self.access_keys:
            if key.id == access_key_id:
                return key.apps
        return ()

    def app(self, app_id: str) -> AppConfig | None:
        for app in self.apps:
            if app.app_id == app_id:
                return app
        return None

    def app_key_for(self, app_id: str) -> str | None:
        app = self.app(app_id)
        return app.app_key if app else None

    def has_callbacks(self, app_id: str) -> bool:
        app = self.app(app_id)
        return app is not None and bool(app.callback_url)

    def max_running_for(self, app_id: str) -> int:
        app = self.app(app_id)
        if app is not None and app.max_running_tasks is not None:
            return app.max_running_tasks
        return self.tasks.max_running_per_app


def parse_config(data: dict[str, Any], origin: str) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{origin}: {problems}") from None


def load_config(path: Path) -> Config:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, str(path))


def _random_token(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def demo_config(data_dir: Path) -> tuple[Config, bool]:
    """The demo account kept in the data dir, made on first use; (config, created)."""
    path = data_dir / DEMO_ACCOUNT_FILE
    if path.exists():
        return load_config(path), False
    hex_digits = string.digits + "abcdef"
    app_id = _random_token(hex_digits, APP_ID_LENGTH)
    text = (
        "# Demo account made by `relaystream serve` on first start. Keep it private.\n"
        'region = "cn-north-1"\n\n'
        "[[access_keys]]\n"
        f'id = "AKLT{_random_token(string.ascii_letters + string.digits, 28)}"\n'
        f'secret = "{secrets.token_urlsafe(30)}"\n'
        f'apps = ["{app_id}"]\n\n'
        "[[apps]]\n"
        f'app_id = "{app_id}"\n'
        f'app_key = "{secrets.token_hex(16)}"\n'
        "# State callbacks: uncomment to receive RelayStreamStateChanged events.\n"
        '# callback_url = "http://127.0.0.1:9000/relay-events"\n'
        f'# callback_secret = "{secrets.token_urlsafe(18)}"\n\n'
        "[callbacks]\n"
        "# The demo's callback receiver runs on this machine.\n"
        "allow_private = true\n"
    )
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(text)
    except OSError as exc:
        raise ConfigError(f"cannot write the demo account {path}: {exc.strerror}") from None
    return load_config(path), True
