"""Running relaystream as an operator does: ``relaystream tasks`` and ``watch`` against a
live server, ``/metrics`` scraped while relays run, the event log, and Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from relaystream.media.testsrc import ClipSpec, make_test_clip
from tests.support.net import static_http_server
from tests.support.sdk import RtcService, VolcengineError
from tests.support.server import (
    ACCESS_KEY_ID,
    APP_ID,
    SECRET_ACCESS_KEY,
    RelayServer,
    start_server,
)
from tests.support.tasks import call, task_key, wait_for_status
from tests.support.viewer import WhepViewer

pytestmark = pytest.mark.media

ROOM = "ops"
METRICS_TOKEN = "metrics-bearer-secret"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def clip_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 60 s clip at 25 fps, served over HTTP: long enough to stay running meanwhile."""
    root: Path = tmp_path_factory.mktemp("ops-media")
    make_test_clip(
        root / "minute.mp4",
        ClipSpec(duration_s=60.0, width=320, height=180, frame_rate=25, keyframe_interval_s=1.0),
    )
    make_test_clip(
        root / "short.mp4",
        ClipSpec(duration_s=2.0, width=320, height=180, frame_rate=25, keyframe_interval_s=1.0),
    )
    with static_http_server(root) as base_url:
        yield f"{base_url}/minute.mp4"


@pytest.fixture(scope="module")
def ops_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayServer]:
    server = start_server(
        tmp_path_factory.mktemp("ops"), extra_config=f'[metrics]\ntoken = "{METRICS_TOKEN}"\n'
    )
    yield server
    server.stop()


@pytest.fixture
def ops_rtc(ops_server: RelayServer) -> RtcService:
    return RtcService(ops_server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)


async def start_relay(server: RelayServer, rtc: RtcService, task_id: str, url: str) -> None:
    body = {
        **task_key(ROOM, task_id),
        "UserId": task_id,
        "Token": server.publish_token(ROOM, task_id),
        "Control": {"StreamUrl": url, "StreamMode": 1},
    }
    assert await call(rtc, "StartRelayStream", body) == "ok"
    await wait_for_status(rtc, ROOM, task_id, 2)


def cli_env(server: RelayServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYSTREAM_")}
    return {**env, "RELAYSTREAM_ENDPOINT": server.base_url, "PYTHONUNBUFFERED": "1"}


def relaystream_cli(server: RelayServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relaystream", *args, "--config", str(server.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(server),
    )


def rows_of(listing: str) -> dict[str, list[str]]:
    """``relaystream tasks`` output: task id → its cells (split on runs of spaces)."""
    lines = listing.strip().splitlines()
    assert lines[0].split()[:2] == ["TASK", "ID"], listing
    return {line.split()[0]: re.split(r"\s{3,}", line.strip()) for line in lines[1:]}


def scrape(server: RelayServer, token: str | None = METRICS_TOKEN) -> dict[str, float]:
    """Every sample of /metrics as ``name{label="v",...}`` → value (labels sorted)."""
    request = urllib.request.Request(f"{server.base_url}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


async def scrape_until(
    server: RelayServer, done: Callable[[dict[str, float]], bool], timeout_s: float = 15.0
) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    samples = scrape(server)
    while not done(samples):
        assert time.monotonic() < deadline, "the metrics did not get there in time"
        await asyncio.sleep(0.5)
        samples = scrape(server)
    return samples


def task_series(name: str, task_id: str, **labels: str) -> str:
    every = {"app_id": APP_ID, "room_id": ROOM, "task_id": task_id, **labels}
    return f"{name}{{{','.join(f'{k}={json.dumps(v)}' for k, v in sorted(every.items()))}}}"


# --- relaystream tasks ------------------------------------------------------------------


async def test_tasks_lists_what_runs_with_filters(
    ops_server: RelayServer, ops_rtc: RtcService, clip_url: str
) -> None:
    await start_relay(ops_server, ops_rtc, "listed", clip_url)
    await start_relay(ops_server, ops_rtc, "stopped-one", clip_url)
    assert await call(ops_rtc, "StopRelayStream", task_key(ROOM, "stopped-one")) == "ok"

    done = relaystream_cli(ops_server, "tasks")
    assert done.returncode == 0, done.stderr
    rows = rows_of(done.stdout)
    assert rows["listed"][1:5] == [ROOM, "listed", "running", rows["listed"][4]]
    assert rows["listed"][5] == "remux"
    assert rows["listed"][6] == clip_url
    assert "stopped-one" not in rows  # active ones only, by default

    every = rows_of(relaystream_cli(ops_server, "tasks", "--all").stdout)
    assert every["stopped-one"][3] == "ended"
    assert every["stopped-one"][-1] == "ApiStop"
    assert "listed" in every

    ended = relaystream_cli(ops_server, "tasks", "--status", "ended", "-q")
    assert "stopped-one" in ended.stdout.split()
    assert "listed" not in ended.stdout.split()

    elsewhere = rows_of(relaystream_cli(ops_server, "tasks", "--room", "no-such-room").stdout)
    assert elsewhere == {}


def test_tasks_without_credentials_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYSTREAM_")}
    done = subprocess.run(
        [sys.executable, "-m", "relaystream", "tasks", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "RELAYSTREAM_AK" in done.stderr


# --- relaystream watch under a terminal -------------------------------------------------


def test_watch_refreshes_a_running_tasks_frame_rate(
    ops_server: RelayServer, ops_rtc: RtcService, clip_url: str
) -> None:
    asyncio.run(start_relay(ops_server, ops_rtc, "watched", clip_url))
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "relaystream",
            "watch",
            "--interval",
            "0.5",
            "--config",
            str(ops_server.config_path),
        ],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**cli_env(ops_server), "COLUMNS": "120", "LINES": "40", "TERM": "xterm"},
        start_new_session=True,
    )
    os.close(terminal)
    screen = ""
    rates: list[float] = []
    try:
        deadline = time.monotonic() + 30
        # The clip is 25 fps: a few refreshes must show it, measured between refreshes.
        while len(rates) < 3 and time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1.0)
            if ready:
                screen += os.read(controller, 65536).decode(errors="replace")
            rates = [
                float(row.group(1))
                for row in re.finditer(
                    r"watched\s*│\s*ops\s*│\s*running\s*│\s*[\d.-]+\s*│\s*([\d.]+)\s*│",
                    ANSI.sub("", screen),
                )
            ]
        assert len(rates) >= 3, ANSI.sub("", screen)[-3000:]
        assert 10 <= rates[-1] <= 45, rates  # generous: the machine may be busy
        assert ANSI.sub("", screen).count("relaystream tasks at") >= 3
        os.killpg(process.pid, signal.SIGINT)
        # Keep reading while it exits: a full terminal would block its last writes.
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if select.select([controller], [], [], 0.2)[0]:
                    screen += os.read(controller, 65536).decode(errors="replace")
        assert process.wait(1) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        try:
            while select.select([controller], [], [], 0.2)[0]:
                screen += os.read(controller, 65536).decode(errors="replace")
        except OSError:  # the terminal is gone once the process has exited
            pass
        os.close(controller)
    assert "Traceback" not in screen


