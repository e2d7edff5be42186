"""The gateway's durable job queue and workers (jobs/queue.py, jobs/workers.py) and the
production job (jobs/forgejo_job.py).

Bare on the host. The queue is checked for dedup, bounds, durability (a new queue on the
same file, and a child process SIGKILLed mid-way and restarted until everything is done:
every accepted job completes exactly once), failure handling, metrics, the concurrency
bound and graceful stop. run_review_job runs against the loopback stand-ins: the TLS git
server of tests/gitserver.py and tests/fake_forgejo.py, which stands in for Forgejo.
"""

from __future__ import annotations

import collections
import fcntl
import os
import signal
import sqlite3
import ssl
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fake_forgejo import FakeForgejo
from tests.gitserver import CertFiles, GitHttpsServer, commit, make_ca, make_repo
from tests.hostile import RecordingGitServer

GATEWAY = Path(__file__).resolve().parent.parent / "payload" / "gateway"
sys.path.insert(0, str(GATEWAY))

from auto_review_gateway.core.metrics import Metrics  # noqa: E402
from auto_review_gateway.core.model import EXIT_BAD_REF, EXIT_CLONE, ReviewError  # noqa: E402
from auto_review_gateway.jobs import forgejo_job as worker  # noqa: E402
from auto_review_gateway.jobs import queue as jobs  # noqa: E402
from auto_review_gateway.jobs import sqlite_db  # noqa: E402
from auto_review_gateway.jobs.queue import Job, JobQueue, JobRequest  # noqa: E402
from auto_review_gateway.jobs.workers import Workers  # noqa: E402

TOKEN = "s3cret-forge-token"


def request(n: int = 1, **changes: object) -> JobRequest:
    """A valid request for PR ``n`` of acme/demo with head SHA ``n`` (40 hex digits)."""
    fields: dict[str, object] = {
        "owner": "acme",
        "repo": "demo",
        "pr_number": n,
        "head_sha": f"{n:040x}",
        "base_ref": "main",
        "clone_url": "https://forge.invalid/acme/demo.git",
        "reason": "pull_request:opened",
        "delivery_id": f"delivery-{n}",
    }
    fields.update(changes)
    return JobRequest(**fields)  # type: ignore[arg-type]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for a condition")
        time.sleep(0.01)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "state" / jobs.DB_NAME)


@pytest.fixture
def queue(db_path: str) -> Iterator[JobQueue]:
    q = JobQueue(db_path)
    yield q
    q.close()


@pytest.fixture
def pool() -> Iterator[list[Workers]]:
    """Workers started by a test, stopped at its end whatever happened."""
    started: list[Workers] = []
    yield started
    for workers in started:
        workers.stop(5)


def start(pool: list[Workers], queue: JobQueue, run_job: Callable[[Job], None], **kw) -> Workers:
    kw.setdefault("concurrency", 1)
    kw.setdefault("metrics", Metrics())
    kw.setdefault("poll_interval", 0.05)
    workers = Workers(queue, run_job, **kw)
    workers.start()
    pool.append(workers)
    return workers


def drained(queue: JobQueue) -> Callable[[], bool]:
    return lambda: queue.depth() == 0


# --------------------------------------------------------------------------- submit


def test_submit_accepts_then_dedups_by_delivery_and_by_head(queue: JobQueue) -> None:
    first = queue.submit(request(1))
    assert first.status == "accepted" and first.job_id is not None
    # The same delivery again (a replay): a duplicate of the first job.
    assert queue.submit(request(1)) == jobs.Submission("duplicate", first.job_id)
    # Another delivery for the same head: duplicate too (names are case-insensitive).
    again = request(1, delivery_id="other", owner="ACME", head_sha=f"{1:040X}")
    assert queue.submit(again) == jobs.Submission("duplicate", first.job_id)
    # Forced (a re-review comment): accepted despite the same head...
    forced = queue.submit(request(1, delivery_id="comment-1", force=True))
    assert forced.status == "accepted" and forced.job_id != first.job_id
    # ...but a replay of a seen delivery stays a duplicate, force or not.
    assert queue.submit(request(1, delivery_id="comment-1", force=True)).status == "duplicate"
    assert queue.submit(request(1, force=True)) == jobs.Submission("duplicate", first.job_id)
    # Without a delivery id (the CI endpoint) only the head dedups.
    ci = queue.submit(request(2, delivery_id=None, reason="ci"))
    assert ci.status == "accepted"
    assert queue.submit(request(2, delivery_id=None, reason="ci")).status == "duplicate"
    assert queue.submit(request(2, delivery_id="", pr_number=3)).status == "accepted"
    assert queue.counts() == {"pending": 4, "running": 0, "done": 0, "failed": 0}
    assert queue.depth() == 4


