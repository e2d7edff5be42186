"""A one-line progress bar on stderr (TTY only): bytes, rate, ETA."""

from __future__ import annotations

import sys
import time


class Progress:
    """Counts bytes toward a known total and redraws at most ten times a second."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.enabled = enabled and sys.stderr.isatty()
        self.started = time.monotonic()
        self._drawn = 0.0

    def __call__(self, nbytes: int) -> None:
        self.done += nbytes
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._drawn >= 0.1:
            self._drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(frac * 24)
        sys.stderr.write(
            f"\r{self.label} [{bar:<24}] {self.done / 1e6:6.1f}/{self.total / 1e6:.1f} MB"
            f" {rate / 1e6:6.1f} MB/s ETA {eta:4.1f}s "
        )
        sys.stderr.flush()

    def finish(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self._draw(time.monotonic())
            sys.stderr.write("\n")
            sys.stderr.flush()
