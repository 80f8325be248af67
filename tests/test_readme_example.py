"""The README's official-SDK example, run verbatim against a demo server, as a new user
would after ``make run``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.net import free_port
from tests.support.server import stop_process

pytestmark = pytest.mark.media

README = Path(__file__).resolve().parent.parent / "README.md"


def sdk_example() -> str:
    """The first Python block of the README's section on the official SDK."""
    section = README.read_text().split("## Using the official Volcengine SDK", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None, "no Python example in the SDK section"
    return block.group(1)


def test_the_readme_sdk_example_runs_against_a_demo_server(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYSTREAM_")}
    log = (tmp_path / "server.log").open("wb")
    # `make run` from this directory: the demo account lands in ./data.
    server = subprocess.Popen(
        [sys.executable, "-m", "relaystream", "serve", "--port", str(port)],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the demo server did not start"
                time.sleep(0.2)
        example = tmp_path / "example.py"
        example.write_text(sdk_example())
        done = subprocess.run(
            [sys.executable, str(example)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={**env, "RELAYSTREAM_ENDPOINT": f"http://127.0.0.1:{port}"},
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            "start: ok",
            "running: True",
            "tasks in room demo: ['sdk-example']",
            "stop: ok",
        ]
    finally:
        stop_process(server)
        log.close()