def test_a_done_head_is_a_duplicate_a_failed_one_may_run_again(queue: JobQueue) -> None:
    done = queue.submit(request(1)).job_id
    failed = queue.submit(request(2)).job_id
    for job_id, error in ((done, None), (failed, "boom")):
        job = queue.claim()
        assert job is not None and job.id == job_id
        assert queue.finish(job.id, error)
        assert not queue.finish(job.id, error)  # completed once only
    assert queue.submit(request(1, delivery_id="x1")).status == "duplicate"
    assert queue.submit(request(2, delivery_id="x2")).status == "accepted"
    assert queue.submit(request(2, delivery_id="x3")).status == "duplicate"


def test_a_full_queue_stores_nothing(db_path: str) -> None:
    queue = JobQueue(db_path, max_pending=3)
    try:
        ids = [queue.submit(request(n)).job_id for n in (1, 2, 3)]
        assert queue.submit(request(4)) == jobs.Submission("full", None)
        assert queue.counts()["pending"] == 3
        assert queue.submit(request(4)).status == "full"  # its delivery was not recorded
        assert queue.submit(request(1, delivery_id="replay")).status == "duplicate"
        # Running jobs do not count against the bound: one claimed makes room for one.
        job = queue.claim()
        assert job is not None and job.id == ids[0]
        assert queue.submit(request(4)).status == "accepted"
        assert queue.submit(request(5)).status == "full"
        assert queue.counts() == {"pending": 3, "running": 1, "done": 0, "failed": 0}
    finally:
        queue.close()


@pytest.mark.parametrize(
    "changes",
    [
        {"head_sha": "abc123"},
        {"owner": "../etc"},
        {"pr_number": 0},
        {"pr_number": True},
        {"clone_url": ""},
        {"base_ref": "x" * 300},
    ],
)
def test_a_malformed_request_is_refused(queue: JobQueue, changes: dict) -> None:
    with pytest.raises(ValueError):
        queue.submit(request(1, **changes))
    assert queue.depth() == 0


# --------------------------------------------------------------------------- durability


def test_jobs_survive_a_new_queue_and_the_database_is_private(db_path: str) -> None:
    queue = JobQueue(db_path)
    for n in (1, 2, 3):
        assert queue.submit(request(n, force=n == 2)).status == "accepted"
    db = queue._conn()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    for suffix in ("", "-wal", "-shm"):
        assert stat.S_IMODE(os.stat(db_path + suffix).st_mode) == 0o600, suffix
    queue.close()
    queue.close()  # idempotent

    again = JobQueue(db_path)
    try:
        assert again.counts() == {"pending": 3, "running": 0, "done": 0, "failed": 0}
        job = again.claim()
        assert job == Job(id=1, request=request(1), attempts=1)
        assert again.submit(request(2)).status == "duplicate"
    finally:
        again.close()


def test_interrupted_job_is_resumed_first(db_path: str, pool: list[Workers]) -> None:
    queue = JobQueue(db_path)
    queue.submit(request(1))
    queue.submit(request(2))
    assert queue.claim() is not None  # job 1 running when the process "dies"
    del queue  # no close, no finish: what a crash leaves

    queue = JobQueue(db_path)
    assert queue.counts()["running"] == 1
    ran: list[tuple[int, int]] = []
    start(pool, queue, lambda job: ran.append((job.id, job.attempts)))
    wait_until(drained(queue))
    assert ran == [(1, 2), (2, 1)]
    assert queue.counts() == {"pending": 0, "running": 0, "done": 2, "failed": 0}
    pool[0].stop(5)
    queue.close()


def test_a_job_interrupted_three_times_is_failed(db_path: str, pool: list[Workers]) -> None:
    queue = JobQueue(db_path)
    job_id = queue.submit(request(1)).job_id
    queue.submit(request(2))
    queue.close()
    with sqlite3.connect(db_path) as db:  # as left by the third crash while it ran
        db.execute("UPDATE jobs SET state = 'running', attempts = 3 WHERE id = ?", (job_id,))
    db.close()

    queue = JobQueue(db_path)
    metrics = Metrics()
    abandoned: list[Job] = []
    ran: list[int] = []
    start(
        pool, queue, lambda job: ran.append(job.id), metrics=metrics, on_abandoned=abandoned.append
    )
    wait_until(lambda: queue.depth() == 0 and len(abandoned) == 1)
    assert ran == [2]
    row = queue.get(job_id)
    assert row is not None and row["state"] == "failed" and "interrupted 3 times" in row["error"]
    assert [j.id for j in abandoned] == [job_id]
    assert metrics.value("reviews_failed_total", {"cause": "interrupted"}) == 1
    pool[0].stop(5)
    queue.close()


