"""Progress lines for jobs over many videos: done of total, failures and videos/s, at most every N seconds."""
from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    """Counts videos as they finish and passes a line to `log` at most every `every` seconds."""

    def __init__(self, label: str, total: int, every: float, log: Callable[[str], None]):
        self.label, self.total, self.every, self.log = label, total, every, log
        self.done = self.failed = 0
        self.started = self.last = time.monotonic()

    def start(self) -> None:
        """Restart the clock (after start-up that should not count against the rate)."""
        self.started = self.last = time.monotonic()

    def update(self, done: int = 1, failed: int = 0) -> None:
        self.done += done
        self.failed += failed
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.log(self.line())

    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-9)

    def line(self) -> str:
        return (f"{self.label}: {self.done}/{self.total} videos done, {self.failed} failed, "
                f"{self.rate():.2f} videos/s")
