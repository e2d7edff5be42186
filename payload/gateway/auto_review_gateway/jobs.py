"""The gateway's durable job queue (SQLite in the state dir) and its bounded pool of workers.

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
  (the review posted) but before ``done`` is committed runs it again, so ``run_job`` keeps
  that window small by returning right after its last effect.
* **One processor per database.** :meth:`Workers.start` takes an exclusive lock
  (``<db>.lock``, released by the kernel when the process dies): a second gateway on the
  same state dir cannot mistake the first one's running jobs for interrupted ones.

Finished jobs (done or failed) are kept ``retention`` seconds (default 30 days), then
deleted; their delivery ids are forgotten with them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from auto_review_gateway.metrics import Metrics

DEFAULT_STATE_DIR = "/var/lib/auto-review"
DB_NAME = "jobs.sqlite3"
SCHEMA_VERSION = 1
STATES = ("pending", "running", "done", "failed")
MAX_ATTEMPTS = 3
MAX_ERROR_CHARS = 500
DEFAULT_RETENTION = 30 * 24 * 3600.0  # seconds a finished job is kept
PRUNE_EVERY = 3600.0  # seconds between deletions of old finished jobs
POLL_INTERVAL = 1.0  # seconds an idle worker waits before looking again (another process)
BUSY_TIMEOUT_MS = 10_000

_NAME = re.compile(r"\A[A-Za-z0-9_.-]+\Z")
_SHA = re.compile(r"\A(?:[0-9a-f]{40}|[0-9a-f]{64})\Z")
_LIMITS = {"base_ref": 255, "clone_url": 2048, "reason": 200, "delivery_id": 200}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    state       TEXT    NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'running', 'done', 'failed')),
    owner       TEXT    NOT NULL,
    repo        TEXT    NOT NULL,
    pr_number   INTEGER NOT NULL,
    head_sha    TEXT    NOT NULL,
    base_ref    TEXT    NOT NULL,
    clone_url   TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    delivery_id TEXT    UNIQUE,
    force       INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    created_at  REAL    NOT NULL,
    started_at  REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, id);
CREATE INDEX IF NOT EXISTS jobs_by_head
    ON jobs (owner COLLATE NOCASE, repo COLLATE NOCASE, pr_number, head_sha);
"""


def default_path() -> str:
    """The queue's database in the state dir: ``$AUTO_REVIEW_STATE_DIR_INSIDE`` (else
    ``/var/lib/auto-review``) + ``/jobs.sqlite3``."""
    state_dir = os.environ.get("AUTO_REVIEW_STATE_DIR_INSIDE") or DEFAULT_STATE_DIR
    return os.path.join(state_dir, DB_NAME)


