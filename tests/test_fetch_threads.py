"""The resolver's threads, kept between calls: reused, isolated from each other's work, ended on close."""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import wait
from functools import partial

from webhook.resolver import Threads

_MARK: contextvars.ContextVar[str | None] = contextvars.ContextVar("test_mark", default=None)


def test_an_idle_thread_is_reused_and_ends_on_close() -> None:
    threads = Threads("test-fetch")
    try:
        [first] = threads.run_all([threading.get_ident], 4)
        ident = first.result(timeout=10)
        [second] = threads.run_all([threading.get_ident], 4)
        assert second.result(timeout=10) == ident
    finally:
        threads.close()
    for thread in threading.enumerate():
        if thread.ident == ident:
            thread.join(timeout=10)
            assert not thread.is_alive()


def test_work_never_waits_behind_busy_threads() -> None:
    """A call that hangs holds its own threads only: the next call starts on new ones at once."""
    threads = Threads("test-fetch", keep=1)
    release = threading.Event()
    try:
        hanging = threads.run_all([lambda: release.wait(10)] * 3, 3)
        answered = threads.run_all([lambda: "answered"] * 3, 3)
        assert [f.result(timeout=10) for f in answered] == ["answered"] * 3
        assert not any(f.done() for f in hanging)
    finally:
        release.set()
        threads.close()


def test_a_call_runs_on_at_most_its_limit_of_threads_and_cancelled_work_never_starts() -> None:
    threads = Threads("test-fetch")
    gate = threading.Event()
    started: list[int] = []

    def call(n: int) -> int:
        started.append(n)
        gate.wait(10)
        return n

    try:
        futures = threads.run_all([partial(call, n) for n in range(5)], 2)
        done, _ = wait(futures, timeout=0.2)
        assert not done
        for future in futures:
            future.cancel()
        gate.set()
        wait(futures, timeout=10)
        assert sorted(started) == [0, 1]
        assert [f.cancelled() for f in futures] == [False, False, True, True, True]
    finally:
        gate.set()
        threads.close()


def test_what_a_call_leaves_in_its_context_does_not_reach_the_next() -> None:
    """A reused thread starts each call in a fresh context, as a new thread would (a deadline left
    set by abandoned work must not bound the next admission's reads)."""
    threads = Threads("test-fetch")
    try:
        [left] = threads.run_all([lambda: _MARK.set("left behind") and threading.get_ident()], 1)
        ident = left.result(timeout=10)
        [seen] = threads.run_all([lambda: (_MARK.get(), threading.get_ident())], 1)
        assert seen.result(timeout=10) == (None, ident)
    finally:
        threads.close()
