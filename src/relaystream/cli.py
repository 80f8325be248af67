"""The ``relaystream`` command: serve, make tokens, call the API, see what runs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

from aiohttp import web

from relaystream import __version__, nodes_cli
from relaystream.client import RelayStreamClient, RelayStreamError
from relaystream.config import DEMO_ACCOUNT_FILE, Config, ConfigError, demo_config, load_config
from relaystream.logs import LogFormat, configure_logging, log_event
from relaystream.rtc.token import Privilege, generate_token
from relaystream.server import DEMO_CLIP_NAME, ServerSettings, build_app
from relaystream.startup import StartupError
from relaystream.task_table import (
    TASK_COLUMNS,
    Status,
    TaskFilter,
    format_columns,
    list_tasks,
    task_rows,
    watch,
)
from relaystream.tls import server_tls_context

logger = logging.getLogger("relaystream")

_PRIVILEGES = {
    "publish": Privilege.PUBLISH_STREAM,
    "publish-audio": Privilege.PUBLISH_AUDIO,
    "publish-video": Privilege.PUBLISH_VIDEO,
    "publish-data": Privilege.PUBLISH_DATA,
    "subscribe": Privilege.SUBSCRIBE_STREAM,
}


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (and exit code 2), not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows each option's default, when it has a meaningful one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


_LOG_LEVELS = ("debug", "info", "warning", "error")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="relaystream", description=__doc__, formatter_class=_HelpWithDefaults)
    parser.add_argument("--version", action="version", version=f"relaystream {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the service",
        description="Run the API, the embedded SFU and the media workers. Without a config "
        "file, a demo account is made in the data dir on first start.",
        formatter_class=_HelpWithDefaults,
    )
    serve.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("RELAYSTREAM_CONFIG"),
        help="TOML config file (env RELAYSTREAM_CONFIG); none: the demo account",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on")
    serve.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="task store, demo account, demo clip"
    )
    serve.add_argument(
        "--log-level", type=str.lower, choices=_LOG_LEVELS, default="info", help="least severity"
    )
    serve.add_argument(
        "--log-format",
        type=LogFormat,
        choices=list(LogFormat),
        default=LogFormat.TEXT,
        help="text for people, json (one object per line) for machines",
    )
    serve.add_argument(
        "--tls-cert", type=Path, help="PEM certificate (chain): serve HTTPS ([server] tls_cert)"
    )
    serve.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")

    token = commands.add_parser(
        "token", help="print an RTC AccessToken", formatter_class=_HelpWithDefaults
    )
    token.add_argument("--app-id", required=True, help="24-character AppId")
    token.add_argument("--app-key", required=True, help="the AppId's AppKey")
    token.add_argument("--room", required=True, help="RoomId")
    token.add_argument("--user", required=True, help="UserId")
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
        formatter_class=_HelpWithDefaults,
    )
    api.add_argument("action", help="e.g. StartRelayStream, GetRelayStream, ListRelayStream")
    api.add_argument("body", help="the JSON body")

    tasks = commands.add_parser(
        "tasks",
        help="list tasks (active ones unless --all)",
        description=f"List tasks through ListRelayStream, newest first. {_CREDENTIALS_HELP}",
        formatter_class=_HelpWithDefaults,
    )
    _add_task_filters(tasks)
    tasks.add_argument("-a", "--all", action="store_true", help="ended tasks too")
    tasks.add_argument(
        "--status", type=str.lower, choices=[s.name.lower() for s in Status], help="only these"
    )
    tasks.add_argument("-n", "--last", type=int, help="only the newest N")
    tasks.add_argument("-q", "--quiet", action="store_true", help="only the task ids")

    watch = commands.add_parser(
        "watch",
        help="a live table of the active tasks",
        description="Refresh a table of the active tasks: status, input and output frame "
        "rates, output bitrate, viewers and the worker's CPU (ListRelayStream, then "
        f"GetRelayStream for each task). Ctrl-C quits. {_CREDENTIALS_HELP}",
        formatter_class=_HelpWithDefaults,
    )
    _add_task_filters(watch)
    watch.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    watch.add_argument(
        "--refreshes", type=int, default=None, help="stop after N refreshes (default: never)"
    )
    nodes_cli.add_commands(commands)

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


_CREDENTIALS_HELP = (
    "Credentials come from RELAYSTREAM_AK / RELAYSTREAM_SK, or else from the first access "
    "key of --config (or the demo account in --data-dir); the endpoint from "
    "RELAYSTREAM_ENDPOINT (default http://127.0.0.1:8080)."
)


def _add_task_filters(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--app-id",
        action="append",
        help="repeatable; default: every AppId of the access key in the config",
    )
    command.add_argument("--room", help="only this RoomId")
    command.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("RELAYSTREAM_CONFIG"),
        help="config file to take credentials and AppIds from",
    )
    command.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="where the demo account is kept"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "token":
        return _token(args)
    if args.command in ("nodes", "drain"):
        return nodes_cli.run(args)
    try:
        if args.command == "api":
            return _api(args)
        if args.command == "callbacks":
            return _callbacks(args)
        return _task_command(args)
    except KeyboardInterrupt:
        return 130


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


class _UsageError(Exception):
    """What the command line asks for cannot be done; the message says why."""


@dataclass(frozen=True)
class _Account:
    access_key_id: str
    secret: str
    app_ids: tuple[str, ...]


def _account(args: argparse.Namespace) -> _Account:
    """Credentials and AppIds for ``tasks``/``watch``: environment, else config file."""
    access_key, secret = os.environ.get("RELAYSTREAM_AK"), os.environ.get("RELAYSTREAM_SK")
    config: Config | None = None
    config_path = args.config or args.data_dir / DEMO_ACCOUNT_FILE
    if config_path.exists():
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            raise _UsageError(str(exc)) from None
    if not (access_key and secret):
        if config is None or not config.access_keys:
            raise _UsageError(
                f"no credentials: set RELAYSTREAM_AK and RELAYSTREAM_SK, or pass --config "
                f"(no {config_path})"
            )
        access_key, secret = config.access_keys[0].id, config.access_keys[0].secret
    app_ids = tuple(args.app_id or (config.apps_of(access_key) if config else ()))
    if not app_ids:
        raise _UsageError("which AppId? pass --app-id")
    return _Account(access_key, secret, app_ids)


def _task_command(args: argparse.Namespace) -> int:
    endpoint = os.environ.get("RELAYSTREAM_ENDPOINT", "http://127.0.0.1:8080")
    prog = f"relaystream {args.command}"
    try:
        account = _account(args)
        client = RelayStreamClient(endpoint, account.access_key_id, account.secret)
        if args.command == "watch":
            if args.interval <= 0:
                raise _UsageError("--interval must be more than 0")
            watch(
                client,
                TaskFilter(account.app_ids, args.room),
                interval_s=args.interval,
                refreshes=args.refreshes,
            )
            return 0
        return _print_tasks(client, account, args)
    except _UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except RelayStreamError as exc:
        print(f"{prog}: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{prog}: cannot reach {endpoint}: {exc}", file=sys.stderr)
        return 1


def _print_tasks(client: RelayStreamClient, account: _Account, args: argparse.Namespace) -> int:
    if args.status:
        statuses = frozenset({Status[args.status.upper()]})
    elif args.all:
        statuses = frozenset(Status)
    else:
        statuses = frozenset({Status.STARTING, Status.RUNNING})
    found = list_tasks(client, TaskFilter(account.app_ids, args.room, statuses, args.last))
    if args.quiet:
        for task in found:
            print(task["TaskId"])
    else:
        print(format_columns(TASK_COLUMNS, task_rows(found, time.time())))
    return 0


def _serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    try:
        _check_port_free(args.host, args.port)
    except OSError as exc:
        print(_listen_error(args.host, args.port, exc), file=sys.stderr)
        return 1
    try:
        if args.config:
            config, demo_created = load_config(args.config), False
        else:
            config, demo_created = demo_config(args.data_dir)
        cert = args.tls_cert or config.server.tls_cert
        key = args.tls_key or config.server.tls_key
        if (cert is None) != (key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        tls = server_tls_context(cert, key) if cert and key else None
    except ConfigError as exc:
        print(f"relaystream serve: {exc}", file=sys.stderr)
        return 2
    settings = ServerSettings(
        config=config,
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        tls=tls is not None,
    )
    if not args.config:
        print(_demo_banner(settings, demo_created), flush=True)

    def ready(_: str) -> None:
        log_event(logger, "ready", url=settings.base_url, version=__version__)

    try:
        web.run_app(
            build_app(settings), host=args.host, port=args.port, ssl_context=tls, print=ready
        )
    except StartupError as exc:
        print(f"relaystream serve: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # typically: the port was taken since it was checked
        print(_listen_error(args.host, args.port, exc), file=sys.stderr)
        return 1
    _exit_now(0)


def _exit_now(code: int) -> NoReturn:
    """Exit without tearing the interpreter down.

    The app's cleanup has already stopped the workers and closed the store and every
    connection, in order. What remains is a final garbage collection of a large heap
    (media and WebRTC libraries), which took seconds on a busy machine and kept a
    Ctrl-C or a SIGTERM from ending the process promptly.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _check_port_free(host: str, port: int) -> None:
    """Fail before anything is printed or made (a demo account) when the port is taken."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as probe:
        # As the server's own listener will: a port left in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)


def _listen_error(host: str, port: int, exc: OSError) -> str:
    return f"relaystream serve: cannot listen on {host}:{port}: {exc.strerror or exc}"


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