def _log(message: str) -> None:
    print(f"auto-review: {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class JobRequest:
    """What to review and why; the server builds one per webhook or CI call."""

    owner: str
    repo: str
    pr_number: int
    head_sha: str
    base_ref: str
    clone_url: str
    reason: str  # e.g. "pull_request:opened", "issue_comment:re-review", "ci"
    delivery_id: str | None = None
    force: bool = False

    @property
    def pr(self) -> str:
        """``OWNER/REPO#N``, as forgejo.Publication wants it."""
        return f"{self.owner}/{self.repo}#{self.pr_number}"


@dataclasses.dataclass(frozen=True)
class Submission:
    """The answer to :meth:`JobQueue.submit`."""

    status: str  # "accepted" | "duplicate" | "full"
    job_id: int | None  # the new job, or the one it duplicates; None when full


@dataclasses.dataclass(frozen=True)
class Job:
    """A claimed job: ``attempts`` counts the claims so far, this one included (1 first)."""

    id: int
    request: JobRequest
    attempts: int


def _checked(req: JobRequest) -> JobRequest:
    """``req`` with the head SHA lower-cased and an empty delivery id as None;
    ValueError naming the first bad field."""
    for name in ("owner", "repo"):
        value = getattr(req, name)
        if not isinstance(value, str) or not _NAME.match(value) or value in (".", ".."):
            raise ValueError(f"{name} must match [A-Za-z0-9_.-]+")
    if not isinstance(req.pr_number, int) or isinstance(req.pr_number, bool) or req.pr_number < 1:
        raise ValueError("pr_number must be a positive integer")
    if not isinstance(req.head_sha, str) or not _SHA.match(req.head_sha.lower()):
        raise ValueError("head_sha must be a full hex commit SHA")
    for name, limit in _LIMITS.items():
        value = getattr(req, name)
        if value is None and name == "delivery_id":
            continue
        if not isinstance(value, str) or len(value) > limit or "\0" in value:
            raise ValueError(f"{name} must be a string of at most {limit} characters")
        if not value and name in ("base_ref", "clone_url"):
            raise ValueError(f"{name} must not be empty")
    return dataclasses.replace(
        req,
        head_sha=req.head_sha.lower(),
        delivery_id=req.delivery_id or None,
        force=bool(req.force),
    )


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


def _create_private(path: str) -> None:
    """Create ``path`` (and its directory) readable by us only; tighten an existing file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class JobQueue:
    """The jobs table of one SQLite database, safe to share between threads."""

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
        self._changed = threading.Condition(threading.Lock())
        self._seq = 0  # bumped on every change a waiting worker may care about
        self._listeners: list[Callable[[], None]] = []
        self._last_prune = 0.0
        _create_private(path)
        self._db: sqlite3.Connection | None = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        db = self._conn()
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"{self.path}: cannot use a write-ahead log (journal mode {mode})")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        with self._transaction():
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path}: job database of a newer auto-review (schema {version})"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._prune(time.time())

    # ------------------------------------------------------------------ plumbing

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.ProgrammingError("the job queue is closed")
        return self._db

    class _Tx:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an exception)."""

        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind: type[BaseException] | None, exc: Any, tb: Any) -> None:
            if kind is None:
                try:
                    self.db.execute("COMMIT")
                    return
                except BaseException:
                    if self.db.in_transaction:
                        self.db.execute("ROLLBACK")
                    raise
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")

    def _transaction(self) -> JobQueue._Tx:
        return JobQueue._Tx(self._conn())

    def _bump(self) -> None:
        """Wake the workers waiting for a change, and tell the listeners."""
        with self._changed:
            self._seq += 1
            self._changed.notify_all()
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                pass

    def _current_seq(self) -> int:
        with self._changed:
            return self._seq

    def _wait(self, seq: int, timeout: float) -> None:
        """Wait up to ``timeout`` s for a change after ``seq`` (see :meth:`_current_seq`)."""
        with self._changed:
            if self._seq == seq:
                self._changed.wait(timeout)

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

    def claim(self) -> Job | None:
        """Take the oldest pending job: running, attempts + 1, committed. None if none."""
        with self._lock, self._transaction() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE state = 'pending' ORDER BY id LIMIT 1"
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

    def _recover(self, max_attempts: int) -> tuple[list[int], list[Job]]:
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


class _ProcessorLock:
    """An exclusive flock on ``<db>.lock``, so one process at a time runs a queue's jobs."""

    def __init__(self, db_path: str) -> None:
        import fcntl

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
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def failure_cause(exc: BaseException) -> str:
    """The ``cause`` label of a failed review: the ReviewError's exit code name
    (``clone``, ``bad_ref``, ``reviewer``, ``config``, ``post``, ``usage``) or the
    exception's class name."""
    from auto_review_gateway import model

    code = getattr(exc, "exit_code", None)
    if isinstance(exc, model.ReviewError) and isinstance(code, int):
        for name, value in vars(model).items():
            if name.startswith("EXIT_") and value == code:
                return name[len("EXIT_") :].lower()
        return f"exit_{code}"
    return type(exc).__name__


def _error_text(exc: BaseException) -> str:
    from auto_review_gateway.gitrepo import redact

    message = " ".join(str(exc).split())
    text = f"{failure_cause(exc)}: {message}" if message else failure_cause(exc)
    return redact(text)[:MAX_ERROR_CHARS]