CHILD = textwrap.dedent(
    """
    import fcntl, os, sys, time
    sys.path.insert(0, {gateway!r})
    from auto_review_gateway.jobs.queue import JobQueue, JobRequest
    from auto_review_gateway.jobs.workers import Workers
    from auto_review_gateway.core.metrics import Metrics

    db, logs, mode = sys.argv[1:4]

    def append(name, line):
        fd = os.open(os.path.join(logs, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, line.encode())
        os.fsync(fd)
        os.close(fd)

    queue = JobQueue(db)
    if mode == "submit":
        for n in range(1, 21):
            req = JobRequest("acme", "demo", n, "%040x" % n, "main",
                             "https://forge.invalid/acme/demo.git", "ci", "d%d" % n)
            assert queue.submit(req).status == "accepted"
        append("accepted", "20\\n")

    def run_job(job):
        append("runs", "%d %d\\n" % (job.id, job.attempts))
        time.sleep(0.12)
        open(os.path.join(logs, "effect-%d" % job.id), "w").close()  # idempotent per job

    # "Completed" is logged right after the job is marked done, under a lock the test
    # takes to SIGKILL us: a kill never falls between the commit and the log line.
    mark_done = queue.finish
    def finish(job_id, error=None):
        fd = os.open(os.path.join(logs, "kill.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            changed = mark_done(job_id, error)
            if changed:
                append("completed", "%d\\n" % job_id)
            return changed
        finally:
            os.close(fd)
    queue.finish = finish

    workers = Workers(queue, run_job, concurrency=2, metrics=Metrics(), poll_interval=0.05)
    workers.start()
    while queue.depth():
        time.sleep(0.02)
    workers.stop(5)
    queue.close()
    """
)


def test_every_accepted_job_completes_exactly_once_across_sigkills(tmp_path: Path) -> None:
    db = str(tmp_path / "state" / jobs.DB_NAME)
    logs = tmp_path / "logs"
    logs.mkdir()
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(gateway=str(GATEWAY)))

    def lines(name: str) -> list[str]:
        path = logs / name
        return path.read_text().split() if path.exists() else []

    def completed() -> int:
        return len(lines("completed"))

    kills = 0
    mode = "submit"
    while True:
        proc = subprocess.Popen([sys.executable, str(script), db, str(logs), mode])
        if kills < 3:
            target = completed() + 2  # some progress first, so no job is interrupted 3 times
            wait_until(lambda t=target, p=proc: completed() >= t or p.poll() is not None, 20)
            time.sleep(0.05 * kills)  # vary where the kill lands
            if proc.poll() is None:
                with open(logs / "kill.lock", "a+") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(10)
                kills += 1
                mode = "resume"
                continue
        assert proc.wait(30) == 0
        break

    assert kills == 3
    assert lines("accepted") == ["20"]
    done = collections.Counter(int(x) for x in lines("completed"))
    assert sorted(done) == list(range(1, 21)), "a job was lost"
    assert set(done.values()) == {1}, f"a job completed twice: {done}"
    runs = [tuple(map(int, line.split())) for line in (logs / "runs").read_text().splitlines()]
    by_job = collections.defaultdict(list)
    for job_id, attempt in runs:
        by_job[job_id].append(attempt)
    # Attempts only grow; one may be missing from the log (a kill between the claim and
    # the job's first line), so they need not be contiguous.
    assert all(attempts == sorted(set(attempts)) for attempts in by_job.values())
    assert all(attempts[0] in (1, 2) for attempts in by_job.values())
    assert any(len(attempts) > 1 for attempts in by_job.values()), "no kill interrupted a job"
    assert len(runs) <= 20 + 2 * kills  # only jobs running at a kill ran again
    assert all((logs / f"effect-{n}").exists() for n in range(1, 21))
    queue = JobQueue(db)
    try:
        assert queue.counts() == {"pending": 0, "running": 0, "done": 20, "failed": 0}
    finally:
        queue.close()


# --------------------------------------------------------------------------- workers


