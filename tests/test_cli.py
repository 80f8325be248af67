"""The ``relaystream`` command as a user runs it: making tokens, and the demo that
``serve`` prints on first start, copied into a shell line by line."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from relaystream import __version__ as relaystream_version
from relaystream.rtc.token import Privilege, TokenError, parse_token, verify_token
from tests.support.net import free_port
from tests.support.server import stop_process

APP_ID = "0123456789abcdef01234567"
APP_KEY = "an-app-key-for-the-cli-test"


def relaystream(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relaystream", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def make_token(*extra: str) -> str:
    done = relaystream(
        "token",
        "--app-id",
        APP_ID,
        "--app-key",
        APP_KEY,
        "--room",
        "room-1",
        "--user",
        "user-1",
        *extra,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def accepts(
    token: str,
    privilege: Privilege,
    *,
    app_key: str = APP_KEY,
    room_id: str = "room-1",
    user_id: str = "user-1",
) -> bool:
    try:
        verify_token(
            token,
            app_id=APP_ID,
            app_key=app_key,
            room_id=room_id,
            user_id=user_id,
            privilege=privilege,
        )
    except TokenError:
        return False
    return True


# --- relaystream token ---------------------------------------------------------------


def test_token_with_publish_privilege() -> None:
    token = make_token("--privilege", "publish")
    assert token.startswith("001" + APP_ID)
    assert accepts(token, Privilege.PUBLISH_STREAM)
    assert accepts(token, Privilege.PUBLISH_AUDIO)
    assert not accepts(token, Privilege.SUBSCRIBE_STREAM)
    assert not accepts(token, Privilege.PUBLISH_STREAM, room_id="room-2")
    assert not accepts(token, Privilege.PUBLISH_STREAM, user_id="user-2")
    assert not accepts(token, Privilege.PUBLISH_STREAM, app_key="another-key")
    assert parse_token(token)[0].expire_at == 0


def test_token_with_subscribe_privilege() -> None:
    token = make_token("--privilege", "subscribe")
    assert accepts(token, Privilege.SUBSCRIBE_STREAM)
    assert not accepts(token, Privilege.PUBLISH_STREAM)


def test_token_default_privileges_and_expiry() -> None:
    token = make_token("--expire-s", "3600")
    assert accepts(token, Privilege.PUBLISH_STREAM)
    assert accepts(token, Privilege.SUBSCRIBE_STREAM)
    expire_at = parse_token(token)[0].expire_at
    assert abs(expire_at - (time.time() + 3600)) < 60


def test_token_with_a_bad_app_id() -> None:
    done = relaystream(
        "token", "--app-id", "short", "--app-key", APP_KEY, "--room", "r", "--user", "u"
    )
    assert done.returncode != 0
    assert done.stdout == ""
    assert "app_id" in done.stderr or "app-id" in done.stderr
    assert "24" in done.stderr
    assert "Traceback" not in done.stderr


def test_token_with_an_unknown_privilege() -> None:
    done = relaystream(
        "token",
        "--app-id",
        APP_ID,
        "--app-key",
        APP_KEY,
        "--room",
        "r",
        "--user",
        "u",
        "--privilege",
        "admin",
    )
    assert done.returncode != 0
    assert "admin" in done.stderr
    assert "Traceback" not in done.stderr


# --- relaystream serve without a config: the demo ------------------------------------


@dataclass
class DemoServer:
    process: subprocess.Popen[bytes]
    port: int
    stdout_path: Path
    stderr_path: Path

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)


def start_demo(data_dir: Path, logs: Path) -> DemoServer:
    """``relaystream serve`` with no config; returns once the banner is out and the
    service answers ``/healthz`` (the banner comes first)."""
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    stdout_path, stderr_path = logs / "stdout.txt", logs / "stderr.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYSTREAM_")}
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "relaystream",
                "serve",
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=err,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )
    server = DemoServer(process, port, stdout_path, stderr_path)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(
                    f"serve exited with {process.returncode}:\n{server.stdout()}\n"
                    f"{stderr_path.read_text(errors='replace')}"
                )
            if "Bearer token" in server.stdout():
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/healthz", timeout=1
                    ) as response:
                        if response.status == 200:
                            return server
                except OSError:
                    pass
            time.sleep(0.2)
        raise AssertionError(f"serve did not become healthy:\n{server.stdout()}")
    except BaseException:
        server.stop()
        raise


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def demo(demo_dir: Path, tmp_path: Path) -> Iterator[DemoServer]:
    server = start_demo(demo_dir, tmp_path / "first")
    yield server
    server.stop()


def banner_value(banner: str, label: str) -> str:
    match = re.search(rf"^\s*{label}\s+(\S+)\s*$", banner, re.MULTILINE)
    assert match, f"{label} not in the banner:\n{banner}"
    return match.group(1)


def banner_line(banner: str, pattern: str) -> str:
    lines = [line.strip() for line in banner.splitlines() if re.search(pattern, line)]
    assert len(lines) == 1, f"expected one line matching {pattern!r} in:\n{banner}"
    return lines[0]


def run_printed(export_line: str, command_line: str) -> Any:
    """Run the printed lines, verbatim, in a fresh shell; returns the printed Result."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYSTREAM_")}
    done = subprocess.run(
        ["bash", "-c", f"set -e\n{export_line}\n{command_line}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, f"{command_line}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def test_demo_banner_runs_as_printed(demo: DemoServer, demo_dir: Path, tmp_path: Path) -> None:
    banner = demo.stdout()
    access_key_id = banner_value(banner, "AccessKeyId")
    assert banner_value(banner, "SecretAccessKey")
    app_id = banner_value(banner, "AppId")
    assert len(app_id) == 24
    assert banner_value(banner, "AppKey")
    assert "created" in banner
    assert f"127.0.0.1:{demo.port}" in banner

    export_line = banner_line(banner, r"^\s*export ")
    start_line = banner_line(banner, r" api StartRelayStream ")
    get_line = banner_line(banner, r" api GetRelayStream ")
    stop_line = banner_line(banner, r" api StopRelayStream ")
    assert access_key_id in export_line

    assert run_printed(export_line, start_line) == "ok"
    deadline = time.monotonic() + 30
    task = run_printed(export_line, get_line)["Task"]
    while task["Status"] != 2 and time.monotonic() < deadline:
        assert task["Status"] == 1, task
        time.sleep(0.3)
        task = run_printed(export_line, get_line)["Task"]
    assert task["Status"] == 2, task
    assert task["AppId"] == app_id
    assert "Token" not in task

    assert run_printed(export_line, stop_line) == "ok"
    deadline = time.monotonic() + 10
    task = run_printed(export_line, get_line)["Task"]
    while task["Status"] != 3 and time.monotonic() < deadline:
        time.sleep(0.3)
        task = run_printed(export_line, get_line)["Task"]
    assert task["Status"] == 3, task
    assert task["StopReason"] == "ApiStop"

    # The account is kept: a second start with the same data dir loads it.
    demo.stop()
    again = start_demo(demo_dir, tmp_path / "second")
    try:
        second = again.stdout()
        assert "loaded" in second
        assert "created" not in second
        assert banner_value(second, "AccessKeyId") == access_key_id
        assert banner_value(second, "AppId") == app_id
    finally:
        again.stop()


def test_demo_api_command_reports_errors(demo: DemoServer) -> None:
    """A mistake in a copied command is reported on stderr with the error code."""
    banner = demo.stdout()
    export_line = banner_line(banner, r"^\s*export ")
    stop_line = banner_line(banner, r" api StopRelayStream ")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYSTREAM_")}
    done = subprocess.run(
        ["bash", "-c", f"{export_line}\n{stop_line}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 1
    assert "InvalidParameter.ErrorActiveTaskNotFound" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_on_a_taken_port_says_only_that(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = relaystream("serve", "--port", str(port), "--data-dir", str(data_dir))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"relaystream serve: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
    assert done.stdout == ""  # no demo banner
    assert not (data_dir / "demo-account.toml").exists()  # and no new demo account


# --- the command line itself ---------------------------------------------------------


def test_version() -> None:
    done = relaystream("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"relaystream {relaystream_version}"


@pytest.mark.parametrize(
    "args",
    [
        ("serve", "--log-level", "verbose"),
        ("serve", "--port", "eighty"),
        ("tasks", "--status", "sleeping"),
        ("frobnicate",),
        (),
    ],
)
def test_usage_errors_are_one_line(args: tuple[str, ...]) -> None:
    done = relaystream(*args)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("relaystream")
    assert "--help" in done.stderr


@pytest.mark.parametrize(
    ("command", "defaults"),
    [
        (
            "serve",
            ["(default: 127.0.0.1)", "(default: 8080)", "(default: data)", "(default: info)"],
        ),
        ("token", ["(default: 0)"]),
        ("api", []),
        ("tasks", ["(default: data)"]),
        ("watch", ["(default: 2.0)", "(default: never)"]),
    ],
)
def test_every_command_has_help_with_defaults(command: str, defaults: list[str]) -> None:
    done = relaystream(command, "--help")
    assert done.returncode == 0
    help_text = " ".join(done.stdout.split())  # argparse wraps lines anywhere
    for default in defaults:
        assert default in help_text, help_text
    assert "(default: None)" not in help_text
    listed = relaystream("--help").stdout
    assert command in listed


def test_serve_with_a_broken_config_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "relaystream.toml"
    config.write_text('[[apps]]\napp_id = "short"\napp_key = "k"\n')
    done = relaystream("serve", "--config", str(config), "--data-dir", str(tmp_path))
    assert done.returncode == 2
    assert "apps.0.app_id" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_with_unusable_tls_files_says_which(tmp_path: Path) -> None:
    missing = relaystream(
        "serve", "--data-dir", str(tmp_path), "--tls-cert", str(tmp_path / "nope.pem")
    )
    assert missing.returncode == 2
    assert "--tls-cert and --tls-key go together" in missing.stderr
    not_pem = tmp_path / "cert.pem"
    not_pem.write_text("not a certificate\n")
    done = relaystream(
        "serve", "--data-dir", str(tmp_path), "--tls-cert", str(not_pem), "--tls-key", str(not_pem)
    )
    assert done.returncode == 2
    assert "are not a usable PEM pair" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_refuses_an_ice_address_that_is_not_an_ip(tmp_path: Path) -> None:
    config = tmp_path / "relaystream.toml"
    config.write_text('[rtc]\nannounced_addresses = ["example.com"]\n')
    done = relaystream("serve", "--config", str(config), "--data-dir", str(tmp_path))
    assert done.returncode == 2
    assert "announced_addresses: 'example.com' is not an IP address" in done.stderr
