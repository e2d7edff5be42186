"""The queue's SQLite file: created private (0600), opened with a write-ahead log and
``synchronous=FULL``, its schema created or migrated in place (``PRAGMA user_version``),
and the ``BEGIN IMMEDIATE`` transaction every change runs in.

Schema 1: the jobs. Schema 2: ``jobs.not_before`` (retries). Schema 3: what the gateway
remembers of each pull request (``jobs/history.py``): ``pr_state`` (its summary comment,
paused or not), ``pr_reviews`` (each review, bounded per PR) and ``pr_findings`` (each
finding posted, by fingerprint). A database of an older schema gains what it lacks in
place, its queued jobs untouched.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

SCHEMA_VERSION = 3
BUSY_TIMEOUT_MS = 10_000

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
    finished_at REAL,
    not_before  REAL    NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, id);
CREATE INDEX IF NOT EXISTS jobs_by_head
    ON jobs (owner COLLATE NOCASE, repo COLLATE NOCASE, pr_number, head_sha);
CREATE TABLE IF NOT EXISTS pr_state (
    forge       TEXT    NOT NULL,
    owner       TEXT    NOT NULL COLLATE NOCASE,
    repo        TEXT    NOT NULL COLLATE NOCASE,
    pr_number   INTEGER NOT NULL,
    summary_comment_id INTEGER,
    paused      INTEGER NOT NULL DEFAULT 0,
    refused_at  REAL    NOT NULL DEFAULT 0,
    closed_at   REAL,
    updated_at  REAL    NOT NULL,
    PRIMARY KEY (forge, owner, repo, pr_number)
);
CREATE TABLE IF NOT EXISTS pr_reviews (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    forge       TEXT    NOT NULL,
    owner       TEXT    NOT NULL COLLATE NOCASE,
    repo        TEXT    NOT NULL COLLATE NOCASE,
    pr_number   INTEGER NOT NULL,
    job_id      INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    from_sha    TEXT    NOT NULL,
    head_sha    TEXT    NOT NULL,
    files       INTEGER NOT NULL DEFAULT 0,
    new         INTEGER NOT NULL DEFAULT 0,
    resolved    INTEGER NOT NULL DEFAULT 0,
    verdict     TEXT    NOT NULL DEFAULT '',
    note        TEXT    NOT NULL DEFAULT '',
    at          REAL    NOT NULL,
    UNIQUE (forge, owner, repo, pr_number, job_id)
);
CREATE TABLE IF NOT EXISTS pr_findings (
    forge       TEXT    NOT NULL,
    owner       TEXT    NOT NULL COLLATE NOCASE,
    repo        TEXT    NOT NULL COLLATE NOCASE,
    pr_number   INTEGER NOT NULL,
    fingerprint TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    line        INTEGER NOT NULL,
    severity    TEXT    NOT NULL,
    rule        TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'resolved')),
    job_id      INTEGER NOT NULL,
    PRIMARY KEY (forge, owner, repo, pr_number, fingerprint)
);
"""


def _create_private(path: str) -> None:
    """Create ``path`` (and its directory) readable by us only; tighten an existing file.

    An existing file is never opened here: POSIX locks belong to the process, and closing
    any descriptor of the file drops them all, those of the SQLite connections this
    process already has on it included (the queue's, when the PR history opens the same
    file). Another process would then take the write-ahead log for unused, and commits
    of ours would stop being seen (SQLite's "How To Corrupt" page, section 2.2).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)
        return
    os.close(fd)  # a file that did not exist: no connection of ours has it open


class Transaction:
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


def connect(path: str) -> sqlite3.Connection:
    """Open (creating it 0600, in a 0700 directory) the queue's database at ``path``."""
    _create_private(path)
    return sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )


def migrate(db: sqlite3.Connection, path: str) -> None:
    """Rows by name, WAL, synchronous=FULL, and the schema brought to SCHEMA_VERSION in
    place (a schema 1 database gains ``not_before``, a schema 2 one the PR tables);
    RuntimeError for a database of a newer schema or one that cannot use a write-ahead log."""
    db.row_factory = sqlite3.Row
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise RuntimeError(f"{path}: cannot use a write-ahead log (journal mode {mode})")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA foreign_keys = ON")
    with Transaction(db):
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{path}: job database of a newer auto-review (schema {version})")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        if "not_before" not in columns:  # a schema 1 database
            db.execute("ALTER TABLE jobs ADD COLUMN not_before REAL NOT NULL DEFAULT 0")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