# --- /metrics ----------------------------------------------------------------------------


async def test_metrics_show_relays_requests_and_viewers_and_they_move(
    ops_server: RelayServer, ops_rtc: RtcService, clip_url: str
) -> None:
    before = scrape(ops_server)
    await start_relay(ops_server, ops_rtc, "measured", clip_url)
    with pytest.raises(VolcengineError):
        await call(ops_rtc, "StopRelayStream", task_key(ROOM, "never-started"))
    viewer = WhepViewer(
        f"{ops_server.base_url}/whep/{APP_ID}/{ROOM}/measured",
        ops_server.subscribe_token(ROOM, "metrics-viewer"),
    )
    await viewer.connect()
    try:
        await viewer.wait_for_media("video", 0.5, timeout_s=20)
        # The worker reports what it read from the source every so often.
        read_in = task_series(
            "relaystream_task_frames_total", "measured", direction="in", track="video"
        )
        first = await scrape_until(ops_server, lambda s: s.get(read_in, 0) > 0)
        second = await scrape_until(ops_server, lambda s: s[read_in] > first[read_in])
    finally:
        await viewer.close()

    assert first['relaystream_tasks{status="running"}'] >= 1
    assert (
        first['relaystream_task_starts_total{reason="api"}']
        >= before.get('relaystream_task_starts_total{reason="api"}', 0) + 1
    )
    for direction, track in (("in", "video"), ("out", "video"), ("out", "audio")):
        series = task_series(
            "relaystream_task_frames_total", "measured", direction=direction, track=track
        )
        assert second[series] > first[series] > 0, series
    for direction in ("in", "out"):
        series = task_series("relaystream_task_bytes_total", "measured", direction=direction)
        assert second[series] > first[series] > 0, series
    assert second[task_series("relaystream_task_viewers", "measured")] == 1
    assert second[task_series("relaystream_task_worker_cpu_seconds_total", "measured")] > 0
    assert second[task_series("relaystream_task_worker_memory_bytes", "measured")] > 1_000_000
    assert second["process_resident_memory_bytes{}"] > 0

    ok_starts = 'relaystream_api_requests_total{action="StartRelayStream",code="OK"}'
    assert first[ok_starts] >= before.get(ok_starts, 0) + 1
    refused = (
        'relaystream_api_requests_total{action="StopRelayStream",'
        'code="InvalidParameter.ErrorActiveTaskNotFound"}'
    )
    assert first[refused] >= 1
    timed = 'relaystream_api_request_duration_seconds_count{action="StartRelayStream"}'
    assert first[timed] >= 1
    for outcome in ("delivered", "retrying", "failed"):
        assert f'relaystream_callback_deliveries_total{{outcome="{outcome}"}}' in first

    stops = 'relaystream_task_stops_total{reason="ApiStop"}'
    stopped_before = second.get(stops, 0)
    assert await call(ops_rtc, "StopRelayStream", task_key(ROOM, "measured")) == "ok"
    after = scrape(ops_server)
    assert after[stops] == stopped_before + 1
    assert task_series("relaystream_task_viewers", "measured") not in after


