"""One deadline for a whole resolution, shared by every request it makes."""

from __future__ import annotations

import time

from webhook.errors import DeadlineExceeded


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

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
