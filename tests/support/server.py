"""A real relaystream server, started as a subprocess with its own config and data dir."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from relaystream.rtc.token import Privilege, generate_token
from tests.support.net import free_port

ACCESS_KEY_ID = "AKLTtestaccesskey"
SECRET_ACCESS_KEY = "dGVzdC1zZWNyZXQta2V5"
APP_ID = "5f8a1c2b3d4e5f6a7b8c9d0e"
APP_KEY = "0123456789abcdef0123456789abcdef"
OTHER_APP_ID = "aaaaaaaaaaaaaaaaaaaaaaaa"  # exists, but the test access key does not own it
LIMITED_APP_ID = "cccccccccccccccccccccccc"  # owned by the test access key, 3 requests/s
LIMITED_APP_QPS = 3
SECOND_APP_ID = "second-app-id-0123456789"  # owned by the test access key, default limits
SECOND_APP_KEY = "11111111111111111111111111111111"
APP_KEYS = {
    APP_ID: APP_KEY,
    LIMITED_APP_ID: "00000000000000000000000000000000",
    SECOND_APP_ID: SECOND_APP_KEY,
}


@dataclass
class RelayServer:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path
    config_path: Path
    serve_args: tuple[str, ...] = ()
    tls: ssl.SSLContext | None = None  # a client context trusting the HTTPS certificate
    env: tuple[tuple[str, str], ...] = ()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def publish_token(
        self, room_id: str, user_id: str, *, app_id: str = APP_ID, **kwargs: int
    ) -> str:
        return generate_token(
            app_id=app_id,
            app_key=APP_KEYS[app_id],
            room_id=room_id,
            user_id=user_id,
            privileges=[Privilege.PUBLISH_STREAM],
            **kwargs,
        )

    def subscribe_token(
        self, room_id: str, user_id: str = "viewer", *, app_id: str = APP_ID
    ) -> str:
        return generate_token(
            app_id=app_id,
            app_key=APP_KEYS[app_id],
            room_id=room_id,
            user_id=user_id,
            privileges=[Privilege.SUBSCRIBE_STREAM],
        )

    def stop(self) -> None:
        stop_process(self.process)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM killer would."""
        self.process.kill()
        self.process.wait()

    def restart(self) -> RelayServer:
        """A new server process on the same config file, data dir and port."""
        return serve(
            self.data_dir.parent,
            self.config_path,
            port=self.port,
            serve_args=self.serve_args,
            tls=self.tls,
            env=dict(self.env),
        )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def write_config(
    path: Path,
    *,
    allow_private: bool = True,
    tasks_toml: str = "",
    extra: str = "",
    app_toml: Mapping[str, str] | None = None,
    callbacks_toml: str = "",
) -> Path:
    """The test config; ``tasks_toml`` is the body of its [tasks] section, ``extra`` TOML
    placed right after ``[sources] allow_private`` (lines before any table header belong
    to ``[sources]``), ``app_toml`` more keys of an app by AppId (``callback_url``...),
    ``callbacks_toml`` the body of its [callbacks] section."""
    more = app_toml or {}
    tasks_section = f"[tasks]\n{tasks_toml}" if tasks_toml else ""
    callbacks_section = f"[callbacks]\n{callbacks_toml}" if callbacks_toml else ""
    path.write_text(
        f"""
region = "cn-north-1"

[[access_keys]]
id = "{ACCESS_KEY_ID}"
secret = "{SECRET_ACCESS_KEY}"
apps = ["{APP_ID}", "{LIMITED_APP_ID}", "{SECOND_APP_ID}"]

[[access_keys]]
id = "AKLTother"
secret = "other-secret"
apps = ["{OTHER_APP_ID}"]

[[apps]]
app_id = "{APP_ID}"
app_key = "{APP_KEY}"
{more.get(APP_ID, "")}

[[apps]]
app_id = "{OTHER_APP_ID}"
app_key = "fedcba9876543210fedcba9876543210"

[[apps]]
app_id = "{LIMITED_APP_ID}"
app_key = "{APP_KEYS[LIMITED_APP_ID]}"
qps_limit = {LIMITED_APP_QPS}

[[apps]]
app_id = "{SECOND_APP_ID}"
app_key = "{SECOND_APP_KEY}"
{more.get(SECOND_APP_ID, "")}

[sources]
allow_private = {"true" if allow_private else "false"}
{extra}

{tasks_section}

{callbacks_section}
"""
    )
    return path


def start_server(
    workdir: Path,
    *,
    allow_private: bool = True,
    extra_config: str = "",
    tasks_toml: str = "",
    app_toml: Mapping[str, str] | None = None,
    callbacks_toml: str = "",
    serve_args: tuple[str, ...] = (),
    tls: ssl.SSLContext | None = None,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> RelayServer:
    """A server with the test config (see ``write_config``) on a free port (or ``port``,
    when its origin must be known before it starts); ``serve_args`` are more options of
    ``relaystream serve``; with ``--tls-cert`` among them, ``tls`` is a client context
    that trusts the certificate; ``env`` more environment (its workers inherit it, so a
    test can tell whose workers are whose)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(
        workdir / "relaystream.toml",
        allow_private=allow_private,
        extra=extra_config,
        tasks_toml=tasks_toml,
        app_toml=app_toml,
        callbacks_toml=callbacks_toml,
    )
    return serve(workdir, config, port=port, serve_args=serve_args, tls=tls, env=env)


def serve(
    workdir: Path,
    config: Path,
    *,
    port: int | None = None,
    serve_args: tuple[str, ...] = (),
    tls: ssl.SSLContext | None = None,
    env: dict[str, str] | None = None,
) -> RelayServer:
    """``relaystream serve`` with ``config``, its data and log in ``workdir``, on a free
    port (or ``port``: a restart); returns once it answers /healthz."""
    port = port or free_port()
    log_path = workdir / "server.log"
    log = log_path.open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "relaystream",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--data-dir",
            str(workdir / "data"),
            *serve_args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    server = RelayServer(
        process,
        port,
        workdir / "data",
        log_path,
        config,
        serve_args,
        tls,
        tuple((env or {}).items()),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(
                f"{server.base_url}/healthz", timeout=1, context=server.tls
            ) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server did not become healthy:\n{server.log()}")