def test_metrics_need_the_configured_bearer_token(ops_server: RelayServer) -> None:
    for token in (None, "wrong"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            scrape(ops_server, token)
        assert refused.value.code == 401
    assert 'relaystream_tasks{status="running"}' in scrape(ops_server)


# --- the event log ----------------------------------------------------------------------


async def test_the_log_has_one_line_per_task_and_viewer_event(
    ops_server: RelayServer, ops_rtc: RtcService, clip_url: str
) -> None:
    await start_relay(ops_server, ops_rtc, "logged", clip_url)
    viewer = WhepViewer(
        f"{ops_server.base_url}/whep/{APP_ID}/{ROOM}/logged",
        ops_server.subscribe_token(ROOM, "log-viewer"),
    )
    await viewer.connect()
    await viewer.wait_for_media("video", 0.3, timeout_s=20)
    await viewer.close()
    assert await call(ops_rtc, "StopRelayStream", task_key(ROOM, "logged")) == "ok"

    key = f"{APP_ID}/{ROOM}/logged"
    deadline = time.monotonic() + 10
    while f"task stopped task={key}" not in ops_server.log() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    log = ops_server.log()
    assert f"task started task={key} user=logged source={clip_url} mode=remux" in log
    assert f"task stopped task={key} reason=ApiStop" in log
    assert f"viewer joined room={APP_ID}/{ROOM} publisher=logged viewer=log-viewer" in log
    assert f"viewer left room={APP_ID}/{ROOM} publisher=logged viewer=log-viewer" in log
    assert re.search(rf"ready url={re.escape(ops_server.base_url)}\b", log)
    assert "Traceback" not in log


async def test_a_source_that_ends_is_one_line_not_a_traceback(
    ops_server: RelayServer, ops_rtc: RtcService, clip_url: str
) -> None:
    short_url = clip_url.replace("minute.mp4", "short.mp4")
    await start_relay(ops_server, ops_rtc, "ending", short_url)
    task = await wait_for_status(ops_rtc, ROOM, "ending", 3)
    assert task["StopReason"] == "SourceEnded"

    key = f"{APP_ID}/{ROOM}/ending"
    deadline = time.monotonic() + 10
    while f"task stopped task={key}" not in ops_server.log() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    stopped = [line for line in ops_server.log().splitlines() if f"task={key}" in line]
    assert any(f"task stopped task={key} reason=SourceEnded" in line for line in stopped)
    log = ops_server.log()
    assert "Traceback" not in log
    assert "Exception ignored" not in log


# --- Ctrl-C and the next start ----------------------------------------------------------


async def test_ctrl_c_exits_cleanly_and_the_tasks_resume(tmp_path: Path, clip_url: str) -> None:
    server = start_server(tmp_path / "interrupted", serve_args=("--log-format", "json"))
    rtc = RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    try:
        for task_id in ("first", "second"):
            await start_relay(server, rtc, task_id, clip_url)

        interrupted_at = time.monotonic()
        server.process.send_signal(signal.SIGINT)
        returncode = await asyncio.to_thread(server.process.wait, 10)
        assert returncode == 0
        assert time.monotonic() - interrupted_at < 10
        log = server.log()
        assert "Traceback" not in log
        assert "KeyboardInterrupt" not in log
        events = [json.loads(line) for line in log.splitlines() if line.strip()]
        assert [e["url"] for e in events if e.get("event") == "ready"] == [server.base_url]
        shutdown = [e for e in events if e.get("event") == "shutting down"]
        assert shutdown and shutdown[0]["active_tasks"] == 2

        server = server.restart()
        rtc = RtcService(server.host, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        for task_id in ("first", "second"):
            task = await wait_for_status(rtc, ROOM, task_id, 2)
            assert task["Stats"]["VideoFramesSent"] > 0
        resumed = [
            json.loads(line)
            for line in server.log().splitlines()
            if line.strip() and json.loads(line).get("event") == "task resumed"
        ]
        assert sorted(e["task"] for e in resumed) == [
            f"{APP_ID}/{ROOM}/{t}" for t in ("first", "second")
        ]
    finally:
        server.stop()
