"""`relaystream serve` with a data dir or store it cannot use exits at once, with one
line that says why, so a process supervisor sees the failure instead of a process that
never listens."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.net import free_port
from tests.support.server import write_config


def _data_dir_under_a_file(tmp: Path) -> tuple[Path, str]:
    (tmp / "a-file").write_text("not a directory")
    return tmp / "a-file" / "data", "the data dir"


def _store_that_is_not_a_database(tmp: Path) -> tuple[Path, str]:
    data = tmp / "data"
    data.mkdir()
    (data / "relaystream.db").write_bytes(b"this is not SQLite " * 500)
    return data, "the task store"


def _store_that_is_a_directory(tmp: Path) -> tuple[Path, str]:
    data = tmp / "data"
    (data / "relaystream.db").mkdir(parents=True)
    return data, "the task store"


@pytest.mark.parametrize(
    "make_data_dir",
    [_data_dir_under_a_file, _store_that_is_not_a_database, _store_that_is_a_directory],
)
@pytest.mark.parametrize("with_config", [True, False], ids=["config", "demo"])
def test_unusable_data_dir_or_store_fails_fast(
    tmp_path: Path, make_data_dir: Callable[[Path], tuple[Path, str]], with_config: bool
) -> None:
    data_dir, what = make_data_dir(tmp_path)
    config_args = ["--config", str(write_config(tmp_path / "r.toml"))] if with_config else []
    serve = [sys.executable, "-m", "relaystream", "serve", *config_args]
    done = subprocess.run(
        [*serve, "--port", str(free_port()), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=30,  # the bug this guards against was a process that never exits
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("relaystream serve: ")
    if with_config or what != "the data dir":
        assert what in line and str(data_dir) in line
    else:  # without a config the demo account is written first, and that fails first
        assert "demo account" in line and str(data_dir) in line


def test_an_unreachable_postgresql_store_fails_fast_without_its_password(tmp_path: Path) -> None:
    # Nothing listens on this loopback port: the store cannot be opened.
    url = f"postgresql://relay:hunter2secret@127.0.0.1:{free_port()}/relaystream"
    config = write_config(tmp_path / "r.toml", extra=f'[store]\nurl = "{url}"\n')
    done = subprocess.run(
        [
            *(sys.executable, "-m", "relaystream", "serve", "--config", str(config)),
            *("--port", str(free_port()), "--data-dir", str(tmp_path / "data")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    # The driver's pool logs each failed attempt; the last line says why it gave up.
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("relaystream serve: the task store postgresql://relay:***@127.0.0.1:")
    assert "hunter2secret" not in done.stderr + done.stdout