def test_a_raising_job_fails_and_the_workers_go_on(
    queue: JobQueue, pool: list[Workers], capfd: pytest.CaptureFixture[str]
) -> None:
    def run_job(job: Job) -> None:
        if job.id == 1:
            raise RuntimeError("boom " + "x" * 1000)
        if job.id == 2:
            raise ReviewError("could not fetch https://forge.invalid/acme/demo.git", EXIT_CLONE)
        if job.id == 3:
            raise ReviewError("unknown ref", EXIT_BAD_REF)

    for n in (1, 2, 3, 4):
        queue.submit(request(n))
    metrics = Metrics()
    # A clone failure may pass: retried (no backoff here) until its third try fails.
    start(pool, queue, run_job, metrics=metrics, retry_delay=lambda attempt: 0.0)
    wait_until(drained(queue))
    states = [queue.get(n)["state"] for n in (1, 2, 3, 4)]  # type: ignore[index]
    assert states == ["failed", "failed", "failed", "done"]
    assert [queue.get(n)["attempts"] for n in (1, 2, 3, 4)] == [1, 3, 1, 1]  # type: ignore[index]
    error = queue.get(1)["error"]  # type: ignore[index]
    assert error.startswith("RuntimeError: boom xxx") and len(error) == 500
    assert queue.get(2)["error"].startswith("clone: could not fetch")  # type: ignore[index]
    # Metrics are counted before a job leaves "running": drained means counted.
    assert metrics.value("reviews_started_total") == 6
    assert metrics.value("reviews_succeeded_total") == 1
    assert metrics.value("job_retries_total", {"cause": "clone"}) == 2
    assert metrics.value("job_attempts_max") == 3
    assert metrics.value("reviews_failed_total", {"cause": "RuntimeError"}) == 1
    assert metrics.value("reviews_failed_total", {"cause": "clone"}) == 1
    assert metrics.value("reviews_failed_total", {"cause": "bad_ref"}) == 1
    assert "auto_review_review_duration_seconds_count 6" in metrics.render()
    assert metrics.value("queue_depth") == 0
    err = capfd.readouterr().err
    failed_lines = [line for line in err.splitlines() if " failed after " in line]
    assert len(failed_lines) == 3 and "Traceback" not in err
    assert len([line for line in err.splitlines() if " retrying in 0 s" in line]) == 2


def test_a_retried_job_waits_for_its_backoff_and_is_listed(
    queue: JobQueue, pool: list[Workers]
) -> None:
    ran: list[int] = []
    delays: list[int] = []

    def run_job(job: Job) -> None:
        ran.append(job.attempts)
        if job.attempts == 1:
            raise ReviewError("POST https://forge.invalid: HTTP 503", 7)

    def retry_delay(attempt: int) -> float:
        delays.append(attempt)
        return 3600.0  # due in an hour: no worker may claim it before

    queue.submit(request(1))
    start(pool, queue, run_job, retry_delay=retry_delay)
    wait_until(lambda: delays == [1] and queue.counts()["pending"] == 1)
    row = queue.recent()[0]
    assert row["state"] == "pending" and row["attempts"] == 1
    assert row["error"].startswith("post: POST https://forge.invalid: HTTP 503")
    assert row["not_before"] > time.time() + 3000
    assert queue.claim() is None  # not due
    assert queue.retrying() == 1
    # Once due (the clock moved on) it is claimed again, and succeeds.
    job = queue.claim(now=row["not_before"] + 1)
    assert job is not None and job.attempts == 2
    assert queue.finish(job.id) is True
    assert ran == [1] and queue.get(1)["state"] == "done"  # type: ignore[index]


def test_queue_depth_gauge_follows_submissions(queue: JobQueue, pool: list[Workers]) -> None:
    release = threading.Event()
    metrics = Metrics()
    start(pool, queue, lambda job: release.wait(10), metrics=metrics)
    for n in (1, 2, 3):
        queue.submit(request(n))
    wait_until(lambda: queue.counts()["running"] == 1)
    assert metrics.value("queue_depth") == 3  # one running, two pending
    release.set()
    wait_until(lambda: metrics.value("queue_depth") == 0)


def test_concurrency_is_bounded(queue: JobQueue, pool: list[Workers]) -> None:
    lock = threading.Lock()
    now = peak = 0

    def run_job(job: Job) -> None:
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
        time.sleep(0.08)
        with lock:
            now -= 1

    for n in range(1, 13):
        queue.submit(request(n))
    start(pool, queue, run_job, concurrency=3)
    wait_until(drained(queue))
    assert peak == 3
    assert queue.counts()["done"] == 12


