"""The gateway's durable job queue: SQLite in the state dir (the file itself, its schema
and transactions are in :mod:`sqlite_db`; the workers in :mod:`workers`).

Guarantees:

* **Durable acceptance.** :meth:`JobQueue.submit` returns only after the job is committed
  (WAL journal, ``synchronous=FULL``): a request answered 202 after it survives a crash
  or a power cut.
* **Deduplication.** A delivery id seen before is a duplicate (whatever ``force`` says);
  so is a job for a (owner, repo, PR, head SHA) that already has a job not failed, unless
  ``force``. A duplicate stores nothing and names the job it duplicates.
* **Bounded.** With ``max_pending`` jobs pending, :meth:`JobQueue.submit` answers "full"
  and stores nothing (the server answers 503).
* **Exactly-once completion.** A job is claimed in a transaction (pending -> running)
  and marked done or failed in another; only a running job can be marked, so no job is
  completed twice. A job found running when :class:`Workers` start was interrupted by a
  crash or a stop: it runs again (``attempts`` + 1), and after ``max_attempts`` claims it
  is failed instead. Execution is therefore at least once: a crash after the job's effect
  (the review posted) but before ``done`` is committed runs it again, so ``run_job`` must
  find its own effect (the worker marks its review) instead of repeating it.
* **Retries.** A job that failed for a cause that may pass (:meth:`JobQueue.retry`)
  goes back to pending with ``not_before`` set: no worker claims it before then. Its
  ``attempts`` and last ``error`` stay visible (:meth:`JobQueue.recent`).
* **One processor per database.** :meth:`Workers.start` takes an exclusive lock
  (``<db>.lock``, released by the kernel when the process dies): a second gateway on the
  same state dir cannot mistake the first one's running jobs for interrupted ones.

Finished jobs (done or failed) are kept ``retention`` seconds (default 30 days), then
deleted; their delivery ids are forgotten with them.

Over 300 lines: the operations share one lock and one transaction discipline; the
guarantees above hold only together.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

from auto_review_gateway.core import names
from auto_review_gateway.jobs import sqlite_db
from auto_review_gateway.jobs.base import (
    DEFAULT_RETENTION,
    MAX_ATTEMPTS,
    MAX_ERROR_CHARS,
    POLL_INTERVAL,
    PRUNE_EVERY,
    RECENT_LIMIT,
    STATES,
    Changes,
    Submission,
)
from auto_review_gateway.jobs.spec import Job, JobRequest, checked

DEFAULT_STATE_DIR = names.STATE_DIR
DB_NAME = names.JOBS_DB
__all__ = [
    "DEFAULT_RETENTION",
    "MAX_ATTEMPTS",
    "MAX_ERROR_CHARS",
    "POLL_INTERVAL",
    "PRUNE_EVERY",
    "RECENT_LIMIT",
    "STATES",
    "Job",
    "JobQueue",
    "JobRequest",
    "Submission",
]


class ProcessorLock:
    """An exclusive flock on ``<db>.lock``, so one process at a time runs a queue's jobs."""

    def __init__(self, db_path: str) -> None:
        self.path = db_path + ".lock"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RuntimeError(
                f"another auto-review process is running the jobs of {db_path}"
            ) from None
        self.fd: int | None = fd

    def release(self) -> None:
        """Unlock (idempotent)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def default_path() -> str:
    """The queue's database in the state dir (see :func:`names.jobs_db`)."""
    return names.jobs_db()


_checked = checked


def _job(row: sqlite3.Row) -> Job:
    request = JobRequest(
        owner=row["owner"],
        repo=row["repo"],
        pr_number=row["pr_number"],
        head_sha=row["head_sha"],
        base_ref=row["base_ref"],
        clone_url=row["clone_url"],
        reason=row["reason"],
        delivery_id=row["delivery_id"],
        force=bool(row["force"]),
    )
    return Job(id=row["id"], request=request, attempts=row["attempts"])


