"""Per-PR history in the job store (schema 3 of :mod:`sqlite_db`): for each (forge,
repository, PR) the reviews run, the findings posted (by fingerprint), the summary
comment and whether reviews are paused.

* **Idempotent.** :meth:`PrHistory.record` is keyed by the job: a job that runs again
  (a retry, or a restart after a crash) records nothing twice.
* **Bounded.** At most ``max_reviews`` reviews are kept per PR (the oldest go first);
  a PR closed for ``retention`` seconds is forgotten with its findings.
* **Same file as the queue.** One database, its own connection (WAL: readers and the
  queue's writers do not block each other for long); every change is one transaction.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from collections.abc import Callable

from auto_review_gateway.core.prstate import PrKey, PrState, ReviewEntry, TrackedFinding
from auto_review_gateway.jobs import sqlite_db

MAX_REVIEWS_PER_PR = 50
MAX_RESOLVED_KEPT = 200  # resolved findings remembered per PR
CLOSED_RETENTION = 30 * 24 * 3600.0
PRUNE_EVERY = 3600.0
REFUSAL_INTERVAL = 600.0  # seconds between two refusals answered on one PR

_WHERE = "forge = ? AND owner = ? AND repo = ? AND pr_number = ?"


def _k(key: PrKey) -> tuple[str, str, str, int]:
    return (key.forge, key.owner, key.repo, key.number)


def _one(db: sqlite3.Connection, sql: str, args: tuple[object, ...]) -> sqlite3.Row | None:
    """The first row of ``sql``, its statement run to the end: a statement left part-read
    keeps its read transaction open after COMMIT, and the connection's view of the file
    frozen (a later change by the queue's connection would not be seen)."""
    rows = db.execute(sql, args).fetchall()
    return rows[0] if rows else None


class PrHistory:
    """The PR tables of the job database at ``path``, safe to share between threads."""

    def __init__(
        self,
        path: str,
        *,
        max_reviews: int = MAX_REVIEWS_PER_PR,
        retention: float = CLOSED_RETENTION,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open (creating or migrating it) the database at ``path``."""
        self.max_reviews = max_reviews
        self.retention = retention
        self.clock = clock
        self._last_prune = 0.0
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = sqlite_db.connect(path)
        try:
            sqlite_db.migrate(self._db, path)
        except BaseException:
            self.close()
            raise

    def _tx(self) -> sqlite_db.Transaction:
        if self._db is None:
            raise sqlite3.ProgrammingError("the PR history is closed")
        return sqlite_db.Transaction(self._db)

    def _touch(self, db: sqlite3.Connection, key: PrKey) -> None:
        db.execute(
            "INSERT INTO pr_state (forge, owner, repo, pr_number, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET updated_at = excluded.updated_at,"
            " closed_at = NULL",  # any news of the PR: it is open again (reopened)
            (*_k(key), self.clock()),
        )

    def load(self, key: PrKey) -> PrState:
        """What is remembered of ``key`` (an empty state for a PR never seen)."""
        with self._lock, self._tx() as db:
            row = _one(db, f"SELECT * FROM pr_state WHERE {_WHERE}", _k(key))
            reviews = db.execute(
                f"SELECT * FROM pr_reviews WHERE {_WHERE} ORDER BY id", _k(key)
            ).fetchall()
            findings = db.execute(
                f"SELECT * FROM pr_findings WHERE {_WHERE} ORDER BY path, line, rule", _k(key)
            ).fetchall()
        fields = [f.name for f in dataclasses.fields(ReviewEntry)]
        tracked = [f.name for f in dataclasses.fields(TrackedFinding)]
        return PrState(
            summary_comment_id=None if row is None else row["summary_comment_id"],
            paused=bool(row is not None and row["paused"]),
            reviews=[ReviewEntry(**{n: r[n] for n in fields}) for r in reviews],
            findings=[TrackedFinding(**{n: r[n] for n in tracked}) for r in findings],
        )

    def set_paused(self, key: PrKey, paused: bool) -> bool:
        """Pause or resume automatic reviews of ``key``; whether it was paused before."""
        with self._lock, self._tx() as db:
            self._touch(db, key)
            was = _one(db, f"SELECT paused FROM pr_state WHERE {_WHERE}", _k(key))
            db.execute(f"UPDATE pr_state SET paused = ? WHERE {_WHERE}", (int(paused), *_k(key)))
        return bool(was[0])

    def set_summary_comment(self, key: PrKey, comment_id: int | None) -> None:
        """Remember the id of ``key``'s summary comment (None: there is none)."""
        with self._lock, self._tx() as db:
            self._touch(db, key)
            db.execute(
                f"UPDATE pr_state SET summary_comment_id = ? WHERE {_WHERE}",
                (comment_id, *_k(key)),
            )

    def may_refuse(self, key: PrKey) -> bool:
        """True (and noted) when a refusal may be answered on ``key`` now: at most one
        per REFUSAL_INTERVAL, so a stranger cannot make the bot flood a PR."""
        now = self.clock()
        with self._lock, self._tx() as db:
            self._touch(db, key)
            row = _one(db, f"SELECT refused_at FROM pr_state WHERE {_WHERE}", _k(key))
            if now - float(row[0]) < REFUSAL_INTERVAL:
                return False
            db.execute(f"UPDATE pr_state SET refused_at = ? WHERE {_WHERE}", (now, *_k(key)))
        return True

    def record(
        self,
        key: PrKey,
        entry: ReviewEntry,
        posted: list[TrackedFinding] = (),  # type: ignore[assignment]
        resolved: list[str] = (),  # type: ignore[assignment]
    ) -> None:
        """Record one review of ``key`` (once per job): the findings it posted (by
        fingerprint: one already known keeps its first poster) and the fingerprints it
        found resolved; then drop the reviews beyond ``max_reviews``."""
        at = entry.at or self.clock()
        with self._lock, self._tx() as db:
            self._touch(db, key)
            db.execute(
                "INSERT OR IGNORE INTO pr_reviews (forge, owner, repo, pr_number, job_id, kind,"
                " from_sha, head_sha, files, new, resolved, verdict, note, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*_k(key), entry.job_id, entry.kind, entry.from_sha, entry.head_sha, entry.files,
                 entry.new, entry.resolved, entry.verdict, entry.note[:300], at),
            )  # fmt: skip
            for f in posted:
                db.execute(
                    "INSERT INTO pr_findings (forge, owner, repo, pr_number, fingerprint, path,"
                    " line, severity, rule, message, state, job_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?)"
                    " ON CONFLICT DO UPDATE SET line = excluded.line, job_id = CASE WHEN"
                    " state = 'resolved' THEN excluded.job_id ELSE job_id END, state = 'open'",
                    (*_k(key), f.fingerprint, f.path, f.line, f.severity, f.rule,
                     f.message[:500], f.job_id or entry.job_id),
                )  # fmt: skip
            for fp in resolved:
                db.execute(
                    f"UPDATE pr_findings SET state = 'resolved' WHERE {_WHERE} AND fingerprint = ?",
                    (*_k(key), fp),
                )
            db.execute(  # resolved ones beyond the newest kept: forgotten
                f"DELETE FROM pr_findings WHERE {_WHERE} AND state = 'resolved' AND"
                " fingerprint NOT IN (SELECT fingerprint FROM pr_findings WHERE"
                f" {_WHERE} AND state = 'resolved' ORDER BY job_id DESC LIMIT ?)",
                (*_k(key), *_k(key), MAX_RESOLVED_KEPT),
            )
            db.execute(
                f"DELETE FROM pr_reviews WHERE {_WHERE} AND id NOT IN (SELECT id FROM pr_reviews"
                f" WHERE {_WHERE} ORDER BY id DESC LIMIT ?)",
                (*_k(key), *_k(key), self.max_reviews),
            )

    def closed(self, key: PrKey) -> None:
        """Note that ``key`` was closed (forgotten ``retention`` seconds later); at most
        hourly, forget the PRs closed longer ago than that."""
        with self._lock, self._tx() as db:
            self._touch(db, key)
            db.execute(
                f"UPDATE pr_state SET closed_at = ? WHERE {_WHERE}", (self.clock(), *_k(key))
            )
        if self.clock() - self._last_prune > PRUNE_EVERY:
            self.prune()

    def prune(self) -> int:
        """Forget the PRs closed more than ``retention`` seconds ago; how many."""
        self._last_prune = self.clock()
        cutoff = self._last_prune - self.retention
        with self._lock, self._tx() as db:
            old = db.execute(
                "SELECT forge, owner, repo, pr_number FROM pr_state"
                " WHERE closed_at IS NOT NULL AND closed_at < ?",
                (cutoff,),
            ).fetchall()
            for row in old:
                for table in ("pr_findings", "pr_reviews", "pr_state"):
                    db.execute(f"DELETE FROM {table} WHERE {_WHERE}", tuple(row))
        return len(old)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            db, self._db = self._db, None
            if db is not None:
                db.close()
