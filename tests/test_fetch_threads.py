"""The resolver's threads per call: bounded per call, never waiting behind another call's, ending with
their work, letting go of what a failed call held."""

from __future__ import annotations

import gc
import threading
import weakref
from concurrent.futures import wait
from functools import partial

from webhook.resolver import run_on_threads


def test_work_never_waits_behind_busy_threads() -> None:
    """A call that hangs holds its own threads only: the next call starts on new ones at once."""
    release = threading.Event()
    try:
        hanging = run_on_threads([lambda: release.wait(10)] * 3, 3)
        answered = run_on_threads([lambda: "answered"] * 3, 3)
        assert [f.result(timeout=10) for f in answered] == ["answered"] * 3
        assert not any(f.done() for f in hanging)
    finally:
        release.set()


def test_a_call_runs_on_at_most_its_limit_of_threads_and_cancelled_work_never_starts() -> None:
    gate = threading.Event()
    started: list[int] = []

    def call(n: int) -> int:
        started.append(n)
        gate.wait(10)
        return n

    try:
        futures = run_on_threads([partial(call, n) for n in range(5)], 2)
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


class _Held:
    """Stands for what a failed fetch's frames held (a response and its connection)."""


def test_what_a_failed_call_held_is_freed_with_its_future_not_by_the_garbage_collector() -> None:
    held: list[weakref.ref[_Held]] = []

    def failing() -> None:
        response = _Held()
        held.append(weakref.ref(response))
        raise OSError("connection reset")

    gc.disable()
    try:
        # One thread runs both: once the second is done, the first call's thread has let it go.
        future, after = run_on_threads([failing, threading.get_ident], 1)
        after.result(timeout=10)
        assert isinstance(future.exception(), OSError)
        del future
        assert held[0]() is None
    finally:
        gc.enable()