class JobQueue:
    """The jobs table of one SQLite database, safe to share between threads."""

    lease = None  # no leases: a job left running is resumed at the next start (recover)
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    closed_error: type[BaseException] = sqlite3.ProgrammingError

    def __init__(
        self, path: str, *, max_pending: int = 100, retention: float = DEFAULT_RETENTION
    ) -> None:
        """Open (or create, mode 0600) the database at ``path``: WAL, synchronous=FULL.

        ``max_pending`` bounds the pending jobs; finished jobs older than ``retention``
        seconds are deleted. RuntimeError for a database of a newer schema.
        """
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.path = path
        self.max_pending = max_pending
        self.retention = retention
        self._lock = threading.RLock()
        self.changes = Changes()
        self._last_prune = 0.0
        self._db: sqlite3.Connection | None = sqlite_db.connect(path)
        try:
            sqlite_db.migrate(self._db, path)
            self._prune(time.time())
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ plumbing

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.ProgrammingError("the job queue is closed")
        return self._db

    def _transaction(self) -> sqlite_db.Transaction:
        return sqlite_db.Transaction(self._conn())

    def _bump(self) -> None:
        self.changes.bump()

    def _prune(self, now: float) -> None:
        with self._lock, self._transaction() as db:
            db.execute(
                "DELETE FROM jobs WHERE state IN ('done', 'failed') AND finished_at < ?",
                (now - self.retention,),
            )
        self._last_prune = now

    # ------------------------------------------------------------------ API

    def submit(self, req: JobRequest) -> Submission:
        """Store ``req`` as a pending job, committed before this returns.

        "duplicate" (the job duplicated named) for a delivery id seen before, or for a
        head that already has a pending, running or done job unless ``req.force``;
        "full" (nothing stored) with ``max_pending`` jobs pending. ValueError for a
        malformed request (nothing stored).
        """
        req = _checked(req)
        with self._lock, self._transaction() as db:
            if req.delivery_id is not None:
                row = db.execute(
                    "SELECT id FROM jobs WHERE delivery_id = ?", (req.delivery_id,)
                ).fetchone()
                if row is not None:
                    return Submission("duplicate", row["id"])
            if not req.force:
                row = db.execute(
                    "SELECT id FROM jobs WHERE owner = ? COLLATE NOCASE"
                    " AND repo = ? COLLATE NOCASE AND pr_number = ? AND head_sha = ?"
                    " AND state != 'failed' ORDER BY id DESC LIMIT 1",
                    (req.owner, req.repo, req.pr_number, req.head_sha),
                ).fetchone()
                if row is not None:
                    return Submission("duplicate", row["id"])
            pending = db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'pending'").fetchone()[0]
            if pending >= self.max_pending:
                return Submission("full", None)
            cursor = db.execute(
                "INSERT INTO jobs (owner, repo, pr_number, head_sha, base_ref, clone_url,"
                " reason, delivery_id, force, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    req.owner,
                    req.repo,
                    req.pr_number,
                    req.head_sha,
                    req.base_ref,
                    req.clone_url,
                    req.reason,
                    req.delivery_id,
                    int(req.force),
                    time.time(),
                ),
            )
            job_id = cursor.lastrowid
        self._bump()
        assert job_id is not None
        return Submission("accepted", job_id)

    def claim(self, now: float | None = None) -> Job | None:
        """Take the oldest pending job that is due (``not_before`` passed): running,
        attempts + 1, committed. None if none."""
        now = time.time() if now is None else now
        with self._lock, self._transaction() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE state = 'pending' AND not_before <= ?"
                " ORDER BY id LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?"
                " WHERE id = ? AND state = 'pending'",
                (time.time(), row["id"]),
            )
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone()
        self._bump()
        return _job(row)

    def finish(self, job_id: int, error: str | None = None) -> bool:
        """Mark the running job ``job_id`` done (``error`` None) or failed with the first
        500 characters of ``error``, committed. False if it was not running (then nothing
        changes: a job is completed once)."""
        now = time.time()
        state = "done" if error is None else "failed"
        text = None if error is None else error[:MAX_ERROR_CHARS]
        with self._lock:
            with self._transaction() as db:
                changed = db.execute(
                    "UPDATE jobs SET state = ?, error = ?, finished_at = ?"
                    " WHERE id = ? AND state = 'running'",
                    (state, text, now, job_id),
                ).rowcount
            if now - self._last_prune > PRUNE_EVERY:
                self._prune(now)
        self._bump()
        return changed == 1

    def retry(self, job_id: int, error: str, delay: float) -> bool:
        """Put the running job ``job_id`` back to pending, due in ``delay`` seconds, with
        ``error`` as its last error. False if it was not running."""
        now = time.time()
        with self._lock, self._transaction() as db:
            changed = db.execute(
                "UPDATE jobs SET state = 'pending', error = ?, not_before = ?"
                " WHERE id = ? AND state = 'running'",
                (error[:MAX_ERROR_CHARS], now + max(delay, 0.0), job_id),
            ).rowcount
        self._bump()
        return changed == 1

    def next_due(self) -> float | None:
        """The earliest ``not_before`` of the pending jobs (a time.time() value), or None."""
        with self._lock:
            row = (
                self._conn()
                .execute("SELECT MIN(not_before) FROM jobs WHERE state = 'pending'")
                .fetchone()
            )
        return None if row is None or row[0] is None else float(row[0])

    def recent(self, limit: int = RECENT_LIMIT) -> list[dict[str, Any]]:
        """The newest jobs (at most ``limit``), newest first: what ``GET /jobs`` lists."""
        with self._lock:
            rows = (
                self._conn()
                .execute(
                    "SELECT id, state, owner, repo, pr_number, head_sha, reason, attempts,"
                    " error, created_at, started_at, finished_at, not_before"
                    " FROM jobs ORDER BY id DESC LIMIT ?",
                    (max(1, min(limit, 1000)),),
                )
                .fetchall()
            )
        return [dict(row) for row in rows]

    def retrying(self) -> int:
        """Pending jobs that have already run (waiting for a retry)."""
        with self._lock:
            return int(
                self._conn()
                .execute("SELECT COUNT(*) FROM jobs WHERE state = 'pending' AND attempts > 0")
                .fetchone()[0]
            )

    def oldest_pending_age(self, now: float | None = None) -> float:
        """Seconds since the oldest pending job was accepted (0 when none is pending)."""
        with self._lock:
            row = (
                self._conn()
                .execute("SELECT MIN(created_at) FROM jobs WHERE state = 'pending'")
                .fetchone()
            )
        if row is None or row[0] is None:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - float(row[0]))

    def recover(self, max_attempts: int) -> tuple[list[int], list[Job]]:
        """Jobs left running by a previous process: back to pending, or failed when they
        have had ``max_attempts`` claims. Only for the holder of the worker lock."""
        with self._lock, self._transaction() as db:
            rows = db.execute("SELECT * FROM jobs WHERE state = 'running' ORDER BY id").fetchall()
            resumed = [r["id"] for r in rows if r["attempts"] < max_attempts]
            given_up = [_job(r) for r in rows if r["attempts"] >= max_attempts]
            for job_id in resumed:
                db.execute("UPDATE jobs SET state = 'pending' WHERE id = ?", (job_id,))
            for job in given_up:
                db.execute(
                    "UPDATE jobs SET state = 'failed', error = ?, finished_at = ? WHERE id = ?",
                    (
                        f"interrupted {job.attempts} times (the gateway stopped or crashed"
                        " while the job ran)",
                        time.time(),
                        job.id,
                    ),
                )
        self._bump()
        return resumed, given_up

    def processor_lock(self) -> ProcessorLock:
        """The exclusive lock of the process that runs this queue's jobs (``<db>.lock``);
        RuntimeError if another process holds it."""
        return ProcessorLock(self.path)

    def renew(self, job_ids: Sequence[int]) -> int:
        """No leases here (one process holds the jobs): nothing to renew."""
        return len(job_ids)

    def reap(self, max_attempts: int) -> list[Job]:
        """No leases here: a job left running is failed by :meth:`recover` instead."""
        return []

    def ping(self) -> None:
        """Raise unless the database answers (``/readyz``)."""
        with self._lock:
            self._conn().execute("SELECT 1").fetchone()

    def get(self, job_id: int) -> dict[str, Any] | None:
        """The stored row of a job as a dict (state, attempts, error, ...), None if unknown."""
        with self._lock:
            row = self._conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else dict(row)

    def depth(self) -> int:
        """Jobs pending or running."""
        with self._lock:
            return int(
                self._conn()
                .execute("SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'running')")
                .fetchone()[0]
            )

    def counts(self) -> dict[str, int]:
        """The number of jobs in each state (every state named, 0 included)."""
        with self._lock:
            rows = self._conn().execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
            found = {state: int(n) for state, n in rows}
        return {state: found.get(state, 0) for state in STATES}

    def close(self) -> None:
        """Close the database (idempotent). Jobs keep their state for the next open."""
        with self._lock:
            db, self._db = self._db, None
            if db is not None:
                db.close()
        self._bump()
