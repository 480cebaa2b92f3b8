"""The admission line as `pullcheck serve` writes it: a JSON stream handler, no other handler on the way."""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from tests.test_app import SCHEMA1, RecordingChecker, answer, make_client, review
from webhook.app import LOGGED_IMAGES
from webhook.logs import JsonFormatter, _iso_time
from webhook.policy import Policy
from webhook.text import printable

HOSTILE = "\x1b]0;owned\x07\u202e\x9b31m"
PASSWORD = "s3cret-pw"
MASKED_IMAGE = f"robot:{PASSWORD}@registry.example/app:1"


@contextlib.contextmanager
def served_log() -> Iterator[tuple[logging.Logger, logging.Handler, io.StringIO]]:
    """The admission logger with only a JSON stream handler (as `logs.logging_config` makes), into memory.
    Entered in the test itself: pytest adds its capture handlers to non-propagating loggers per phase."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("pullcheck.admission")
    level, propagate, handlers = logger.level, logger.propagate, logger.handlers[:]
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, handler, stream
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def _admit_once() -> None:
    client, _ = make_client(RecordingChecker({"old:1": SCHEMA1}), Policy(mode="warn"))
    answer(client, review("old:1", f"registry.example/pod{HOSTILE}:1", MASKED_IMAGE))


def test_the_admission_line_is_the_formatters_line_built_without_a_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made.append(factory(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(logging, "_logRecordFactory", counting)
    with served_log() as (logger, handler, stream):
        _admit_once()
        assert not [record for record in made if record.name == logger.name]
        handler.addFilter(lambda _record: True)  # a filter on the way: the record goes through logging
        _admit_once()
        assert [record.name for record in made if record.name == logger.name] == [logger.name]

    fast, through_logging = stream.getvalue().splitlines()
    assert PASSWORD not in fast and fast.isprintable()
    entry, expected = json.loads(fast), json.loads(through_logging)
    for key in ("time", "durationMs"):
        assert type(entry.pop(key)) is type(expected.pop(key))
    assert entry == expected
    assert entry["message"] == "admission" and entry["level"] == "info" and entry["logger"] == logger.name
    assert f"registry.example/pod{printable(HOSTILE)}:1" in entry["images"]
    assert "***@registry.example/app:1" in entry["images"] and "robot" not in fast


def test_no_admission_line_below_the_loggers_or_handlers_level() -> None:
    with served_log() as (logger, handler, stream):
        _admit_once()
        assert stream.getvalue().count("\n") == 1
        logger.setLevel(logging.WARNING)
        _admit_once()
        logger.setLevel(logging.INFO)
        handler.setLevel(logging.WARNING)
        _admit_once()
        assert stream.getvalue().count("\n") == 1


@pytest.mark.parametrize(
    "seconds", [0.0, 1764534902.0, 1764534902.0004999, 1764534902.5, 1764534902.9994999, 1764534902.9999996]
)
def test_a_lines_time_is_datetimes_to_the_millisecond(seconds: float) -> None:
    expected = datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="milliseconds")
    assert _iso_time(seconds) == expected
    assert _iso_time(seconds + 1.5) == datetime.datetime.fromtimestamp(seconds + 1.5, datetime.UTC).isoformat(
        timespec="milliseconds"
    )


def test_a_pod_of_a_thousand_images_logs_the_first_hundred_and_counts_the_rest() -> None:
    images = [f"r.example/a{n}:1" for n in range(1_000)]  # within the test app's 64 KiB body
    client, _ = make_client(RecordingChecker({images[0]: SCHEMA1}), Policy(mode="warn"))
    with served_log() as (_, _, stream):
        answer(client, review(*images))
    [line] = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["images"] == images[:LOGGED_IMAGES]
    assert list(entry["verdicts"]) == images[:LOGGED_IMAGES]
    assert entry["omittedImages"] == len(images) - LOGGED_IMAGES
    assert len(line) < 10_000  # all of them would make some 50 KB


def test_a_pod_within_the_bound_logs_every_image_and_no_count() -> None:
    images = [f"registry.example/app{n}:1" for n in range(LOGGED_IMAGES)]
    client, _ = make_client(RecordingChecker(), Policy(mode="warn"))
    with served_log() as (_, _, stream):
        answer(client, review(*images))
    entry = json.loads(stream.getvalue())
    assert entry["images"] == images and "omittedImages" not in entry
