"""JSON logs: one object per line, with the record's structured fields beside the message; every string
in it escaped (`webhook.text.printable`), whatever a registry or a Pod spec put there."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from typing import Any

import orjson

from webhook.text import printable

# Structured fields travel in `extra={"fields": {...}}`.
FIELDS = "fields"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso_time(record.created),
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
        return _json_line(entry)


# The last whole second written and its text: lines come many to a second, and datetime's formatting
# is a third of what is left of a line's cost. A tuple, so threads read and replace it whole.
_last_second: tuple[float, str] = (-1.0, "")


def _iso_time(seconds: float) -> str:
    """`datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")`, rounded as it rounds."""
    global _last_second
    fraction, whole = math.modf(seconds)
    micros = round(fraction * 1_000_000)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    last = _last_second
    if last[0] != whole:
        last = _last_second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{last[1]}.{micros // 1000:03d}+00:00"


def _json_line(entry: dict[str, Any]) -> str:
    data = dumps(entry)
    line = data.decode()
    # Without a backslash no string held a C0 control (orjson would have escaped it); without DEL an
    # ASCII line holds nothing else unprintable: then escaping would change nothing, so skip the walk.
    if b"\\" not in data and b"\x7f" not in data and (data.isascii() or line.isprintable()):
        return line
    return dumps(_escaped(entry)).decode()


def info_line(logger: logging.Logger, message: str, fields: dict[str, Any]) -> None:
    """`logger.info(message, extra={FIELDS: fields})`, cheaper where it runs once per admission.

    When every handler the record would reach is a plain stream handler with the JSON formatter (as
    `pullcheck serve` configures them), the formatter's very line is written to their streams under each
    handler's lock, without building a LogRecord; any other handler or filter (a test's capture, a
    configuration of one's own) gets the record through logging as before."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handlers = _json_handlers(logger)
    if handlers is None:
        logger.info(message, extra={FIELDS: fields})
        return
    if not handlers:
        return
    entry = {"time": _iso_time(time.time()), "level": "info", "logger": logger.name, "message": message}
    entry.update(fields)
    text = _json_line(entry) + "\n"
    for handler in handlers:
        with handler.lock or contextlib.nullcontext():
            try:
                handler.stream.write(text)
                handler.stream.flush()
            except (OSError, ValueError):  # a closed or broken stream loses the line, not the answer
                pass


def _json_handlers(logger: logging.Logger) -> list[logging.StreamHandler[Any]] | None:
    """The handlers an INFO record of `logger` reaches, if all are plain JSON stream handlers without
    filters on the way; else None."""
    found: list[logging.StreamHandler[Any]] = []
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if (
                type(handler) is not logging.StreamHandler
                or not isinstance(handler.formatter, JsonFormatter)
                or handler.filters
            ):
                return None
            if handler.level <= logging.INFO:
                found.append(handler)
        current = current.parent if current.propagate else None
    return found


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
