"""One deadline for a whole resolution, shared by every request it makes, and the number of registry
requests it may make: time bounds a slow registry, the count a fast one that answers with ever more
documents to fetch (a manifest of 28,000 layers, an index of thousands of children)."""

from __future__ import annotations

import itertools
import time

from webhook.errors import DeadlineExceeded


class Deadline:
    def __init__(self, seconds: float, requests: int | None = None) -> None:
        self.seconds = seconds
        self.requests = requests  # registry requests allowed; None: not counted
        self._end = time.monotonic() + seconds
        self._sent = itertools.count(1)  # its next() is atomic: threads of one resolution share it

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self._end

    def check(self, what: str = "registry request") -> float:
        """Return the seconds left, or raise DeadlineExceeded when none are."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"{what} did not finish within the {self.seconds:g}s deadline")
        return left

    def spend(self, what: str) -> float:
        """`check` for one more registry request, which also counts against the requests allowed."""
        if self.requests is not None and next(self._sent) > self.requests:
            raise DeadlineExceeded(
                f"{what} not sent: the {self.requests} registry requests allowed "
                "(registryRequestsPerAdmission) are spent"
            )
        return self.check(what)
