"""The PostgreSQL side of :mod:`pg_queue`: the driver, a connection (TLS, timeouts),
what a failure to connect means for the operator, and the schema's versioned
migrations, applied under an advisory lock by whichever replica starts first.

The driver is psycopg 3 (Debian ``python3-psycopg``, its ctypes binding to libpq).
Measured against pg8000 (docs/GATEWAY.md, "More than one host"): Debian 12's
``python3-pg8000`` is 1.10.6, which speaks only md5 and clear-text passwords (no
SCRAM-SHA-256, PostgreSQL 15's default) and wraps TLS without checking the server's
certificate, so it cannot do ``sslmode=verify-full``; libpq does all of it, and reads
``sslmode``, ``sslrootcert``, ``connect_timeout`` from the URL as every PostgreSQL tool
does. psycopg's ctypes binding finds libpq with ``ctypes.util.find_library``, which
needs ``ldconfig`` or a compiler, neither of which is in the rootfs: :func:`driver`
names the library by its soname instead (the build ships it, ``[elf.dlopen]``).
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

SCHEMA_VERSION = 3
MIGRATION_LOCK = 0x6172_7265_7669_6577  # "arreview": pg_advisory_xact_lock's key
RECONCILE_LOCK = MIGRATION_LOCK + 1
CONNECT_TIMEOUT = 5  # seconds, unless the URL says otherwise
STATEMENT_TIMEOUT_MS = 60_000
NOTIFY_CHANNEL = "auto_review_jobs"

# Each version's statements, applied in order; a version is never edited once released.
MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE jobs (
    id          BIGSERIAL PRIMARY KEY,
    forge       TEXT    NOT NULL,
    kind        TEXT    NOT NULL DEFAULT 'review',
    state       TEXT    NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'running', 'done', 'failed')),
    owner       TEXT    NOT NULL,
    repo        TEXT    NOT NULL,
    pr_number   INTEGER NOT NULL,
    head_sha    TEXT    NOT NULL,
    base_ref    TEXT    NOT NULL,
    clone_url   TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    delivery_id TEXT,
    force       BOOLEAN NOT NULL DEFAULT FALSE,
    attempts    INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    created_at  DOUBLE PRECISION NOT NULL,
    started_at  DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    not_before  DOUBLE PRECISION NOT NULL DEFAULT 0,
    lease_until DOUBLE PRECISION,
    claimed_by  TEXT
);
CREATE UNIQUE INDEX jobs_delivery ON jobs (forge, delivery_id);
-- the dedup key: one live job per (forge, repository, PR, head, kind), a forced review
-- and a failed job stand outside it
CREATE UNIQUE INDEX jobs_dedup ON jobs (forge, lower(owner), lower(repo), pr_number,
    head_sha, kind) WHERE state <> 'failed' AND NOT force;
CREATE INDEX jobs_by_state ON jobs (state, id);
CREATE INDEX jobs_by_head ON jobs (forge, lower(owner), lower(repo), pr_number, head_sha);
""",
    2: """
CREATE TABLE reconcile_turns (
    forge    TEXT PRIMARY KEY,
    last_run DOUBLE PRECISION NOT NULL
);
""",
    # the per-PR history (jobs/pg_history.py), as sqlite_db's schema 3; owner and repo
    # are stored lower-cased (SQLite compares them NOCASE)
    3: """
CREATE TABLE pr_state (
    forge       TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    repo        TEXT    NOT NULL,
    pr_number   INTEGER NOT NULL,
    summary_comment_id BIGINT,
    paused      INTEGER NOT NULL DEFAULT 0,
    refused_at  DOUBLE PRECISION NOT NULL DEFAULT 0,
    closed_at   DOUBLE PRECISION,
    updated_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (forge, owner, repo, pr_number)
);
CREATE TABLE pr_reviews (
    id          BIGSERIAL PRIMARY KEY,
    forge       TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    repo        TEXT    NOT NULL,
    pr_number   INTEGER NOT NULL,
    job_id      BIGINT  NOT NULL,
    kind        TEXT    NOT NULL,
    from_sha    TEXT    NOT NULL,
    head_sha    TEXT    NOT NULL,
    files       INTEGER NOT NULL DEFAULT 0,
    new         INTEGER NOT NULL DEFAULT 0,
    resolved    INTEGER NOT NULL DEFAULT 0,
    verdict     TEXT    NOT NULL DEFAULT '',
    note        TEXT    NOT NULL DEFAULT '',
    at          DOUBLE PRECISION NOT NULL,
    UNIQUE (forge, owner, repo, pr_number, job_id)
);
CREATE TABLE pr_findings (
    forge       TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    repo        TEXT    NOT NULL,
    pr_number   INTEGER NOT NULL,
    fingerprint TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    line        INTEGER NOT NULL,
    severity    TEXT    NOT NULL,
    rule        TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'resolved')),
    job_id      BIGINT  NOT NULL,
    PRIMARY KEY (forge, owner, repo, pr_number, fingerprint)
);
""",
}


