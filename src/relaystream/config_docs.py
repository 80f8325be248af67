"""``docs/config.md``, made from the config model so that it cannot drift from it.

Every key's type and default come from ``relaystream.config.Config``; what it means
comes from ``DESCRIPTIONS`` below. A key without a description is an error, and a test
compares the file with what this module makes: add a key to the model, describe it
here, and run ``make docs``.

    python -m relaystream.config_docs > docs/config.md
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from relaystream.config import Config

DESCRIPTIONS: dict[str, str] = {
    "region": "The region in every answer's `ResponseMetadata`, and the one a request's "
    "signature must be scoped to.",
    "access_keys": "API credentials (Volcengine AK/SK) and the AppIds each may act on.",
    "access_keys.id": "The AccessKeyId a client signs with.",
    "access_keys.secret": "Its SecretAccessKey.",
    "access_keys.apps": "The AppIds this key may act on; others answer "
    "`AccessDenied.NoPermissionForApp`.",
    "apps": "The applications (AppIds) this server hosts.",
    "apps.app_id": "The AppId: 24 characters.",
    "apps.app_key": "The AppKey that signs RTC tokens for this AppId.",
    "apps.callback_url": "Where state callbacks of this AppId's tasks are sent.",
    "apps.callback_secret": "The secret that signs those callbacks.",
    "apps.qps_limit": "API requests per second for this AppId; over it, "
    "`FlowLimitExceeded.QPSOverLimit`.",
    "apps.max_running_tasks": "Running tasks of this AppId on one node; unset: "
    "`[tasks] max_running_per_app`.",
    "apps.tls_verify": "Check the certificates of this AppId's https and rtmps sources "
    "(against the system CA bundle); false reads them unchecked.",
    "sources": "What a task's `StreamUrl` may reach.",
    "sources.allow_private": "Let sources reach loopback, private and link-local addresses "
    "(a test, or a source on your own network).",
    "sources.trusted_url_prefixes": "URL prefixes allowed whatever address they reach (same "
    "scheme, host and port; the path under the prefix's), e.g. a CDN on your own network.",
    "sources.hosts": 'Host names with fixed, trusted addresses (`{ name = "10.0.0.8" }`): '
    "resolved to that address and allowed whatever it is.",
    "callbacks": "Delivery of `RelayStreamStateChanged` callbacks (at least once, each "
    "task's events in order; on several nodes, one node sends an event at a time).",
    "callbacks.allow_private": "Let `callback_url` reach loopback, private and link-local "
    "addresses.",
    "callbacks.timeout_s": "One POST, the answer included.",
    "callbacks.backoff_base_s": "The first retry comes after about this long, each next one "
    "after twice as long (±20 % jitter)...",
    "callbacks.backoff_cap_s": "...up to this long.",
    "callbacks.retry_window_s": "Retries stop this long after an event's first attempt; the "
    "event is then kept as failed (operators can redeliver or discard it).",
    "callbacks.poll_interval_s": "How often the outbox is scanned for due events.",
    "callbacks.max_in_flight": "POSTs at once, all AppIds.",
    "callbacks.max_in_flight_per_app": "POSTs at once for one AppId.",
    "callbacks.delivered_retention_s": "Delivered events are kept this long, then purged.",
    "tasks": "Task lifetimes, retention and caps.",
    "tasks.lifetime_s": "A task ends with `Expired` this long after the later of its Start "
    "call and its `StartTimeStamp`.",
    "tasks.retention_s": "Ended tasks are kept this long (List and Get still show them), "
    "then purged.",
    "tasks.purge_interval_s": "How often ended tasks past their retention are purged.",
    "tasks.max_running_per_node": "Tasks holding a media worker on one node (scheduled ones "
    "do not count).",
    "tasks.max_running_per_app": "The same, per AppId, unless the app sets its own.",
    "store": "Where tasks live.",
    "store.url": "A PostgreSQL URL (`postgresql://user:password@host:5432/db`) that several "
    "nodes share; unset: SQLite in the data dir (one node).",
    "node": "This node among several sharing one PostgreSQL store.",
    "node.id": "Its name; made once and kept in the data dir (`node-id`) when unset.",
    "node.advertise_url": "The base URL other nodes send this node's viewers and "
    "publishers to (307); `http://HOST:PORT` of `serve` when unset.",
    "node.lease_s": "How long a node's hold on a task lasts without renewal; its "
    "workers stop themselves a second before it ends.",
    "node.renew_s": "How often leases are renewed (at most half of `lease_s`); a dead "
    "node's tasks move within about `lease_s + renew_s`.",
    "apps.room_server": "Where this AppId's rooms live: `embedded` (this server's SFU) or "
    "`janus` (the Janus VideoRoom of `[janus]`). `[apps.whip]` overrides both.",
    "janus": "A Janus server (VideoRoom plugin, HTTP API) hosting the rooms of apps with "
    '`room_server = "janus"`.',
    "janus.url": "Janus's HTTP API, e.g. `http://127.0.0.1:8088/janus`, as this server "
    "reaches it; relaystream creates rooms and publishes there.",
    "janus.browser_url": "The same API as viewers' browsers reach it (the room page talks "
    "to Janus directly, once the subscribe token is checked); unset: `url`. Its origin is "
    "allowed in the room page's `connect-src`; Janus must allow the page's origin (CORS: "
    "`allow_origin` in `janus.transport.http.jcfg`).",
    "apps.whip": "Publish this AppId's relays to a WHIP endpoint (another relaystream "
    "node, MediaMTX, LiveKit's WHIP ingress, a CDN) instead of the embedded SFU.",
    "apps.whip.url_template": "The endpoint's URL; `{app_id}`, `{room_id}` and `{user_id}` "
    "are replaced by the task's (percent-encoded).",
    "apps.whip.bearer_token": "Sent as `Authorization: Bearer` with the offer and the "
    "DELETE that ends the session.",
    "rtc": "The embedded SFU.",
    "rtc.ice_addresses": "Local addresses the SFU binds its ICE (media) sockets on; "
    'loopback by default, since the server listens on 127.0.0.1 unless told otherwise. "0.0.0.0" '
    "binds every address of the machine.",
    "rtc.announced_addresses": "Addresses told to viewers instead of the bound ones, e.g. the "
    "public address of a 1:1 NAT in front of the machine. Empty: the bound addresses.",
    "rtc.ice_servers": "STUN/TURN servers handed to browsers as `Link` headers of every WHEP/WHIP "
    "answer and preflight; the server itself uses none.",
    "rtc.ice_servers.urls": "`stun:`/`turn:`/`turns:` URLs of one server.",
    "rtc.ice_servers.username": "TURN user name (readable by anyone who asks the preflight).",
    "rtc.ice_servers.credential": "TURN password (readable by anyone who asks the preflight).",
    "rtc.max_offer_bytes": "Largest WHEP/WHIP SDP offer; a larger one is refused with 413 "
    "before it is read or parsed.",
    "rtc.max_offer_media": "Most m-lines in an offer (a browser sends 2 or 3); more: 400.",
    "rtc.max_offer_candidates": "Most `a=candidate` lines in an offer; more: 400.",
    "rtc.max_sessions_per_room": "Open WHEP and WHIP sessions in one room; over it: 503.",
    "rtc.max_sessions": "Open WHEP and WHIP sessions on the node; over it: 503.",
    "rtc.connect_timeout_s": "A session whose peer has not connected by then is closed.",
    "server": "The HTTP server itself.",
    "server.tls_cert": "PEM certificate (with its chain) to serve everything over HTTPS; "
    "with `tls_key`. `serve --tls-cert` overrides it.",
    "server.tls_key": "PEM private key of `tls_cert`. `serve --tls-key` overrides it.",
    "media": "What one media worker may spend; a worker past a limit ends its own task.",
    "media.worker_memory_limit_mb": "A worker whose memory passes this is killed; its task "
    "ends `SourceError` and is not relaunched.",
    "media.max_transcode_width": "A source picture wider than this is refused in transcode.",
    "media.max_transcode_height": "A source picture taller than this is refused in transcode.",
    "media.worker_start": "`fork`: workers are forked from a fork server started with the "
    "server, which has imported the media libraries once (a worker starts in a few ms and "
    "shares their memory); `spawn`: each worker is a new Python process (~0.5 s to start).",
    "metrics": "The Prometheus endpoint, `GET /metrics`.",
    "metrics.token": "When set, `/metrics` needs `Authorization: Bearer <token>`.",
}

_HEADER = """\
# Configuration

