"""JSON logs: one object per line, with the record's structured fields beside the message; every string
in it escaped (`webhook.text.printable`), whatever a registry or a Pod spec put there."""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

import orjson

from webhook.text import printable

# Structured fields travel in `extra={"fields": {...}}`.
FIELDS = "fields"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            entry["error"] = f"{type(error).__name__}: {error}"
        data = dumps(entry)
        line = data.decode()
        # Without a backslash no string held a C0 control (orjson would have escaped it); without DEL an
        # ASCII line holds nothing else unprintable: then escaping would change nothing, so skip the walk.
        if b"\\" not in data and b"\x7f" not in data and (data.isascii() or line.isprintable()):
            return line
        return dumps(_escaped(entry)).decode()


def _escaped(value: Any) -> Any:
    """Every string escaped with `printable`, keys and nested ones too: orjson writes DEL, C1 controls
    and bidi overrides raw, and a log line is read on a terminal."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {_escaped(key): _escaped(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_escaped(item) for item in value]
    return value


def dumps(value: Any) -> bytes:
    """Compact JSON, fast (orjson); a string orjson refuses (a lone surrogate, as a registry's
    document may carry) falls back to the standard encoder instead of failing the answer or line."""
    try:
        return orjson.dumps(value, default=str)
    except orjson.JSONEncodeError:
        return json.dumps(value, default=str, separators=(",", ":")).encode()


def quiet_records() -> None:
    """Records without the caller's file and line, thread and process: the JSON line shows none of
    them, and finding the caller walks the stack on every record."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` that sends pullcheck's and gunicorn's logs to stderr as JSON."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": handler},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "WARNING", "handlers": ["stderr"], "propagate": False},
            # HTTP clients log every request at INFO: registry traffic is in the metrics instead.
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
            "kubernetes": {"level": "WARNING"},
            "urllib3": {"level": "WARNING"},
        },
    }