def test_stop_lets_the_running_job_finish_and_keeps_the_rest(
    queue: JobQueue, pool: list[Workers]
) -> None:
    started = threading.Event()
    ran: list[int] = []

    def run_job(job: Job) -> None:
        started.set()
        time.sleep(0.4)
        ran.append(job.id)

    for n in (1, 2, 3):
        queue.submit(request(n))
    workers = start(pool, queue, run_job)
    assert started.wait(5)
    t0 = time.monotonic()
    workers.stop(grace=5)
    assert time.monotonic() - t0 < 2
    assert ran == [1]
    assert queue.counts() == {"pending": 2, "running": 0, "done": 1, "failed": 0}
    # The processor lock is free again: a new pool takes over where this one stopped.
    start(pool, queue, run_job)
    wait_until(drained(queue))
    assert ran == [1, 2, 3]


def test_stop_past_grace_leaves_the_job_running(queue: JobQueue, pool: list[Workers]) -> None:
    release = threading.Event()
    started = threading.Event()

    def run_job(job: Job) -> None:
        started.set()
        release.wait(10)

    queue.submit(request(1))
    queue.submit(request(2))
    workers = start(pool, queue, run_job)
    assert started.wait(5)
    t0 = time.monotonic()
    workers.stop(grace=0.2)
    assert 0.15 < time.monotonic() - t0 < 1.5
    assert queue.counts() == {"pending": 1, "running": 1, "done": 0, "failed": 0}
    # Its thread still runs a job of this database: no second pool may take it over.
    with pytest.raises(RuntimeError, match="another auto-review process"):
        Workers(queue, run_job, concurrency=1, metrics=Metrics()).start()
    release.set()
    wait_until(lambda: workers.running() == 0)
    assert queue.counts() == {"pending": 1, "running": 0, "done": 1, "failed": 0}


def test_one_processor_per_database(db_path: str, pool: list[Workers]) -> None:
    first, second = JobQueue(db_path), JobQueue(db_path)
    try:
        start(pool, first, lambda job: None)
        with pytest.raises(RuntimeError, match="another auto-review process"):
            Workers(second, lambda job: None, concurrency=1, metrics=Metrics()).start()
        second.submit(request(1))  # submitting from elsewhere is fine: the pool polls
        wait_until(drained(first))
    finally:
        pool[0].stop(5)
        first.close()
        second.close()


# --------------------------------------------------------------------------- run_review_job

BASE = {"README.md": "# demo\n", "src/app.py": "def main():\n    return 0\n"}
PLANTED = {"src/app.py": "def main():\n<<<<<<< HEAD\n    return 1   \n"}
CLEAN = {"src/util.py": "X = 1\n"}


