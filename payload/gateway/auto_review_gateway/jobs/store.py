"""The job store the server and the workers use, whichever database holds it:
:class:`Store` is the interface, :func:`open_store` picks the implementation.

SQLite (:class:`queue.JobQueue`, the default) is a file in the state dir: one gateway
process runs its jobs. PostgreSQL (:class:`pg_queue.PgJobQueue`, ``AR_QUEUE_URL``) is
shared by N replicas: leases instead of the single processor's lock.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from auto_review_gateway.jobs.base import Changes, Submission
from auto_review_gateway.jobs.spec import Job, JobRequest

URL_SCHEMES = ("postgresql", "postgres")


class Store(Protocol):
    """What the workers and the server need of a job store (see :mod:`queue` for the
    guarantees every implementation keeps)."""

    path: str  # where the jobs are, for messages (never a password)
    changes: Changes  # bumped on every change; idle workers wait on it
    errors: tuple[type[BaseException], ...]  # what a database failure raises
    closed_error: type[BaseException]  # what any call raises once closed
    lease: float | None  # seconds a claim holds unless renewed; None: no leases

    def submit(self, req: JobRequest) -> Submission:
        """Store a job: accepted, duplicate or full."""
        ...

    def claim(self, now: float | None = None) -> Job | None:
        """Take the next due job, or None."""
        ...

    def renew(self, job_ids: Sequence[int]) -> int:
        """Extend the leases of these running jobs of ours; how many are still ours."""
        ...

    def reap(self, max_attempts: int) -> list[Job]:
        """Fail the jobs whose lease expired after ``max_attempts`` claims."""
        ...

    def processor_lock(self) -> Any:
        """A lock (``.release()``) held while this process runs the jobs, or None where
        several processes may (RuntimeError if another process holds it)."""
        ...

    def recover(self, max_attempts: int) -> tuple[list[int], list[Job]]:
        """At start: jobs left running put back (ids) or failed (jobs)."""
        ...

    def finish(self, job_id: int, error: str | None = None) -> bool:
        """Mark a running job done or failed; False if it was not ours and running."""
        ...

    def retry(self, job_id: int, error: str, delay: float) -> bool:
        """Put a running job back, due in ``delay`` s; False if it was not ours and running."""
        ...

    def next_due(self) -> float | None:
        """The earliest time a pending job is due, or None."""
        ...

    def recent(self, limit: int = ...) -> list[dict[str, Any]]:
        """The newest jobs, newest first."""
        ...

    def oldest_pending_age(self, now: float | None = None) -> float:
        """Seconds since the oldest pending job was accepted (0 when none is)."""
        ...

    def retrying(self) -> int:
        """Pending jobs waiting for a retry."""
        ...

    def get(self, job_id: int) -> dict[str, Any] | None:
        """One job's stored row."""
        ...

    def depth(self) -> int:
        """Jobs pending or running."""
        ...

    def counts(self) -> dict[str, int]:
        """Jobs by state."""
        ...

    def ping(self) -> None:
        """Raise unless the database answers."""
        ...

    def close(self) -> None:
        """Close (idempotent)."""
        ...


def is_database_url(url: str) -> bool:
    """Whether ``url`` is a PostgreSQL URL (``postgresql://`` or ``postgres://``)."""
    scheme, sep, rest = url.partition("://")
    return bool(sep) and scheme.lower() in URL_SCHEMES and bool(rest)


def open_store(
    url: str | None,
    *,
    state_dir: str,
    db_name: str,
    forge: str,
    max_pending: int,
    lease: float,
    poll_interval: float,
    log: Callable[[str], None],
) -> Store:
    """The SQLite queue in ``state_dir`` when ``url`` is empty, else the PostgreSQL store
    at ``url`` for ``forge``'s jobs. ``pg_db.DatabaseError`` when that one cannot be used."""
    if not url:
        from auto_review_gateway.jobs.queue import JobQueue

        return JobQueue(os.path.join(state_dir, db_name), max_pending=max_pending)
    from auto_review_gateway.jobs.pg_queue import PgJobQueue

    return PgJobQueue(
        url,
        forge=forge,
        max_pending=max_pending,
        lease=lease,
        poll_interval=poll_interval,
        log=log,
    )
