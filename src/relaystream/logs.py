"""How the server logs: one line per event, as text for people or JSON for machines.

``log_event`` writes an event (``task started``, ``viewer left``...) as one line whose
fields read as ``key=value`` in text and as keys of the object in JSON, so a log
pipeline can filter on ``task`` or ``reason`` without parsing the message.
"""

from __future__ import annotations

import json
import logging
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Logged with an event: the fields, kept apart from the message for the JSON formatter.
_FIELDS_ATTR = "relaystream_fields"
_EVENT_ATTR = "relaystream_event"
_CHATTY_LIBRARIES = ("aioice", "aiortc")


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        event = getattr(record, _EVENT_ATTR, None)
        if event is not None:
            line["event"] = event
            line.update(getattr(record, _FIELDS_ATTR, {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: LogFormat) -> None:
    """Root logging for the server: ``level`` must be a logging level name."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if log_format is LogFormat.JSON else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # ICE logs every candidate pair of every viewer at INFO: detail for debugging only.
    for chatty in _CHATTY_LIBRARIES:
        logging.getLogger(chatty).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


def log_event(logger: logging.Logger, event: str, /, **fields: Any) -> None:
    """Log ``event`` at INFO with ``fields`` (empty ones are left out)."""
    present = {k: v for k, v in fields.items() if v not in (None, "")}
    text = " ".join(f"{key}={_text(value)}" for key, value in present.items())
    logger.info(
        "%s %s" if text else "%s",
        *((event, text) if text else (event,)),
        extra={_EVENT_ATTR: event, _FIELDS_ATTR: present},
    )


def url_for_log(url: str) -> str:
    """A source URL without what may carry a secret: user info, query and fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
    except ValueError:
        return "(unparsable URL)"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if not text or " " in text else text
