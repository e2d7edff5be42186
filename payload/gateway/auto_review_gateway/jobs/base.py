"""What every job store shares, whatever holds the jobs (SQLite in :mod:`queue`,
PostgreSQL in :mod:`pg_queue`): the answer to a submission, the states, the limits, and
:class:`Changes`, the in-process signal that wakes idle workers."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

STATES = ("pending", "running", "done", "failed")
MAX_ATTEMPTS = 3
MAX_ERROR_CHARS = 500
RECENT_LIMIT = 50
POLL_INTERVAL = 1.0  # seconds an idle worker waits before looking again (another process)
DEFAULT_RETENTION = 30 * 24 * 3600.0  # seconds a finished job is kept
PRUNE_EVERY = 3600.0  # seconds between deletions of old finished jobs


@dataclasses.dataclass(frozen=True)
class Submission:
    """The answer to a store's ``submit``."""

    status: str  # "accepted" | "duplicate" | "full"
    job_id: int | None  # the new job, or the one it duplicates; None when full


class Changes:
    """A counter bumped on every change a waiting worker may care about, a condition to
    wait on it, and listeners told of each bump (e.g. to refresh the queue depth)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._seq = 0
        self.listeners: list[Callable[[], None]] = []

    def bump(self) -> None:
        """Wake the workers waiting for a change, and tell the listeners (best effort)."""
        with self._cond:
            self._seq += 1
            self._cond.notify_all()
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:
                pass

    def current(self) -> int:
        """The counter now, to pass to :meth:`wait`."""
        with self._cond:
            return self._seq

    def wait(self, seq: int, timeout: float) -> None:
        """Wait up to ``timeout`` s for a bump after ``seq`` (see :meth:`current`)."""
        with self._cond:
            if self._seq == seq:
                self._cond.wait(timeout)
