"""The PostgreSQL job store (AR_QUEUE_URL): jobs per second claimed and finished by 3
replicas against 1 on one PostgreSQL 15 (each replica the gateway's store and worker
pool in a process of its own, `REVIEW` seconds a job, `CONCURRENCY` workers), and the
claim latency of idle replicas: a job's `started_at` minus its `created_at`, both the
database's clock, so the NOTIFY that wakes a worker is in it. The cluster is the
tests' private one (tests/pgcluster.py: initdb as `postgres`, loopback only).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from measure import PYTHON, ROOT, ReferenceFailed, Row, error_row, fmt

REVIEW = 0.1  # seconds the stand-in reviewer takes
CONCURRENCY = 2
JOBS = 60
LATENCY_JOBS = 20
INSERT = (
    "INSERT INTO jobs (forge, owner, repo, pr_number, head_sha, base_ref, clone_url, reason,"
    " created_at) SELECT 'forgejo', 'acme', 'bench', {first} + n, md5(({first} + n)::text)"
    " || '00000000', 'main', 'https://forge.invalid/acme/bench.git', 'bench',"
    " extract(epoch FROM clock_timestamp()) FROM generate_series(1, {count}) AS n;"
    " SELECT pg_notify('auto_review_jobs', '')"
)


def _replicas(url: str, count: int) -> list[subprocess.Popen[str]]:
    env = {"PYTHONPATH": str(ROOT / "payload" / "gateway"), "PATH": "/usr/bin:/bin"}
    procs = []
    for _ in range(count):
        proc = subprocess.Popen(
            [PYTHON, str(ROOT / "bench" / "queue_replica.py"), url, str(CONCURRENCY),
             str(REVIEW)],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        procs.append(proc)
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise ReferenceFailed("a replica did not start (is python3-psycopg installed?)")
    return procs


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
    for proc in procs:
        proc.wait(timeout=60)


def _wait_done(cluster, db: str, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    query = "SELECT count(*) FROM jobs WHERE state = 'done'"
    while int(cluster.sql(query, db)) < count:
        if time.monotonic() > deadline:
            raise ReferenceFailed(f"{count} jobs were not done in {timeout:g} s")
        time.sleep(0.05)


def _throughput(cluster, replicas: int, rounds: int) -> list[float]:
    out = []
    for i in range(rounds):
        db = cluster.database(f"bench_{replicas}_{i}")
        procs = _replicas(cluster.url(database=db), replicas)
        try:
            cluster.sql(INSERT.format(first=0, count=JOBS), db)
            _wait_done(cluster, db, JOBS)
            span = cluster.sql("SELECT max(finished_at) - min(created_at) FROM jobs", db)
            out.append(JOBS / float(span))
        finally:
            _stop(procs)
    return out


def _latency(cluster) -> list[float]:
    db = cluster.database("bench_latency")
    procs = _replicas(cluster.url(database=db), 3)
    try:
        for i in range(LATENCY_JOBS):
            cluster.sql(INSERT.format(first=i * 10, count=1), db)
            _wait_done(cluster, db, i + 1)
        rows = cluster.sql("SELECT started_at - created_at FROM jobs", db).split()
        return [float(r) for r in rows]
    finally:
        _stop(procs)


def queue_rows(rounds: int) -> list[Row]:
    """Two rows: 3 replicas vs 1 in jobs per second, and the claim latency."""
    case = f"PostgreSQL store: jobs/s, 3 replicas vs 1 ({REVIEW:g} s jobs, {CONCURRENCY} workers)"
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from pgcluster import Cluster

        cluster = Cluster()
    except Exception as exc:  # no postgresql-15 here
        return [error_row(case, ReferenceFailed(f"no PostgreSQL cluster: {exc}"))]
    try:
        rounds = max(1, min(rounds, 3))
        one, three = _throughput(cluster, 1, rounds), _throughput(cluster, 3, rounds)
        latency = _latency(cluster)
    except ReferenceFailed as exc:
        return [error_row(case, exc)]
    finally:
        cluster.close()
    ideal = CONCURRENCY / REVIEW
    speedup = f"{statistics.median(three) / statistics.median(one):.2f}x"
    return [
        (case, fmt(three, "jobs/s"), f"1 replica: {fmt(one, 'jobs/s')}", speedup,
         f"near 3x (one replica's ceiling {ideal:g}/s)"),
        ("PostgreSQL store: claim latency (idle replicas, NOTIFY)", fmt(latency), "", "",
         "well under the 1 s poll"),
    ]  # fmt: skip