class Workers:
    """A bounded pool of threads that claim jobs from a queue and run ``run_job`` on them."""

    def __init__(
        self,
        queue: JobQueue,
        run_job: Callable[[Job], None],
        *,
        concurrency: int,
        metrics: Metrics,
        on_abandoned: Callable[[Job], None] | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        """Prepare ``concurrency`` workers (nothing runs before :meth:`start`).

        ``on_abandoned`` is called (best effort, in a background thread) with each job
        that :meth:`start` fails for having been interrupted ``max_attempts`` times, e.g.
        to set an ``error`` commit status.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.queue = queue
        self.run_job = run_job
        self.concurrency = concurrency
        self.metrics = metrics
        self.on_abandoned = on_abandoned
        self.max_attempts = max_attempts
        self.poll_interval = poll_interval
        self._stopping = threading.Event()
        self._claiming = threading.Lock()  # no claim can start once stop() has begun
        self._guard = threading.Lock()
        self._alive = 0
        self._threads: list[threading.Thread] = []
        self._processor_lock: _ProcessorLock | None = None
        self._started = False

    def start(self) -> None:
        """Take the queue's processor lock, put interrupted jobs back in the queue (or fail
        them after ``max_attempts``), then start the workers; they run the oldest jobs
        first. RuntimeError if another process holds the lock."""
        if self._started:
            raise RuntimeError("workers already started")
        self._processor_lock = _ProcessorLock(self.queue.path)
        try:
            resumed, abandoned = self.queue._recover(self.max_attempts)
        except BaseException:
            self._release_lock()
            raise
        self._started = True
        if resumed:
            _log(f"resuming {len(resumed)} interrupted job(s): {', '.join(map(str, resumed))}")
        for job in abandoned:
            self.metrics.inc("reviews_failed_total", {"cause": "interrupted"})
            _log(f"job {job.id} {job.request.pr} failed: interrupted {job.attempts} times")
        if abandoned and self.on_abandoned is not None:
            threading.Thread(
                target=self._abandon, args=(abandoned,), name="jobs-abandoned", daemon=True
            ).start()
        self.queue._listeners.append(self._refresh_depth)
        self._refresh_depth()
        self._alive = self.concurrency
        for i in range(self.concurrency):
            thread = threading.Thread(target=self._loop, name=f"jobs-worker-{i}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, grace: float) -> None:
        """Stop claiming jobs and wait up to ``grace`` s for the running ones to finish.

        Pending jobs stay pending. A job still running after ``grace`` stays "running" in
        the database and is resumed by the next start (its thread is a daemon: it does
        not keep the process alive; if it finishes before the process exits it is still
        marked done).
        """
        with self._claiming:
            self._stopping.set()
        self.queue._bump()
        deadline = time.monotonic() + max(grace, 0.0)
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        still = [t.name for t in self._threads if t.is_alive()]
        if still:
            _log(f"stopped with {len(still)} job(s) still running: they resume at next start")
        else:
            self._release_lock()  # nothing of ours is running any more
        try:
            self.queue._listeners.remove(self._refresh_depth)
        except ValueError:
            pass
        self._refresh_depth()

    def running(self) -> int:
        """Worker threads still alive (after :meth:`stop`: the jobs still running)."""
        return sum(t.is_alive() for t in self._threads)

    # ------------------------------------------------------------------ internals

    def _refresh_depth(self) -> None:
        try:
            self.metrics.set("queue_depth", self.queue.depth())
        except sqlite3.Error:
            pass  # closed: the last value stays

    def _abandon(self, jobs: list[Job]) -> None:
        assert self.on_abandoned is not None
        for job in jobs:
            try:
                self.on_abandoned(job)
            except Exception as exc:
                _log(f"job {job.id}: could not report its abandonment: {_error_text(exc)}")

    def _loop(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    if not self._step():
                        return
                except Exception as exc:  # a bug here must not shrink the pool
                    _log(f"job worker error: {type(exc).__name__}: {exc}")
                    self._stopping.wait(self.poll_interval)
        finally:
            with self._guard:
                self._alive -= 1
                last = self._alive == 0
            if last and self._stopping.is_set():
                self._release_lock()  # the last job of a stopped pool has ended

    def _step(self) -> bool:
        """Claim and run one job, or wait for one; False once stopping."""
        seq = self.queue._current_seq()
        try:
            with self._claiming:
                if self._stopping.is_set():
                    return False
                job = self.queue.claim()
        except sqlite3.ProgrammingError:
            return False  # the queue was closed: nothing more to claim
        except sqlite3.Error as exc:
            if self._stopping.is_set():
                return False
            _log(f"cannot claim a job: {exc}")
            self._stopping.wait(self.poll_interval)
            return True
        if job is None:
            self.queue._wait(seq, self.poll_interval)
        else:
            self._run(job)
        return True

    def _release_lock(self) -> None:
        with self._guard:
            lock, self._processor_lock = self._processor_lock, None
        if lock is not None:
            lock.release()

    def _run(self, job: Job) -> None:
        req = job.request
        self.metrics.inc("reviews_started_total")
        started = time.monotonic()
        error: BaseException | None = None
        try:
            self.run_job(job)
        except BaseException as exc:  # one job's failure never stops the workers
            error = exc
        elapsed = time.monotonic() - started
        what = f"job {job.id} {req.pr} @{req.head_sha[:12]} (attempt {job.attempts})"
        try:
            recorded = self.queue.finish(job.id, None if error is None else _error_text(error))
        except sqlite3.Error as exc:
            _log(f"{what}: cannot record its end ({exc}): it will run again at next start")
            return
        if not recorded:
            _log(f"{what}: was no longer running in the database; result not recorded")
            return
        self.metrics.observe("review_duration_seconds", elapsed)
        if error is None:
            self.metrics.inc("reviews_succeeded_total")
            _log(f"{what} done in {elapsed:.1f} s")
        else:
            self.metrics.inc("reviews_failed_total", {"cause": failure_cause(error)})
            _log(f"{what} failed after {elapsed:.1f} s: {_error_text(error)}")
