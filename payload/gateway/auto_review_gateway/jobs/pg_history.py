"""The per-PR history (:mod:`history`'s guarantees) in the PostgreSQL job store, so that
every replica knows what any other one reviewed and posted on a PR: incremental reviews,
no repeated findings and one summary comment hold across replicas.

It shares the store's connection, lock and reconnect rule (:class:`pg_queue.PgJobQueue`);
the tables are schema 3 of :mod:`pg_db`. A change that reads then writes a PR's state
(pause, the refusal interval) first upserts the PR's row, which locks it until the
transaction ends: two replicas answering on one PR at once take turns.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from auto_review_gateway.core.prstate import PrKey, PrState, ReviewEntry, TrackedFinding
from auto_review_gateway.jobs.history import (
    CLOSED_RETENTION,
    MAX_RESOLVED_KEPT,
    MAX_REVIEWS_PER_PR,
    PRUNE_EVERY,
    REFUSAL_INTERVAL,
)

_WHERE = "forge = %s AND owner = %s AND repo = %s AND pr_number = %s"


def _k(key: PrKey) -> tuple[str, str, str, int]:
    return (key.forge, key.owner.lower(), key.repo.lower(), key.number)


class PgPrHistory:
    """The PR tables of a :class:`pg_queue.PgJobQueue`'s database."""

    def __init__(
        self,
        store: Any,
        *,
        max_reviews: int = MAX_REVIEWS_PER_PR,
        retention: float = CLOSED_RETENTION,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """History in ``store``'s database (migrated when the store opened)."""
        self.store = store
        self.max_reviews, self.retention, self.clock = max_reviews, retention, clock
        self._last_prune = 0.0

    def _tx(self, work: Callable[[Any], Any]) -> Any:
        def run(conn: Any) -> Any:
            with conn.transaction():
                return work(conn)

        return self.store._run(run)

    def _touch(self, conn: Any, key: PrKey) -> None:
        conn.execute(
            "INSERT INTO pr_state (forge, owner, repo, pr_number, updated_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (forge, owner, repo, pr_number)"
            " DO UPDATE SET updated_at = EXCLUDED.updated_at, closed_at = NULL",
            (*_k(key), self.clock()),
        )

    def load(self, key: PrKey) -> PrState:
        """What is remembered of ``key`` (an empty state for a PR never seen)."""

        def work(conn: Any) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
            rows = self.store._rows
            state = rows(conn, f"SELECT * FROM pr_state WHERE {_WHERE}", _k(key))
            reviews = rows(conn, f"SELECT * FROM pr_reviews WHERE {_WHERE} ORDER BY id", _k(key))
            findings = rows(
                conn,
                f"SELECT * FROM pr_findings WHERE {_WHERE} ORDER BY path, line, rule",
                _k(key),
            )
            return (state[0] if state else None), reviews, findings

        row, reviews, findings = self._tx(work)
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

        def work(conn: Any) -> bool:
            self._touch(conn, key)
            was = conn.execute(f"SELECT paused FROM pr_state WHERE {_WHERE}", _k(key)).fetchone()
            conn.execute(f"UPDATE pr_state SET paused = %s WHERE {_WHERE}", (int(paused), *_k(key)))
            return bool(was[0])

        return bool(self._tx(work))

    def set_summary_comment(self, key: PrKey, comment_id: int | None) -> None:
        """Remember the id of ``key``'s summary comment (None: there is none)."""

        def work(conn: Any) -> None:
            self._touch(conn, key)
            conn.execute(
                f"UPDATE pr_state SET summary_comment_id = %s WHERE {_WHERE}",
                (comment_id, *_k(key)),
            )

        self._tx(work)

    def may_refuse(self, key: PrKey) -> bool:
        """True (and noted) when a refusal may be answered on ``key`` now: at most one
        per REFUSAL_INTERVAL, whichever replica answers."""
        now = self.clock()

        def work(conn: Any) -> bool:
            self._touch(conn, key)
            row = conn.execute(
                f"SELECT refused_at FROM pr_state WHERE {_WHERE}", _k(key)
            ).fetchone()
            if now - float(row[0]) < REFUSAL_INTERVAL:
                return False
            conn.execute(f"UPDATE pr_state SET refused_at = %s WHERE {_WHERE}", (now, *_k(key)))
            return True

        return bool(self._tx(work))

    def record(
        self,
        key: PrKey,
        entry: ReviewEntry,
        posted: list[TrackedFinding] = (),  # type: ignore[assignment]
        resolved: list[str] = (),  # type: ignore[assignment]
    ) -> None:
        """Record one review of ``key`` (once per job), its findings by fingerprint and
        the fingerprints it found resolved; keep the newest ``max_reviews`` reviews."""
        at = entry.at or self.clock()

        def work(conn: Any) -> None:
            self._touch(conn, key)
            conn.execute(
                "INSERT INTO pr_reviews (forge, owner, repo, pr_number, job_id, kind,"
                " from_sha, head_sha, files, new, resolved, verdict, note, at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (*_k(key), entry.job_id, entry.kind, entry.from_sha, entry.head_sha, entry.files,
                 entry.new, entry.resolved, entry.verdict, entry.note[:300], at),
            )  # fmt: skip
            for f in posted:
                conn.execute(
                    "INSERT INTO pr_findings (forge, owner, repo, pr_number, fingerprint, path,"
                    " line, severity, rule, message, state, job_id)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'open', %s)"
                    " ON CONFLICT (forge, owner, repo, pr_number, fingerprint)"
                    " DO UPDATE SET line = EXCLUDED.line, job_id = CASE WHEN pr_findings.state"
                    " = 'resolved' THEN EXCLUDED.job_id ELSE pr_findings.job_id END,"
                    " state = 'open'",
                    (*_k(key), f.fingerprint, f.path, f.line, f.severity, f.rule,
                     f.message[:500], f.job_id or entry.job_id),
                )  # fmt: skip
            for fp in resolved:
                conn.execute(
                    f"UPDATE pr_findings SET state = 'resolved' WHERE {_WHERE}"
                    " AND fingerprint = %s",
                    (*_k(key), fp),
                )
            conn.execute(  # resolved ones beyond the newest kept: forgotten
                f"DELETE FROM pr_findings WHERE {_WHERE} AND state = 'resolved' AND"
                " fingerprint NOT IN (SELECT fingerprint FROM pr_findings WHERE"
                f" {_WHERE} AND state = 'resolved' ORDER BY job_id DESC LIMIT %s)",
                (*_k(key), *_k(key), MAX_RESOLVED_KEPT),
            )
            conn.execute(
                f"DELETE FROM pr_reviews WHERE {_WHERE} AND id NOT IN (SELECT id FROM"
                f" pr_reviews WHERE {_WHERE} ORDER BY id DESC LIMIT %s)",
                (*_k(key), *_k(key), self.max_reviews),
            )

        self._tx(work)

    def closed(self, key: PrKey) -> None:
        """Note that ``key`` was closed; at most hourly, forget the PRs closed longer ago
        than ``retention``."""

        def work(conn: Any) -> None:
            self._touch(conn, key)
            conn.execute(
                f"UPDATE pr_state SET closed_at = %s WHERE {_WHERE}", (self.clock(), *_k(key))
            )

        self._tx(work)
        if self.clock() - self._last_prune > PRUNE_EVERY:
            self.prune()

    def prune(self) -> int:
        """Forget the PRs closed more than ``retention`` seconds ago; how many."""
        self._last_prune = self.clock()
        cutoff = self._last_prune - self.retention

        def work(conn: Any) -> int:
            old = conn.execute(
                "SELECT forge, owner, repo, pr_number FROM pr_state"
                " WHERE closed_at IS NOT NULL AND closed_at < %s",
                (cutoff,),
            ).fetchall()
            for row in old:
                for table in ("pr_findings", "pr_reviews", "pr_state"):
                    conn.execute(f"DELETE FROM {table} WHERE {_WHERE}", tuple(row))
            return len(old)

        return int(self._tx(work))

    def close(self) -> None:
        """Nothing of its own to close: the store's connection is the store's."""
