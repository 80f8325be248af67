"""The log format: one line per event, readable as text and as JSON, no secrets in URLs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from relaystream.logs import JsonFormatter, LogFormat, configure_logging, log_event, url_for_log


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("relaystream.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_an_event_is_one_text_line_with_its_fields(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    log_event(logger, "task stopped", task="app/room/t1", reason="SourceError", detail="404 x")
    assert stream.getvalue() == 'task stopped task=app/room/t1 reason=SourceError detail="404 x"\n'


def test_an_event_in_json_keeps_its_fields_as_keys(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.handlers[0].setFormatter(JsonFormatter())
    log_event(logger, "viewer joined", room="app/room", viewer="v1", empty="")
    line = json.loads(stream.getvalue())
    assert line["event"] == "viewer joined"
    assert (line["room"], line["viewer"]) == ("app/room", "v1")
    assert "empty" not in line
    assert line["level"] == "INFO" and line["logger"] == "relaystream.test-logs"
    assert line["message"] == "viewer joined room=app/room viewer=v1"


def test_json_keeps_an_exception_inside_the_one_line(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.handlers[0].setFormatter(JsonFormatter())
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("internal error")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert "ValueError: boom" in json.loads(lines[0])["exception"]


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        (
            "rtmp://user:pw@live.example:1935/app/key?token=abc#x",
            "rtmp://live.example:1935/app/key",
        ),
        ("https://cdn.example/a.m3u8?sign=s3cret", "https://cdn.example/a.m3u8"),
        ("http://[::1]:8080/v.flv", "http://[::1]:8080/v.flv"),
        ("http://host:notaport/x", "(unparsable URL)"),
    ],
)
def test_a_url_is_logged_without_what_may_carry_a_secret(url: str, logged: str) -> None:
    assert url_for_log(url) == logged


def test_levels_and_formats_configure_the_root_logger() -> None:
    root, ice = logging.getLogger(), logging.getLogger("aioice")
    saved_handlers, saved_level, saved_ice_level = root.handlers[:], root.level, ice.level
    try:
        configure_logging("warning", LogFormat.JSON)
        assert root.level == logging.WARNING
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        assert ice.level == logging.WARNING
        configure_logging("debug", LogFormat.TEXT)
        assert ice.level == logging.DEBUG
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        ice.setLevel(saved_ice_level)
