"""The job store shared by N gateway replicas: one PostgreSQL database
(``AR_QUEUE_URL=postgresql://...``; the connection and schema are in :mod:`pg_db`).

The same guarantees as the SQLite queue (:mod:`queue`), across processes and hosts:

* **Durable acceptance.** ``submit`` returns after the INSERT committed.
* **Deduplication in the database.** A unique index on (forge, delivery id) and a
  partial unique index on the dedup key (forge, owner, repository, PR, head, kind) of the
  live, unforced jobs: a webhook delivered to two replicas at once, or twice, makes one
  job, whichever replica's INSERT commits first (the other's ``ON CONFLICT DO NOTHING``
  waits for it, then names its job).
* **Claims.** ``SELECT ... FOR UPDATE SKIP LOCKED`` takes the oldest due job no other
  replica is taking, and sets its lease (``lease`` seconds of the database's clock, so
  replicas need no synchronized clocks) and ``claimed_by`` (this replica).
* **Leases.** The workers renew the leases of their running jobs (:meth:`renew`, a
  heartbeat every third of a lease). A running job whose lease expired (its replica was
  killed, lost its network, or froze) is claimed again by any replica, ``attempts`` + 1;
  one that has had ``max_attempts`` claims is failed instead (:meth:`reap`). ``finish``
  and ``retry`` change a job only while this replica still holds it.
* **Post once.** A job keeps its id whichever replica runs it, and the review carries
  ``job-<id>``: a replica that takes over an expired job finds a review posted by the
  one that died (:mod:`forgejo_job`) instead of posting again.
* **Wake-ups.** ``submit`` sends ``NOTIFY auto_review_jobs`` in its transaction; a
  listener connection per replica wakes its idle workers; polling every
  ``poll_interval`` is the fallback (a lost notification, an expired lease, a retry due).

Why a table of our own and not procrastinate or PgQueuer: both are asyncio frameworks
(the gateway's workers are threads, and the rootfs ships no asyncio), each brings its
own schema, worker loop and retry policy, which would stand beside ours (retry_policy,
the post-once marker, the 503 when full) rather than replace them, and neither has the
dedup key of a review; the claim itself is one SQL statement. Not in the rootfs: the
two libraries and their dependencies (procrastinate: asgiref, attrs, croniter,
python-dateutil; PgQueuer: anyio, pydantic with its Rust core); ours needs only psycopg.

Over 300 lines: the operations share one connection, one lock and one reconnect rule.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from auto_review_gateway.jobs import pg_db
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

DEFAULT_LEASE = 60.0  # seconds a claim holds without a heartbeat
KIND = "review"
NOW = "extract(epoch FROM clock_timestamp())::float8"  # the database's clock, in seconds
LISTEN_BACKOFF_MAX = 5.0


class StoreClosed(Exception):
    """The store was closed: nothing more to claim or record."""


def _job(row: dict[str, Any]) -> Job:
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


class PgJobQueue:
    """The jobs of one forge in a PostgreSQL database, safe to share between threads and
    between replicas."""

    def __init__(
        self,
        url: str,
        *,
        forge: str,
        max_pending: int = 100,
        retention: float = DEFAULT_RETENTION,
        lease: float = DEFAULT_LEASE,
        poll_interval: float = POLL_INTERVAL,
        max_attempts: int = MAX_ATTEMPTS,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        """Connect, migrate the schema (under the advisory lock), start listening.

        ``forge`` names the kind of forge whose jobs these are (``forgejo``, ``github``):
        a Forgejo and a GitHub gateway may share the database. DatabaseError (one line,
        with the fix) if the database cannot be used.
        """
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.psycopg = pg_db.driver()
        self.errors: tuple[type[BaseException], ...] = (self.psycopg.Error, pg_db.DatabaseError)
        self.closed_error: type[BaseException] = StoreClosed
        self.url, self.forge = url, forge
        self.path = pg_db.where(url)  # for messages: no credentials
        self.max_pending, self.retention = max_pending, retention
        self.lease, self.poll_interval, self.max_attempts = lease, poll_interval, max_attempts
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.changes = Changes()
        self._log = log
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._last_prune = 0.0
        self._conn: Any = pg_db.connect(self.psycopg, url)
        try:
            applied = pg_db.migrate(self._conn)
        except BaseException:
            self._conn.close()
            raise
        if applied:
            log(f"auto-review: job database {self.path}: schema {applied[-1]} applied")
        self._listener = threading.Thread(target=self._listen, name="jobs-listen", daemon=True)
        self._listener.start()

    # ------------------------------------------------------------------ plumbing

    def _run(self, work: Callable[[Any], Any]) -> Any:
        """``work(connection)`` under the lock; a lost connection is dropped (the error
        propagates) and the next call connects again."""
        with self._lock:
            if self._closed.is_set():
                raise StoreClosed("the job store is closed")
            if self._conn is None or self._conn.closed:
                self._conn = pg_db.connect(self.psycopg, self.url)
            try:
                return work(self._conn)
            except (self.psycopg.OperationalError, self.psycopg.InterfaceError):
                conn, self._conn = self._conn, None
                conn.close()
                raise

    def _rows(self, conn: Any, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        with conn.cursor(row_factory=self.psycopg.rows.dict_row) as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def _listen(self) -> None:
        """Wake the workers on every NOTIFY; reconnect with backoff when the database goes."""
        backoff = self.poll_interval
        while not self._closed.is_set():
            try:
                conn = pg_db.connect(self.psycopg, self.url)
            except pg_db.DatabaseError:
                self._closed.wait(backoff)
                backoff = min(backoff * 2, LISTEN_BACKOFF_MAX)
                continue
            backoff = self.poll_interval
            try:
                conn.execute(f"LISTEN {pg_db.NOTIFY_CHANNEL}")
                self.changes.bump()  # (re)connected: whatever was missed, look now
                while not self._closed.is_set():
                    readable, _, _ = select.select([conn.fileno()], [], [], 1.0)
                    if not readable:
                        continue
                    conn.pgconn.consume_input()  # OperationalError once the server is gone
                    woke = False
                    while conn.pgconn.notifies() is not None:
                        woke = True
                    if woke:
                        self.changes.bump()
            except (self.psycopg.Error, OSError, ValueError):
                pass  # lost: connect again
            finally:
                conn.close()

    def _prune(self, conn: Any) -> None:
        conn.execute(
            f"DELETE FROM jobs WHERE forge = %s AND state IN ('done', 'failed')"
            f" AND finished_at < {NOW} - %s",
            (self.forge, self.retention),
        )
        self._last_prune = time.monotonic()

    # ------------------------------------------------------------------ API

    def submit(self, req: JobRequest) -> Submission:
        """Store ``req`` as a pending job, committed before this returns; "duplicate"
        (naming the job) or "full" as :meth:`queue.JobQueue.submit` says."""
        req = checked(req)
        head = (
            "SELECT id FROM jobs WHERE forge = %s AND lower(owner) = lower(%s)"
            " AND lower(repo) = lower(%s) AND pr_number = %s AND head_sha = %s AND kind = %s"
            " AND state <> 'failed' ORDER BY id DESC LIMIT 1"
        )
        key = (self.forge, req.owner, req.repo, req.pr_number, req.head_sha, KIND)

        def existing(conn: Any) -> int | None:
            if req.delivery_id is not None:
                row = conn.execute(
                    "SELECT id FROM jobs WHERE forge = %s AND delivery_id = %s",
                    (self.forge, req.delivery_id),
                ).fetchone()
                if row is not None:
                    return int(row[0])
            if not req.force:
                row = conn.execute(head, key).fetchone()
                if row is not None:
                    return int(row[0])
            return None

        def work(conn: Any) -> Submission:
            with conn.transaction():
                found = existing(conn)
                if found is not None:
                    return Submission("duplicate", found)
                pending = conn.execute(
                    "SELECT COUNT(*) FROM jobs WHERE forge = %s AND state = 'pending'",
                    (self.forge,),
                ).fetchone()[0]
                if pending >= self.max_pending:
                    return Submission("full", None)
                row = conn.execute(
                    "INSERT INTO jobs (forge, kind, owner, repo, pr_number, head_sha, base_ref,"
                    " clone_url, reason, delivery_id, force, created_at)"
                    f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, {NOW})"
                    " ON CONFLICT DO NOTHING RETURNING id",
                    (
                        self.forge,
                        KIND,
                        req.owner,
                        req.repo,
                        req.pr_number,
                        req.head_sha,
                        req.base_ref,
                        req.clone_url,
                        req.reason,
                        req.delivery_id,
                        req.force,
                    ),
                ).fetchone()
                if row is None:  # another replica's INSERT of the same key committed first
                    return Submission("duplicate", existing(conn))
                conn.execute("SELECT pg_notify(%s, '')", (pg_db.NOTIFY_CHANNEL,))
                return Submission("accepted", int(row[0]))

        submission: Submission = self._run(work)
        if submission.status == "accepted":
            self.changes.bump()
        return submission

    def claim(self, now: float | None = None) -> Job | None:
        """Take the oldest due pending job, or a running one whose lease expired (with
        fewer than ``max_attempts`` claims), that no other replica is taking: running,
        attempts + 1, leased to this replica. None if none. (``now`` is ignored: the
        database's clock decides.)"""

        def work(conn: Any) -> list[dict[str, Any]]:
            with conn.transaction():
                return self._rows(
                    conn,
                    "WITH next AS (SELECT id FROM jobs WHERE forge = %(forge)s AND"
                    f" ((state = 'pending' AND not_before <= {NOW}) OR (state = 'running'"
                    f" AND lease_until < {NOW} AND attempts < %(max)s))"
                    " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)"
                    f" UPDATE jobs SET state = 'running', attempts = jobs.attempts + 1,"
                    f" started_at = {NOW}, lease_until = {NOW} + %(lease)s, claimed_by = %(me)s"
                    " FROM next WHERE jobs.id = next.id RETURNING jobs.*",
                    {
                        "forge": self.forge,
                        "max": self.max_attempts,
                        "lease": self.lease,
                        "me": self.replica,
                    },
                )

        rows = self._run(work)
        if not rows:
            return None
        self.changes.bump()
        return _job(rows[0])

    def renew(self, job_ids: Sequence[int]) -> int:
        """Extend the leases of this replica's running jobs ``job_ids``; how many it holds."""
        if not job_ids:
            return 0

        def work(conn: Any) -> int:
            cur = conn.execute(
                f"UPDATE jobs SET lease_until = {NOW} + %s"
                " WHERE id = ANY(%s) AND state = 'running' AND claimed_by = %s",
                (self.lease, list(job_ids), self.replica),
            )
            return int(cur.rowcount)

        return int(self._run(work))

    def reap(self, max_attempts: int) -> list[Job]:
        """Fail the running jobs whose lease expired after ``max_attempts`` claims (their
        replicas died that often while running them); the jobs failed."""

        def work(conn: Any) -> list[dict[str, Any]]:
            with conn.transaction():
                return self._rows(
                    conn,
                    f"UPDATE jobs SET state = 'failed', finished_at = {NOW},"
                    " error = 'interrupted ' || attempts || ' times (the replica running it"
                    " stopped or lost its lease)' WHERE forge = %s AND state = 'running'"
                    f" AND lease_until < {NOW} AND attempts >= %s RETURNING *",
                    (self.forge, max_attempts),
                )

        rows = self._run(work)
        if rows:
            self.changes.bump()
        return [_job(row) for row in rows]

    def _mark(self, sql: str, params: tuple[Any, ...]) -> bool:
        def work(conn: Any) -> bool:
            changed = conn.execute(sql, params).rowcount == 1
            if time.monotonic() - self._last_prune > PRUNE_EVERY:
                self._prune(conn)
            return changed

        changed = bool(self._run(work))
        self.changes.bump()
        return changed

    def finish(self, job_id: int, error: str | None = None) -> bool:
        """Mark the job done (``error`` None) or failed; False if this replica no longer
        holds it (then nothing changes)."""
        state = "done" if error is None else "failed"
        text = None if error is None else error[:MAX_ERROR_CHARS]
        return self._mark(
            f"UPDATE jobs SET state = %s, error = %s, finished_at = {NOW}, lease_until = NULL"
            " WHERE id = %s AND state = 'running' AND claimed_by = %s",
            (state, text, job_id, self.replica),
        )

    def retry(self, job_id: int, error: str, delay: float) -> bool:
        """Put the job back to pending, due in ``delay`` seconds; False if this replica no
        longer holds it."""
        return self._mark(
            f"UPDATE jobs SET state = 'pending', error = %s, not_before = {NOW} + %s,"
            " lease_until = NULL, claimed_by = NULL"
            " WHERE id = %s AND state = 'running' AND claimed_by = %s",
            (error[:MAX_ERROR_CHARS], max(delay, 0.0), job_id, self.replica),
        )

    def _scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self._run(lambda conn: conn.execute(sql, params).fetchone()[0])

    def next_due(self) -> float | None:
        """The earliest ``not_before`` of the pending jobs (seconds since the epoch)."""
        due = self._scalar(
            "SELECT MIN(not_before) FROM jobs WHERE forge = %s AND state = 'pending'",
            (self.forge,),
        )
        return None if due is None else float(due)

    def recent(self, limit: int = RECENT_LIMIT) -> list[dict[str, Any]]:
        """The newest jobs, newest first: what ``GET /jobs`` lists."""
        return self._run(
            lambda conn: self._rows(
                conn,
                "SELECT id, state, owner, repo, pr_number, head_sha, reason, attempts, error,"
                " created_at, started_at, finished_at, not_before FROM jobs WHERE forge = %s"
                " ORDER BY id DESC LIMIT %s",
                (self.forge, max(1, min(limit, 1000))),
            )
        )

    def oldest_pending_age(self, now: float | None = None) -> float:
        """Seconds since the oldest pending job was accepted, on the database's clock (0
        when none is pending; ``now`` is ignored)."""
        age = self._scalar(
            f"SELECT {NOW} - MIN(created_at) FROM jobs WHERE forge = %s AND state = 'pending'",
            (self.forge,),
        )
        return 0.0 if age is None else max(0.0, float(age))

    def retrying(self) -> int:
        """Pending jobs that have already run (waiting for a retry)."""
        return int(
            self._scalar(
                "SELECT COUNT(*) FROM jobs WHERE forge = %s AND state = 'pending' AND attempts > 0",
                (self.forge,),
            )
        )

    def processor_lock(self) -> None:
        """None: any number of replicas run the jobs (leases keep them apart)."""
        return None

    def recover(self, max_attempts: int) -> tuple[list[int], list[Job]]:
        """Nothing to do at start: a job left running by a dead replica is taken again
        when its lease expires (:meth:`claim`, :meth:`reap`)."""
        return [], []

    def get(self, job_id: int) -> dict[str, Any] | None:
        """The stored row of a job as a dict, None if unknown."""
        rows = self._run(
            lambda conn: self._rows(conn, "SELECT * FROM jobs WHERE id = %s", (job_id,))
        )
        return rows[0] if rows else None

    def depth(self) -> int:
        """Jobs pending or running."""
        return int(
            self._scalar(
                "SELECT COUNT(*) FROM jobs WHERE forge = %s AND state IN ('pending', 'running')",
                (self.forge,),
            )
        )

    def counts(self) -> dict[str, int]:
        """The number of jobs in each state (every state named, 0 included)."""
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT state, COUNT(*) FROM jobs WHERE forge = %s GROUP BY state", (self.forge,)
            ).fetchall()
        )
        found = {state: int(n) for state, n in rows}
        return {state: found.get(state, 0) for state in STATES}

    def reconcile_turn(self, interval: float) -> bool:
        """Whether this replica runs the reconciler's round now: no other replica is
        taking the turn (an advisory lock) and none took it in the last ``interval``
        seconds. Taking it records the time."""

        def work(conn: Any) -> bool:
            with conn.transaction():
                got = conn.execute(
                    "SELECT pg_try_advisory_xact_lock(%s)", (pg_db.RECONCILE_LOCK,)
                ).fetchone()[0]
                if not got:
                    return False
                row = conn.execute(
                    f"INSERT INTO reconcile_turns (forge, last_run) VALUES (%s, {NOW})"
                    f" ON CONFLICT (forge) DO UPDATE SET last_run = {NOW}"
                    f" WHERE reconcile_turns.last_run <= {NOW} - %s RETURNING forge",
                    (self.forge, interval),
                ).fetchone()
                return row is not None

        return bool(self._run(work))

    def repositories(self) -> list[tuple[str, str]]:
        """(owner, repo) of every repository this forge's jobs named, oldest first."""
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT owner, repo FROM jobs WHERE forge = %s GROUP BY owner, repo"
                " ORDER BY MIN(id)",
                (self.forge,),
            ).fetchall()
        )
        return [(str(owner), str(repo)) for owner, repo in rows]

    def known_head(self, owner: str, repo: str, pr_number: int, head_sha: str) -> bool:
        """Whether any job (whatever its state) was ever queued for this head."""
        return bool(
            self._scalar(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE forge = %s AND lower(owner) ="
                " lower(%s) AND lower(repo) = lower(%s) AND pr_number = %s AND head_sha = %s)",
                (self.forge, owner, repo, pr_number, head_sha.lower()),
            )
        )

    def ping(self) -> None:
        """Raise unless the database answers now (``/readyz``)."""
        self._scalar("SELECT 1")

    def close(self) -> None:
        """Close the connections (idempotent); the jobs stay in the database."""
        self._closed.set()
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
        self.changes.bump()
