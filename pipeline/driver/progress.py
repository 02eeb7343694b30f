"""A terminal progress line for long runs: archs done, failures, rate and time left.

On a terminal it redraws one line; elsewhere (CI, ``ray job logs``) it prints a line at most every 30 s.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, initial: int = 0, enabled: bool = True, stream=None):
        self.total, self.done, self.failed = total, initial, 0
        self.initial = initial
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > initial
        self.tty = self.enabled and self.stream.isatty()
        self.start = self.last = time.monotonic()
        if self.enabled:
            self._draw(force=True)

    def update(self, n: int, failed: int = 0) -> None:
        self.done += n
        self.failed = failed
        if self.enabled:
            self._draw(force=self.done >= self.total)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < (0.5 if self.tty else 30.0):
            return
        self.last = now
        rate = (self.done - self.initial) / max(now - self.start, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        eta = f"{left / 60:.1f} min left" if left == left else "estimating"
        text = (f"[{bar}] {self.done}/{self.total} archs, {self.failed} failed, "
                f"{rate:.2f} archs/s, {eta}")
        if self.tty:
            self.stream.write("\r" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
