"""Bounded retries of transient HTTP failures (:class:`Retry`), shared by the forge
client and the LLM reviewer."""

from __future__ import annotations

import random as _random
import time
from typing import Any

from auto_review_gateway.core.httperror import MAX_RETRY_AFTER, HttpError


class Retry:
    """Bounded retries of transient HTTP failures, with jittered exponential backoff.

    ``attempts`` bounds the tries (the first included). Between tries it waits what the
    server asked for (``Retry-After``, see :func:`parse_retry_after`), else, when the
    failure has a ``min_wait`` (GitHub's secondary limit), ``min_wait * 2**n`` (and up
    to a quarter more), else ``base * 2**n`` capped at ``cap``, scaled by a random
    factor in [0.75, 1] (the jitter OpenAI's client applies) so that many clients do
    not retry in step. It never waits past ``deadline`` (a :func:`time.monotonic`
    value): it gives up instead.
    ``sleep``, ``clock`` and ``random`` are injectable so tests never really wait.
    """

    def __init__(
        self,
        attempts: int = 4,
        *,
        base: float = 0.5,
        cap: float = 8.0,
        deadline: float | None = None,
        sleep: Any = None,
        clock: Any = None,
        random: Any = None,
    ) -> None:
        self.attempts = max(1, attempts)
        self.base = base
        self.cap = cap
        self.deadline = deadline
        self.sleep = time.sleep if sleep is None else sleep
        self.clock = time.monotonic if clock is None else clock
        self.random = _random.random if random is None else random

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self.deadline is None else self.deadline - self.clock()

    def delay(self, failure: HttpError, retry: int) -> float:
        """How long to wait before retry number ``retry`` (1 first) after ``failure``."""
        if failure.retry_after is not None:
            return min(failure.retry_after, MAX_RETRY_AFTER)
        if failure.min_wait is not None:  # at least that, doubled at each retry
            floor = failure.min_wait * 2 ** (retry - 1)
            return min(floor * (1 + 0.25 * self.random()), MAX_RETRY_AFTER)
        return min(self.cap, self.base * 2 ** (retry - 1)) * (1 - 0.25 * self.random())

    def call(self, send: Any) -> Any:
        """``send()`` until it returns, retrying transient :class:`HttpError`; the last
        error is raised when tries or time run out, any other error at once."""
        for attempt in range(1, self.attempts + 1):
            try:
                return send()
            except HttpError as exc:
                if not exc.transient or attempt == self.attempts:
                    raise
                wait = self.delay(exc, attempt)
                left = self.remaining()
                if exc.retry_after is not None and exc.retry_after > MAX_RETRY_AFTER:
                    raise
                if left is not None and wait >= left:
                    raise
                self.sleep(wait)
        raise AssertionError("unreachable")