def server_tls(certs: CertFiles) -> ssl.SSLContext:
    """A TLS server context with the test CA's server certificate."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certs.server_cert, certs.server_key)
    return tls


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_ca(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def git_server(tmp_path_factory: pytest.TempPathFactory, certs: CertFiles) -> Iterator:
    root = tmp_path_factory.mktemp("repos")
    heads = {}
    for name, files in (("planted", PLANTED), ("clean", CLEAN), ("off", CLEAN)):
        path = root / f"{name}.git"
        make_repo(path, BASE)
        if name == "off":
            commit(path, {".auto_review.yaml": "enabled: false\n"}, "off")
        subprocess.run(
            ["git", "--git-dir", str(path), "branch", "topic", "main"],
            check=True,
            env={"PATH": os.environ["PATH"], "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(root)},
        )
        heads[name] = commit(path, files, "topic", branch="topic")
    with GitHttpsServer(root, certs) as server:
        server.heads = heads  # type: ignore[attr-defined]
        yield server


@pytest.fixture
def forge_env(monkeypatch: pytest.MonkeyPatch, certs: CertFiles, tmp_path: Path) -> Path:
    """Trust the test CA; no LLM; clones in a private temporary directory (returned)."""
    for name in ("SSL_CERT_FILE", "GIT_SSL_CAINFO"):
        monkeypatch.setenv(name, str(certs.ca_cert))
    monkeypatch.delenv("LLM_BASE_URL", raising=False)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def use_forge(monkeypatch: pytest.MonkeyPatch, forge: FakeForgejo) -> None:
    monkeypatch.setenv("FORGEJO_BASE_URL", forge.url)
    monkeypatch.setenv("AR_FORGEJO_TOKEN", TOKEN)


def job_for(server: GitHttpsServer, name: str, pr: int = 7) -> Job:
    req = request(pr, repo=name, head_sha=server.heads[name], clone_url=server.repo_url(name))  # type: ignore[attr-defined]
    return Job(id=1, request=req, attempts=1)


def states(forge: FakeForgejo) -> list[str]:
    return [s["state"] for s in forge.statuses()]


def test_review_job_posts_pending_then_the_review_and_its_verdict(
    git_server: GitHttpsServer, forge_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeForgejo(token=TOKEN) as forge:
        use_forge(monkeypatch, forge)
        worker.run_review_job(job_for(git_server, "planted"))
        assert states(forge) == ["pending", "failure"]
        [(path, review)] = forge.posted("/reviews")
        assert path == "/api/v1/repos/acme/planted/pulls/7/reviews"
        assert review["event"] == "REQUEST_CHANGES"
        assert review["commit_id"] == git_server.heads["planted"]  # type: ignore[attr-defined]
        rules = {(c["path"], c["new_position"], c["body"].split()[1]) for c in review["comments"]}
        assert rules == {
            ("src/app.py", 2, "conflict-marker:"),
            ("src/app.py", 3, "trailing-whitespace:"),
        }
        head = git_server.heads["planted"]  # type: ignore[attr-defined]
        assert all(p.endswith(f"/statuses/{head}") for p, _ in forge.posted("/statuses"))

    with FakeForgejo(token=TOKEN) as forge:
        use_forge(monkeypatch, forge)
        worker.run_review_job(job_for(git_server, "clean"))
        assert states(forge) == ["pending", "success"]
        assert forge.reviews() == []  # nothing new to say inline: the summary says it
        [summary] = forge.comments.on("acme", "clean", 7)
        assert "**Open findings:** none" in summary["body"]
    # the clones are gone (the jobs' PR history, without a state dir, is a file of the process)
    assert [p for p in forge_env.iterdir() if not p.name.startswith("auto-review-history-")] == []


def test_a_disabled_repository_gets_success_and_no_review(
    git_server: GitHttpsServer, forge_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeForgejo(token=TOKEN) as forge:
        use_forge(monkeypatch, forge)
        worker.run_review_job(job_for(git_server, "off"))
        assert states(forge) == ["pending", "success"]
        assert "disabled" in forge.statuses()[-1]["description"]
        assert forge.reviews() == []


def test_a_clone_failure_sets_error_and_propagates_through_the_workers(
    git_server: GitHttpsServer,
    forge_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    queue: JobQueue,
    pool: list[Workers],
) -> None:
    with FakeForgejo(token=TOKEN) as forge:
        use_forge(monkeypatch, forge)
        job = job_for(git_server, "planted")
        missing = job.request.clone_url.replace("planted", "nosuch")
        bad = Job(id=1, request=request(7, clone_url=missing), attempts=1)
        with pytest.raises(ReviewError) as caught:
            worker.run_review_job(bad)
        assert caught.value.exit_code == EXIT_CLONE
        assert states(forge) == ["pending", "error"]
        assert forge.statuses()[-1]["description"].startswith("auto-review failed: ")
        assert forge.reviews() == []

        # The same through the queue: the job fails with its cause, the next one runs.
        metrics = Metrics()
        queue.submit(request(8, clone_url=missing))
        queue.submit(job.request)
        start(pool, queue, worker.run_review_job, metrics=metrics, max_attempts=1)
        wait_until(drained(queue), 30)
        assert queue.get(1)["state"] == "failed"  # type: ignore[index]
        assert queue.get(2)["state"] == "done"  # type: ignore[index]
        assert metrics.value("reviews_failed_total", {"cause": "clone"}) == 1
        assert states(forge)[2:] == ["pending", "error", "pending", "failure"]
    assert list(forge_env.iterdir()) == []


def test_the_forge_token_goes_only_to_the_forge(
    certs: CertFiles, forge_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = server_tls(certs)
    with FakeForgejo(token=TOKEN, ssl_context=tls) as forge, FakeForgejo(ssl_context=tls) as other:
        use_forge(monkeypatch, forge)
        # A private repository on the forge (the stand-in answers git with 404).
        job = Job(1, request(3, clone_url=f"{forge.url}/acme/private.git"), 1)
        with pytest.raises(ReviewError):
            worker.run_review_job(job)
        fetches = [r for r in forge.requests if "/acme/private.git/" in r.path]
        assert fetches and all(r.headers["authorization"] == f"token {TOKEN}" for r in fetches)
        assert states(forge) == ["pending", "error"]
        # A repository elsewhere (another port of the same host): no token.
        job = Job(2, request(4, clone_url=f"{other.url}/acme/public.git"), 1)
        with pytest.raises(ReviewError):
            worker.run_review_job(job)
        assert [r for r in other.requests if "/acme/public.git/" in r.path]
        assert all("authorization" not in r.headers for r in other.requests)
    assert list(forge_env.iterdir()) == []


@pytest.mark.parametrize(
    ("clone_url", "base", "scope"),
    [
        ("https://forge.example/a/b.git", "https://forge.example", "https://forge.example/"),
        ("https://FORGE.example:443/a/b.git", "https://forge.example", "https://forge.example/"),
        ("https://f.example/git/a/b.git", "https://f.example/git/", "https://f.example/git/"),
        ("https://f.example:8443/a/b.git", "https://f.example:8443", "https://f.example:8443/"),
        ("https://f.example/gitx/a.git", "https://f.example/git", None),
        ("https://f.example:8443/a/b.git", "https://f.example", None),
        ("https://evil.example/a/b.git", "https://forge.example", None),
        ("https://forge.example.evil/a.git", "https://forge.example", None),
        ("http://forge.example/a/b.git", "http://forge.example", "http://forge.example/"),
        ("http://forge.example/a/b.git", "https://forge.example", None),
        ("https://forge.example/a/b.git", "http://forge.example", None),
        ("ssh://forge.example/a/b.git", "https://forge.example", None),
    ],
)
def test_auth_scope(clone_url: str, base: str, scope: str | None) -> None:
    assert worker.auth_scope(clone_url, base) == scope


@pytest.fixture(scope="module")
def forge_repos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``<root>/acme/private.git`` with a topic branch; (root, head SHA)."""
    root = tmp_path_factory.mktemp("forge-repos")
    path = root / "acme" / "private.git"
    make_repo(path, BASE)
    subprocess.run(
        ["git", "--git-dir", str(path), "branch", "topic", "main"],
        check=True,
        env={"PATH": os.environ["PATH"], "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(root)},
    )
    return root, commit(path, PLANTED, "topic", branch="topic")


def test_a_clone_url_on_another_host_name_is_fetched_from_the_forge_with_the_token(
    certs: CertFiles,
    forge_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    forge_repos: tuple[Path, str],
) -> None:
    root, head = forge_repos
    tls = server_tls(certs)
    with FakeForgejo(token=TOKEN, ssl_context=tls, git_root=root) as forge:
        use_forge(monkeypatch, forge)  # https://127.0.0.1:<port>
        # Forgejo's ROOT_URL names another host: the webhook's clone URL is on it.
        elsewhere = f"https://git.example.invalid:{forge.port}/acme/private.git"
        job = Job(5, request(5, repo="private", head_sha=head, clone_url=elsewhere), 1)
        worker.run_review_job(job)
        fetches = [r for r in forge.requests if r.kind == "git"]
        assert fetches and all(r.headers["authorization"] == f"token {TOKEN}" for r in fetches)
        assert states(forge) == ["pending", "failure"]
        [review] = forge.reviews()
        assert review["commit_id"] == head and review["event"] == "REQUEST_CHANGES"


def test_an_http_forge_serves_the_clone_over_plain_http_to_its_host_only(
    forge_env: Path, monkeypatch: pytest.MonkeyPatch, forge_repos: tuple[Path, str]
) -> None:
    root, head = forge_repos
    with FakeForgejo(token=TOKEN, git_root=root) as forge:
        use_forge(monkeypatch, forge)  # http://127.0.0.1:<port>
        job = Job(
            6,
            request(6, repo="private", head_sha=head, clone_url=f"{forge.url}/acme/private.git"),
            1,
        )
        worker.run_review_job(job)
        assert [r for r in forge.requests if r.kind == "git"]
        assert states(forge) == ["pending", "failure"]
    # Another http:// host is still refused: git allows plain HTTP for the forge only.
    with FakeForgejo(token=TOKEN) as forge, FakeForgejo(git_root=root) as other:
        use_forge(monkeypatch, forge)
        url = f"{other.url}/x/y.git"
        job = Job(7, request(7, repo="private", head_sha=head, clone_url=url), 1)
        with pytest.raises(ReviewError, match="transport 'http' not allowed"):
            worker.run_review_job(job)
        assert not [r for r in other.requests if r.kind == "git"]
        assert states(forge) == ["pending", "error"]


def test_a_redirect_to_another_origin_never_carries_the_forge_token(
    certs: CertFiles,
    forge_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    forge_repos: tuple[Path, str],
) -> None:
    # git keeps sending an http.<forge>.extraHeader after following a redirect (libcurl
    # drops it from the redirected GET; git adds it back on the upload-pack POSTs).
    root, head = forge_repos
    tls = server_tls(certs)
    with (
        FakeForgejo(token=TOKEN, ssl_context=tls, git_root=root) as forge,
        RecordingGitServer(root, tls) as other,
    ):
        use_forge(monkeypatch, forge)
        forge.git_redirect = other.url  # the same repositories, at another origin
        url = f"{forge.url}/acme/private.git"
        job = Job(9, request(9, repo="private", head_sha=head, clone_url=url), 1)
        with pytest.raises(ReviewError) as caught:
            worker.run_review_job(job)
        assert [r for r in forge.requests if r.kind == "git"]
        assert not [h for _, _, h in other.requests if "authorization" in h]
        assert not [h for _, _, h in other.requests if TOKEN in repr(h)]
        message = str(caught.value)
        assert "\n" not in message and caught.value.exit_code == EXIT_CLONE
        assert f"redirected to {other.url}" in message and "does not follow" in message
        assert states(forge) == ["pending", "error"] and forge.reviews() == []
    assert list(forge_env.iterdir()) == []


def test_a_job_retried_after_its_review_was_posted_does_not_post_it_again(
    git_server: GitHttpsServer,
    forge_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    queue: JobQueue,
    pool: list[Workers],
) -> None:
    from auto_review_gateway.core.retry import Retry
    from auto_review_gateway.forges.forgejo import client as forgejo

    monkeypatch.setattr(forgejo, "make_retry", lambda: Retry(2, sleep=lambda s: None))
    with FakeForgejo(token=TOKEN) as forge:
        use_forge(monkeypatch, forge)
        # The pending status goes through, then the forge fails the final one (both
        # tries): the job fails after its review was posted, and is retried.
        forge.fail("status", 503, times=2, after=1)
        queue.submit(job_for(git_server, "planted").request)
        metrics = Metrics()
        start(pool, queue, worker.run_review_job, metrics=metrics, retry_delay=lambda n: 0.0)
        wait_until(drained(queue), 30)
        assert queue.get(1)["state"] == "done" and queue.get(1)["attempts"] == 2  # type: ignore[index]
        assert len(forge.reviews()) == 1  # the second run found its review on the PR
        assert states(forge) == ["pending", "failure", "failure", "error", "pending", "failure"]
        assert metrics.value("job_retries_total", {"cause": "post"}) == 1


def test_a_schema_1_database_is_migrated_in_place(db_path: str) -> None:
    os.makedirs(os.path.dirname(db_path), exist_ok=True)
    with sqlite3.connect(db_path) as db:  # as the previous release left it
        db.executescript(
            sqlite_db._SCHEMA.replace(",\n    not_before  REAL    NOT NULL DEFAULT 0", "")
            + "PRAGMA user_version = 1;"
            " INSERT INTO jobs (owner, repo, pr_number, head_sha, base_ref, clone_url, reason,"
            f" created_at) VALUES ('acme', 'demo', 1, '{1:040x}', 'main', 'u', 'ci', 0);"
        )
        assert "not_before" not in {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    db.close()
    queue = JobQueue(db_path)
    try:
        job = queue.claim()
        assert job is not None and job.request.head_sha == f"{1:040x}"
        assert queue.retry(job.id, "post: HTTP 503", 0.0)
        assert queue.recent()[0]["not_before"] > 0
    finally:
        queue.close()
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == sqlite_db.SCHEMA_VERSION == 3
    db.close()


def test_a_second_connection_in_the_process_keeps_the_queues_commits_visible(
    db_path: str,
) -> None:
    """The PR history opens the queue's file too. Opening must not close a descriptor of
    the file (that drops the process's POSIX locks: another process would then reset the
    write-ahead log under the queue's connection): every commit stays visible outside."""
    from auto_review_gateway.jobs.history import PrHistory

    queue = JobQueue(db_path)
    history = PrHistory(db_path)
    read = "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from jobs').fetchone()[0])"  # noqa: E501
    try:
        for n in range(1, 4):
            assert queue.submit(request(n)).status == "accepted"
            seen = subprocess.run([sys.executable, "-c", read, db_path], capture_output=True,
                                  text=True, check=True).stdout  # fmt: skip
            assert int(seen) == n
    finally:
        history.close()
        queue.close()