class DatabaseError(Exception):
    """The job database cannot be used; the message says why and what to do."""


def driver() -> Any:
    """The psycopg module, from the rootfs's native site dir (or this host's)."""
    import ctypes.util

    from auto_review_gateway.forges.github.auth import add_native_site_dirs

    add_native_site_dirs()
    original = ctypes.util.find_library
    sonames = {"pq": "libpq.so.5", "c": "libc.so.6"}
    ctypes.util.find_library = lambda name: sonames.get(name) or original(name)
    try:
        import psycopg
    except ImportError as exc:
        raise DatabaseError(
            f"AR_QUEUE_URL needs the psycopg driver and libpq, which this build lacks ({exc})"
            ": use a build of this release, or leave AR_QUEUE_URL unset for SQLite"
        ) from None
    finally:
        ctypes.util.find_library = original
    return psycopg


def where(url: str) -> str:
    """``host:port/db`` of ``url``, never its user or password (for messages)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port or 5432}{parts.path or '/'}"


def conninfo(url: str) -> tuple[str, dict[str, Any]]:
    """The URL and the keyword settings psycopg connects with: a connect timeout, TCP
    keepalives and a statement timeout unless the URL sets them, and for
    ``sslmode=verify-ca/verify-full`` without ``sslrootcert`` the process's CA bundle
    (``SSL_CERT_FILE``, where ``AUTO_REVIEW_CA_FILE`` is merged in), since libpq would
    otherwise look for ``~/.postgresql/root.crt``."""
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    extra: dict[str, Any] = {"application_name": "auto-review"}
    if "connect_timeout" not in query:
        extra["connect_timeout"] = CONNECT_TIMEOUT
    if "keepalives" not in query:  # a database that vanished without a word is noticed
        extra.update(keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
    if "options" not in query:  # no statement (an advisory lock's wait included) hangs a worker
        extra["options"] = f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
    if query.get("sslmode") in ("verify-ca", "verify-full") and "sslrootcert" not in query:
        bundle = os.environ.get("SSL_CERT_FILE", "")
        if bundle:
            extra["sslrootcert"] = bundle
    return url, extra


def explain(url: str, exc: BaseException) -> str:
    """One line: why connecting to ``url`` failed, and the fix (no password shown)."""
    text = " ".join(str(exc).split())
    user = urllib.parse.urlsplit(url).username or "(default user)"
    at = where(url)
    if "password authentication failed" in text or "no password supplied" in text:
        return (
            f"the database at {at} refused the password of role {user}:"
            " fix the user and password in AR_QUEUE_URL"
        )
    if "does not exist" in text and "database" in text:
        return f"{text}: create it (createdb -O {user} NAME) or fix the name in AR_QUEUE_URL"
    if "certificate" in text or "SSL" in text:
        return (
            f"TLS to the database at {at} failed ({text[:160]}): set AUTO_REVIEW_CA_FILE"
            " to the CA that signed its certificate, and use the host name it names"
        )
    if "pg_hba.conf" in text:
        return (
            f"the database at {at} does not admit this client ({text[:160]}):"
            " add a pg_hba.conf line for it"
        )
    return (
        f"cannot reach the database at {at} ({text[:160]}): start PostgreSQL or fix the host"
        " and port in AR_QUEUE_URL (from the sandbox a database on this host is 10.0.2.2,"
        " with AUTO_REVIEW_HOST_LOOPBACK=1)"
    )


def connect(psycopg: Any, url: str) -> Any:
    """An autocommit connection to ``url``; DatabaseError (see :func:`explain`) if none."""
    dsn, extra = conninfo(url)
    try:
        return psycopg.connect(dsn, autocommit=True, **extra)
    except psycopg.Error as exc:
        raise DatabaseError(explain(url, exc)) from None


def migrate(conn: Any) -> list[int]:
    """Bring the schema to SCHEMA_VERSION in one transaction under an advisory lock, so
    that replicas starting at once apply each version once. The versions applied now
    (empty when another replica did it); DatabaseError for a newer schema."""
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
        current = int(row[0])
        if current > SCHEMA_VERSION:
            raise DatabaseError(
                f"the job database has schema {current}, from a newer auto-review:"
                " run that release, or point AR_QUEUE_URL at another database"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version].split(";"):
                body = "\n".join(
                    line for line in statement.splitlines() if not line.strip().startswith("--")
                )
                if body.strip():
                    conn.execute(body)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied.append(version)
    return applied