`relaystream serve --config FILE` (or `RELAYSTREAM_CONFIG=FILE`) reads a TOML file with
the keys below. Unknown keys are an error, so a typo never silently falls back to a
default. Without a config file, `serve` makes a demo account in the data dir
(`data/demo-account.toml`) on first start and uses it.
`relaystream.example.toml` is a complete example.

This file is made from the config model (`python -m relaystream.config_docs`, or
`make docs`); a test fails when the two differ.
"""


class UndescribedKey(Exception):
    """A config key has no entry in DESCRIPTIONS."""


def render() -> str:
    return "\n".join([_HEADER, _table(Config, "", "Top-level keys"), *_sections(Config, "")])


def _sections(model: type[BaseModel], prefix: str) -> list[str]:
    """A table for each section of ``model``, then for the sections inside it."""
    sections = []
    for name, field in model.model_fields.items():
        submodel, repeated = _submodel(field.annotation)
        if submodel is not None:
            key = prefix + name
            title = f"`[[{key}]]`" if repeated else f"`[{key}]`"
            sections.append(_table(submodel, f"{key}.", title, _describe(key)))
            sections.extend(_sections(submodel, f"{key}."))
    return sections


def _table(model: type[BaseModel], prefix: str, title: str, intro: str = "") -> str:
    rows = []
    for name, field in model.model_fields.items():
        if _submodel(field.annotation)[0] is not None:
            continue
        required = field.default is PydanticUndefined and field.default_factory is None
        default = "required" if required else _toml(field.get_default(call_default_factory=True))
        rows.append(
            f"| `{name}` | {_type_name(field.annotation)} | {default} | "
            f"{_describe(prefix + name)} |"
        )
    head = f"## {title}\n\n" + (f"{intro}\n\n" if intro else "")
    return head + "| key | type | default | meaning |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"


def config_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every key of the model, sections included, as ``section.key``."""
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        submodel = _submodel(field.annotation)[0]
        if submodel is not None:
            keys.extend(config_keys(submodel, f"{prefix}{name}."))
    return keys


def _describe(key: str) -> str:
    try:
        return DESCRIPTIONS[key]
    except KeyError:
        raise UndescribedKey(f"describe config key {key!r} in relaystream/config_docs.py") from None


def _submodel(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(the model a field holds, whether it holds a tuple of them)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if get_origin(annotation) in (Union, types.UnionType):  # an optional section
        models = [a for a in get_args(annotation) if a is not type(None)]
        if len(models) == 1:
            return _submodel(models[0])
    if get_origin(annotation) is tuple:
        inner = get_args(annotation)[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner, True
    return None, False


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _type_name(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        names = [_type_name(a) for a in get_args(annotation) if a is not type(None)]
        return " or ".join(names)
    if origin is tuple:
        return f"list of {_type_name(get_args(annotation)[0])}"
    simple: dict[Any, str] = {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        Path: "path",
    }
    return simple.get(annotation) or str(getattr(annotation, "__name__", annotation))


def _toml(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple | list):
        return "`[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value) + "]`"
    return f"`{value}`"


if __name__ == "__main__":
    print(render(), end="")
