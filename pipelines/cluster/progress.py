"""Progress lines of the jobs' stages: done of total, failures, rate and time left, at most every N seconds.

One class for every stage that reports progress: preprocessing and embedding count videos from the driver,
training counts optimiser steps on rank 0 of its Ray Train workers.
"""
from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    """Counts work as it finishes and passes a line to `log` at most every `every` seconds.

    `done`: work finished before this run (a resumed training run), shown in the count but not in the rate;
    `failures`: whether the work can fail (videos) and the line says how many did.
    """

    def __init__(self, label: str, total: int, every: float, log: Callable[[str], None], unit: str = "videos",
                 done: int = 0, failures: bool = True):
        self.label, self.total, self.every, self.log, self.unit = label, total, every, log, unit
        self.done = self.first = done
        self.failed, self.failures = 0, failures
        self.started = self.last = time.monotonic()

    def start(self) -> None:
        """Restart the clock (after start-up that should not count against the rate)."""
        self.started = self.last = time.monotonic()

    def update(self, done: int = 1, failed: int = 0, detail: str = "") -> None:
        """Count `done` more (of which `failed` failed); `detail` ends the line if one is logged now."""
        self.done += done
        self.failed += failed
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.log(self.line(detail))

    def rate(self) -> float:
        return (self.done - self.first) / max(time.monotonic() - self.started, 1e-9)

    def eta(self) -> str:
        """Time left at the rate so far, as [h:]mm:ss; "?" before anything is done."""
        rate = self.rate()
        if rate <= 0:
            return "?"
        minutes, seconds = divmod(round(max(self.total - self.done, 0) / rate), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"

    def line(self, detail: str = "") -> str:
        failed = f", {self.failed} failed" if self.failures else ""
        return (f"{self.label}: {self.done}/{self.total} {self.unit} done{failed}, {self.rate():.2f} {self.unit}/s, "
                f"ETA {self.eta()}" + (f"; {detail}" if detail else ""))
