"""The ``relaystream`` command: serve, make tokens, call the API."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from relaystream.client import RelayStreamClient, RelayStreamError
from relaystream.config import Config, ConfigError, demo_config, load_config
from relaystream.rtc.token import Privilege, generate_token
from relaystream.server import DEMO_CLIP_NAME, ServerSettings, build_app
from relaystream.startup import StartupError

_PRIVILEGES = {
    "publish": Privilege.PUBLISH_STREAM,
    "publish-audio": Privilege.PUBLISH_AUDIO,
    "publish-video": Privilege.PUBLISH_VIDEO,
    "publish-data": Privilege.PUBLISH_DATA,
    "subscribe": Privilege.SUBSCRIBE_STREAM,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relaystream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--config", type=Path, default=os.environ.get("RELAYSTREAM_CONFIG"))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--data-dir", type=Path, default=Path("data"))
    serve.add_argument("--log-level", default="INFO")

    token = commands.add_parser("token", help="print an RTC AccessToken")
    token.add_argument("--app-id", required=True)
    token.add_argument("--app-key", required=True)
    token.add_argument("--room", required=True)
    token.add_argument("--user", required=True)
    token.add_argument(
        "--privilege",
        action="append",
        choices=sorted(_PRIVILEGES),
        help="repeatable; default: publish and subscribe",
    )
    token.add_argument("--expire-s", type=int, default=0, help="lifetime; 0 = never expires")

    api = commands.add_parser(
        "api",
        help="call an action, e.g. `relaystream api StartRelayStream '{...}'`",
        description="Credentials come from RELAYSTREAM_AK / RELAYSTREAM_SK; the endpoint "
        "from RELAYSTREAM_ENDPOINT (default http://127.0.0.1:8080).",
    )
    api.add_argument("action")
    api.add_argument("body", help="the JSON body")

    callbacks = commands.add_parser(
        "callbacks",
        help="see and redeliver an AppId's callback events",
        description="Pending and failed RelayStreamStateChanged events of an AppId, through "
        "the ListCallbackDeliveries, RedeliverCallbacks and DiscardCallbacks actions. "
        "Credentials and endpoint as for `relaystream api`.",
    )
    callbacks.add_argument("operation", choices=("list", "redeliver", "discard"))
    callbacks.add_argument("--app-id", required=True)
    callbacks.add_argument(
        "--event-id",
        action="append",
        help="redeliver/discard: repeatable; default: every failed event of the AppId",
    )
    callbacks.add_argument(
        "--state",
        choices=("pending", "failed", "delivered"),
        help="list: only these; default: pending and failed",
    )
    callbacks.add_argument("--limit", type=int, default=50, help="list: at most this many")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "token":
        return _token(args)
    if args.command == "callbacks":
        return _callbacks(args)
    return _api(args)


def _token(args: argparse.Namespace) -> int:
    names = args.privilege or ["publish", "subscribe"]
    expire_at = int(time.time()) + args.expire_s if args.expire_s else 0
    try:
        token = generate_token(
            app_id=args.app_id,
            app_key=args.app_key,
            room_id=args.room,
            user_id=args.user,
            privileges={_PRIVILEGES[name]: expire_at for name in names},
            expire_at=expire_at,
        )
    except ValueError as exc:
        print(f"relaystream token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _api(args: argparse.Namespace) -> int:
    try:
        body = json.loads(args.body)
    except json.JSONDecodeError as exc:
        print(f"relaystream api: the body is not valid JSON: {exc}", file=sys.stderr)
        return 2
    return _call("api", args.action, body)


_CALLBACK_ACTIONS = {
    "list": "ListCallbackDeliveries",
    "redeliver": "RedeliverCallbacks",
    "discard": "DiscardCallbacks",
}


def _callbacks(args: argparse.Namespace) -> int:
    body: dict[str, object] = {"AppId": args.app_id}
    if args.operation == "list":
        body["Limit"] = args.limit
        if args.state:
            body["State"] = args.state
    elif args.event_id:
        body["EventIds"] = args.event_id
    return _call("callbacks", _CALLBACK_ACTIONS[args.operation], body)


def _call(command: str, action: str, body: dict[str, object]) -> int:
    """Call ``action`` with the credentials of the environment and print its Result."""
    access_key, secret = os.environ.get("RELAYSTREAM_AK"), os.environ.get("RELAYSTREAM_SK")
    if not access_key or not secret:
        print(f"relaystream {command}: set RELAYSTREAM_AK and RELAYSTREAM_SK", file=sys.stderr)
        return 2
    endpoint = os.environ.get("RELAYSTREAM_ENDPOINT", "http://127.0.0.1:8080")
    try:
        result = RelayStreamClient(endpoint, access_key, secret).call(action, body)
    except RelayStreamError as exc:
        print(f"{exc.code}: {exc.message} (RequestId {exc.request_id})", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"relaystream {command}: cannot reach {endpoint}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.config:
            config, demo_created = load_config(args.config), False
        else:
            config, demo_created = demo_config(args.data_dir)
    except ConfigError as exc:
        print(f"relaystream serve: {exc}", file=sys.stderr)
        return 2
    settings = ServerSettings(config=config, data_dir=args.data_dir, host=args.host, port=args.port)
    if not args.config:
        print(_demo_banner(settings, demo_created), flush=True)
    try:
        web.run_app(build_app(settings), host=args.host, port=args.port, print=None)
    except StartupError as exc:
        print(f"relaystream serve: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # typically: the port is taken
        print(
            f"relaystream serve: cannot listen on {args.host}:{args.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    return 0


def _self_command() -> str:
    """A shell command that runs this same relaystream, however it was started."""
    script = Path(sys.argv[0])
    if script.name == "relaystream" and script.is_file():  # the installed entry point
        return shlex.quote(str(script.resolve()))
    # ``python -m relaystream`` (argv[0] is then __main__.py) or an embedding program.
    return f"{shlex.quote(sys.executable)} -m relaystream"


def _demo_banner(settings: ServerSettings, created: bool) -> str:
    config: Config = settings.config
    access_key, app = config.access_keys[0], config.apps[0]
    room, relay_user, viewer = "demo", "relay-demo", "viewer-demo"

    def token_for(user_id: str, privilege: Privilege) -> str:
        return generate_token(
            app_id=app.app_id,
            app_key=app.app_key,
            room_id=room,
            user_id=user_id,
            privileges=[privilege],
        )

    publish_token = token_for(relay_user, Privilege.PUBLISH_STREAM)
    subscribe_token = token_for(viewer, Privilege.SUBSCRIBE_STREAM)
    start_body = {
        "AppId": app.app_id,
        "RoomId": room,
        "TaskId": "demo-task",
        "UserId": relay_user,
        "Token": publish_token,
        "Control": {
            "StreamUrl": settings.demo_url_prefix + DEMO_CLIP_NAME,
            "StreamMode": 1,
            "Loop": True,
        },
    }
    stop_body = {"AppId": app.app_id, "RoomId": room, "TaskId": "demo-task"}
    command = _self_command()
    env = (
        f"export RELAYSTREAM_ENDPOINT={settings.base_url} "
        f"RELAYSTREAM_AK={access_key.id} RELAYSTREAM_SK={shlex.quote(access_key.secret)}"
    )
    origin = "created" if created else "loaded"
    account_file = settings.data_dir / "demo-account.toml"
    return f"""
relaystream is starting on {settings.base_url}
Demo account ({origin}, kept in {account_file}):
  AccessKeyId     {access_key.id}
  SecretAccessKey {access_key.secret}
  AppId           {app.app_id}
  AppKey          {app.app_key}

Relay the built-in test stream into room "{room}" (in another shell):
  {env}
  {command} api StartRelayStream {shlex.quote(json.dumps(start_body))}
  {command} api GetRelayStream {shlex.quote(json.dumps(stop_body))}
  {command} api StopRelayStream {shlex.quote(json.dumps(stop_body))}

Watch it in the room page (the token rides in the URL fragment, never to the server):
  {settings.base_url}/rooms/{app.app_id}/{room}#token={quote(subscribe_token, safe="")}
or with any WHEP player:
  WHEP URL      {settings.base_url}/whep/{app.app_id}/{room}/{relay_user}
  Bearer token  {subscribe_token}

Run relays from the console (sign in with the keys above):
  {settings.base_url}/console
"""
