"""`serve` replicas sharing one PostgreSQL job store (AR_QUEUE_URL), through the real
single file: sandboxed under runc, reaching the database and the forge on this host
through AUTO_REVIEW_HOST_LOOPBACK=1 (as 10.0.2.2), and `--bare`. A real PostgreSQL 15
cluster of the test's own (tests/pgcluster.py), the Forgejo stand-in serving the
repository and counting every review posted. Leases are short and polls fast
(AR_QUEUE_LEASE, AR_QUEUE_POLL_INTERVAL), so that a dead replica's job is taken over in
seconds; every wait is for an event (a row, a post, a status), never a fixed sleep."""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from changes import wait_until
from conftest import HOST_PYTHON, needs_root
from fake_forgejo import FakeForgejo
from gitserver import commit, make_ca, make_repo
from pgcluster import Cluster, free_port
from sandboxrun import Serving

pytestmark = needs_root
SECRET = "webhook-secret-for-pg-tests"
TOKEN = "forge-token-for-pg-tests"
LEASE = "2"  # seconds: a SIGKILLed replica's job is free again this soon
POLL = "0.2"
EXIT_DATABASE = 8


@pytest.fixture(scope="module")
def pg() -> Iterator[Cluster]:
    cluster = Cluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def world() -> Iterator[dict]:
    base = Path("/tmp") / f"ar-pgstore-{os.getpid()}"
    base.mkdir(mode=0o755)
    repo = base / "repos" / "acme" / "demo.git"
    make_repo(repo, {"app.py": "x = 1\n"}, "base")
    heads = []
    for i in range(6):
        subprocess.run(["git", "--git-dir", str(repo), "branch", f"t{i}", "main"], check=True)
        heads.append(commit(repo, {"app.py": f"x = {i}   \n"}, f"t{i}", branch=f"t{i}"))
    subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
    with FakeForgejo(token=TOKEN, git_root=base / "repos") as forge:
        yield {"forge": forge, "heads": heads, "base": base}
    shutil.rmtree(base, ignore_errors=True)


class Replica(Serving):
    """One `serve` replica: sandboxed with the host's loopback opted in, or `--bare`."""

    def __init__(
        self, app: Path, world: dict, url: str, *, bare: bool = False, **extra: str
    ) -> None:
        self.port = free_port()
        host = "127.0.0.1" if bare else "10.0.2.2"  # this host, as each one reaches it
        home = world["base"] / f"replica-{self.port}"
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "AUTO_REVIEW_CACHE_DIR": str(world["base"] / "cache"),
            "AUTO_REVIEW_STATE_DIR": str(home / "state"),
            "AR_GATEWAY_BIND": f"127.0.0.1:{self.port}",
            "WEBHOOK_SECRET": SECRET,
            "FORGEJO_BASE_URL": f"http://{host}:{world['forge'].port}",
            "AR_FORGEJO_TOKEN": TOKEN,
            "AR_QUEUE_URL": url.replace("@127.0.0.1:", f"@{host}:"),
            "AR_QUEUE_LEASE": LEASE,
            "AR_QUEUE_POLL_INTERVAL": POLL,
            "AR_REVIEW_CONCURRENCY": "2",
            "AR_QUEUE_MAX": "1000",
            "AR_RECONCILE_INTERVAL": "0",  # on in its own test only: the PRs of others stay put
            **({"AUTO_REVIEW_BARE": "force"} if bare else {"AUTO_REVIEW_HOST_LOOPBACK": "1"}),
            **extra,
        }
        super().__init__(app, env)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def kill(self) -> None:
        """SIGKILL the replica whole: its runtime and container, then the launcher."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        for pid in [int(p) for p in children.split()]:
            os.kill(pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait(timeout=30)


def pr_event(number: int, head: str) -> dict:
    return {
        "action": "opened",
        "number": number,
        "pull_request": {
            "number": number,
            "draft": False,
            "head": {"sha": head, "ref": f"topic{number}"},
            "base": {"ref": "main"},
        },
        "repository": {
            "name": "demo",
            "full_name": "acme/demo",
            "owner": {"login": "acme", "username": "acme"},
            # Forgejo's ROOT_URL: the gateway fetches from FORGEJO_BASE_URL instead
            "clone_url": "https://forge.example.invalid/acme/demo.git",
        },
    }


def deliver(replica: Replica, event: dict, delivery: str | None = None) -> tuple[int, dict]:
    body = json.dumps(event).encode()
    request = urllib.request.Request(
        replica.url("/webhooks/forgejo"),
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Forgejo-Event": "pull_request",
            "X-Forgejo-Delivery": delivery or str(uuid.uuid4()),
            "X-Forgejo-Signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def get(replica: Replica, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(replica.url(path), timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_for(
    predicate, timeout: float = 120, *, forge: FakeForgejo | None = None, pg: Cluster | None = None
) -> None:
    """Re-check `predicate` each time the forge stand-in answers a request (its change
    pipe) or the cluster writes its write-ahead log (every commit does), never on a
    clock; timed out after `timeout`."""
    wait_until(
        predicate,
        dirs=[pg.data / "pg_wal"] if pg is not None else (),
        change_fds=[forge.changed_fd] if forge is not None else (),
        timeout=timeout,
        what="the store's rows" if pg is not None else "the forge's posts",
    )


def poll_for(predicate, timeout: float = 30) -> None:
    """For what changes without an event to wait on (a replica's /readyz as the database
    comes and goes, a count of connections): re-check every 0.1 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def reviews_per_pr(forge: FakeForgejo) -> dict[int, int]:
    counts: dict[int, int] = {}
    for path, _body in forge.posted("/reviews"):
        number = int(path.split("/pulls/")[1].split("/")[0])
        counts[number] = counts.get(number, 0) + 1
    return counts


def rows(pg: Cluster, database: str, query: str) -> list[str]:
    out = pg.sql(query, database)
    return out.splitlines() if out else []


def test_three_replicas_starting_at_once_migrate_once_and_review_each_head_once(
    app: Path, pg: Cluster, world: dict
) -> None:
    forge: FakeForgejo = world["forge"]
    db = pg.database("three")
    url = pg.url(database=db)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:  # all three on an empty database
        replicas = list(
            pool.map(lambda bare: Replica(app, world, url, bare=bare), (False, False, True))
        )
    try:
        versions = rows(pg, db, "SELECT version FROM schema_migrations ORDER BY version")
        assert versions == [str(v) for v in range(1, len(versions) + 1)], versions
        applied = ["".join(r.errors).count(f"schema {versions[-1]} applied") for r in replicas]
        assert sorted(applied) == [0, 0, 1], applied  # one replica migrated, the others waited

        # 300 deliveries in random order: 200 pull requests, and 100 duplicates of them
        # sent to another replica, half the same delivery again, half a new delivery id
        rng = random.Random(24)
        first = 3000
        originals = [(first + i, str(uuid.uuid4())) for i in range(200)]
        sends = [(n, d, rng.randrange(3)) for n, d in originals]
        for n, d, to in rng.sample(sends, 100):
            again = d if rng.random() < 0.5 else str(uuid.uuid4())
            sends.append((n, again, (to + 1 + rng.randrange(2)) % 3))
        rng.shuffle(sends)
        heads = world["heads"]

        def send(item: tuple[int, str, int]) -> tuple[int, dict]:
            n, delivery, to = item
            event = pr_event(n, heads[n % len(heads)])
            for _ in range(3):  # as a forge redelivers a delivery whose connection broke
                try:
                    return deliver(replicas[to], event, delivery)
                except (ConnectionError, http.client.HTTPException, urllib.error.URLError):
                    resent.append(delivery)  # under this burst the port forward may reset one
            raise AssertionError(f"delivery {delivery} failed three times")

        resent: list[str] = []
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(send, sends))
        codes = [code for code, _ in answers]
        assert set(codes) <= {200, 202}, codes
        # 200 accepted, the rest duplicates; a resent delivery whose first try was taken
        # before its connection broke is a duplicate of its own job
        assert 200 - len(resent) <= codes.count(202) <= 200, (codes.count(202), resent)
        assert all(body.get("duplicate") for code, body in answers if code == 200)
        ids = {body.get("job_id") for _, body in answers} - {None}
        assert ids == {int(i) for i in rows(pg, db, "SELECT id FROM jobs")}  # none unnamed

        prs = range(first, first + 200)
        wait_for(lambda: all(reviews_per_pr(forge).get(n) for n in prs), 240, forge=forge)
        wait_for(lambda: rows(pg, db, "SELECT count(*) FROM jobs WHERE state = 'done'")[0] == "200",
                 pg=pg)  # fmt: skip
        counts = reviews_per_pr(forge)
        assert [n for n in prs if counts.get(n) != 1] == []
        assert rows(pg, db, "SELECT count(*) FROM jobs") == ["200"]
        by = rows(pg, db, "SELECT count(DISTINCT claimed_by) FROM jobs")
        assert by == ["3"], "every replica took jobs"
    finally:
        for replica in replicas:
            assert replica.stop() in (0, 143)


def test_a_replica_killed_mid_review_leaves_its_job_to_another_posted_once(
    app: Path, pg: Cluster, world: dict
) -> None:
    forge: FakeForgejo = world["forge"]
    url = pg.url(database=pg.database("killed"))
    victim = Replica(app, world, url)
    heir = None
    forge.hold("status")  # the victim stops inside its review: at its pending status
    try:
        code, answer = deliver(victim, pr_event(4000, world["heads"][0]))
        assert code == 202, answer
        assert forge.wait_held("status")
        heir = Replica(app, world, url, bare=True)
        victim.kill()
    finally:
        forge.release("status")
    try:
        wait_for(lambda: reviews_per_pr(forge).get(4000) == 1, 60, forge=forge)
        wait_for(lambda: rows(pg, "killed", "SELECT state FROM jobs") == ["done"], pg=pg)
        job = rows(pg, "killed", "SELECT state, attempts FROM jobs")
        assert job == ["done|2"], job  # claimed by the victim, then by the heir
        assert reviews_per_pr(forge)[4000] == 1
    finally:
        assert heir is not None and heir.stop() in (0, 143)


def test_readyz_follows_the_database_and_a_restart_loses_no_accepted_job(
    app: Path, pg: Cluster, world: dict
) -> None:
    forge: FakeForgejo = world["forge"]
    url = pg.url(database=pg.database("restart"))
    replica = Replica(app, world, url)
    try:
        poll_for(lambda: get(replica, "/readyz")[0] == 200, 120)
        with urllib.request.urlopen(replica.url("/metrics"), timeout=30) as response:
            text = response.read().decode()  # the store's gauges, read from PostgreSQL
        assert "auto_review_oldest_pending_job_age_seconds 0" in text, text[-2000:]
        assert "auto_review_queue_depth 0" in text
        for n in range(5000, 5004):
            assert deliver(replica, pr_event(n, world["heads"][n % 6]))[0] == 202
        pg.stop()  # fast: every connection is cut, whatever it was doing
        poll_for(lambda: get(replica, "/readyz")[0] == 503)
        code, body = get(replica, "/readyz")
        assert code == 503 and "job database" in body["reason"], body
        assert deliver(replica, pr_event(5010, world["heads"][0]))[0] == 503
        pg.start()
        poll_for(lambda: get(replica, "/readyz")[0] == 200)
        assert deliver(replica, pr_event(5011, world["heads"][1]))[0] == 202
        done = "SELECT count(*) FROM jobs WHERE state = 'done'"
        wait_for(lambda: rows(pg, "restart", done) == ["5"], 60, pg=pg)
        counts = reviews_per_pr(forge)
        assert [counts.get(n) for n in (5000, 5001, 5002, 5003, 5011)] == [1] * 5
    finally:
        assert replica.stop() in (0, 143)


def test_a_webhook_lost_while_every_replica_was_down_is_reconciled(
    app: Path, pg: Cluster, world: dict
) -> None:
    forge: FakeForgejo = world["forge"]
    url = pg.url(database=pg.database("reconcile"))
    heads = world["heads"]
    for number, head in ((6000, heads[0]), (6001, heads[1])):
        forge.set_pull("acme", "demo", number, head)
    forge.set_pull("acme", "demo", 6002, heads[2], draft=True)  # never reviewed: a draft
    first = Replica(app, world, url)  # the repository becomes known by a webhook
    try:
        assert deliver(first, pr_event(6000, heads[0]))[0] == 202
        wait_for(lambda: reviews_per_pr(forge).get(6000) == 1, forge=forge)
    finally:
        assert first.stop() in (0, 143)
    # every replica down: 6001 was opened (and a push moved 6000) with no one to listen
    forge.set_pull("acme", "demo", 6000, heads[3])
    with pytest.raises(urllib.error.URLError):
        deliver(first, pr_event(6001, heads[1]))
    replicas = [Replica(app, world, url, AR_RECONCILE_INTERVAL="1") for _ in range(2)]
    try:
        wait_for(lambda: reviews_per_pr(forge).get(6001) == 1, forge=forge)
        wait_for(lambda: reviews_per_pr(forge).get(6000) == 2, forge=forge)  # the new head
        jobs = rows(pg, "reconcile", "SELECT pr_number, reason FROM jobs ORDER BY id")
        assert jobs == ["6000|pull_request:opened", "6000|reconcile", "6001|reconcile"] or jobs == [
            "6000|pull_request:opened",
            "6001|reconcile",
            "6000|reconcile",
        ], jobs
        assert 6002 not in reviews_per_pr(forge)
        lists = [r for r in forge.requests if r.kind == "pulls"]
        assert all("state=open" in r.path and "limit=50" in r.path for r in lists)
    finally:
        for replica in replicas:
            assert replica.stop() in (0, 143)
    counts = reviews_per_pr(forge)
    assert (counts[6000], counts[6001]) == (2, 1)  # queued once, by one of the two


def test_a_pr_followed_by_two_replicas_shares_its_history(
    app: Path, pg: Cluster, world: dict
) -> None:
    """Replica A reviews a PR; replica B reviews the next push: incrementally, without
    the finding A posted, and editing A's summary comment, from the shared history."""
    forge: FakeForgejo = world["forge"]
    url = pg.url(database=pg.database("follow"))
    repo = world["base"] / "repos" / "acme" / "demo.git"
    subprocess.run(["git", "--git-dir", str(repo), "branch", "follow", "main"], check=True)
    first = commit(repo, {"app.py": "x = 1   \n"}, "first", branch="follow")
    second = commit(repo, {"app.py": "x = 1   \ny = 2   \n"}, "second", branch="follow")
    subprocess.run(["chmod", "-R", "a+rX", str(repo)], check=True)
    forge.set_pull("acme", "demo", 7000, first, head_ref="follow")

    def review(replica: Replica, head: str, action: str) -> dict:
        event = pr_event(7000, head)
        event["action"] = action
        forge.set_pull("acme", "demo", 7000, head, head_ref="follow")
        assert deliver(replica, event)[0] == 202
        done = f"SELECT count(*) FROM jobs WHERE state = 'done' AND head_sha = '{head}'"
        wait_for(lambda: rows(pg, "follow", done) == ["1"], pg=pg)
        return forge.posted("/pulls/7000/reviews")[-1][1]

    a = Replica(app, world, url)
    try:
        [x] = review(a, first, "opened")["comments"]  # x's trailing space
        assert (x["path"], x["new_position"]) == ("app.py", 1)
    finally:
        assert a.stop() in (0, 143)
    # sandboxed too: the history knows a forge by FORGEJO_BASE_URL, which replicas share
    b = Replica(app, world, url)
    try:
        later = review(b, second, "synchronized")
    finally:
        assert b.stop() in (0, 143)
    kinds = rows(pg, "follow", "SELECT kind, from_sha FROM pr_reviews ORDER BY id")
    assert rows(pg, "follow", "SELECT DISTINCT pr_number FROM pr_reviews") == ["7000"]
    found = rows(pg, "follow", "SELECT fingerprint, line, job_id FROM pr_findings")
    assert [k.split("|")[0] for k in kinds] == ["full", "incremental"], (kinds, found)
    [y] = later["comments"]  # y's only: x's finding was posted by A, B knows it
    assert (y["path"], y["new_position"]) == ("app.py", 2)
    assert kinds[1].split("|")[1] == first  # B started from what A reviewed
    summaries = [p for p, _ in forge.posted("/issues/7000/comments")]
    assert len(summaries) == 1, summaries  # A's summary, edited by B, never a second one
    assert rows(pg, "follow", "SELECT count(*) FROM pr_findings WHERE state = 'open'") == ["2"]


def serve_once(app: Path, world: dict, **env: str) -> subprocess.CompletedProcess[str]:
    home = world["base"] / "once"
    full = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "AUTO_REVIEW_CACHE_DIR": str(world["base"] / "cache"),
        "AUTO_REVIEW_STATE_DIR": str(home / "state"),
        "WEBHOOK_SECRET": SECRET,
        "FORGEJO_BASE_URL": f"http://10.0.2.2:{world['forge'].port}",
        "AR_FORGEJO_TOKEN": TOKEN,
        "AR_GATEWAY_BIND": f"127.0.0.1:{free_port()}",
        "AUTO_REVIEW_HOST_LOOPBACK": "1",
        **env,
    }
    return subprocess.run([HOST_PYTHON, str(app), "serve"], env=full, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip


def test_a_database_that_cannot_be_used_is_one_line_with_the_fix(
    app: Path, pg: Cluster, world: dict
) -> None:
    wrong = serve_once(app, world, AR_QUEUE_URL=pg.url("10.0.2.2", password="not-it"))
    assert wrong.returncode == EXIT_DATABASE, wrong.stderr
    [line] = [x for x in wrong.stderr.splitlines() if "error" in x]
    assert "refused the password of role auto_review" in line and "AR_QUEUE_URL" in line
    assert "not-it" not in wrong.stderr + wrong.stdout and "Traceback" not in wrong.stderr

    nobody = serve_once(app, world, AR_QUEUE_URL=pg.url("10.0.2.2", port=free_port()))
    assert nobody.returncode == EXIT_DATABASE, nobody.stderr
    [line] = [x for x in nobody.stderr.splitlines() if "error" in x]
    assert "cannot reach the database at 10.0.2.2" in line and "start PostgreSQL" in line
    assert pg.password not in nobody.stderr

    # the sandbox's own loopback: refused before anything starts, with the fix
    inside = serve_once(app, world, AR_QUEUE_URL=pg.url("127.0.0.1"))
    assert inside.returncode == 78 and "AR_QUEUE_URL names 127.0.0.1" in inside.stderr
    assert pg.password not in inside.stderr

    other = serve_once(app, world, AR_QUEUE_URL="mysql://u:p@10.0.2.2/x")
    assert other.returncode == 6 and "AR_QUEUE_URL must be a postgresql://" in other.stderr


def test_tls_to_the_database_checks_its_certificate_against_the_ca_file(
    app: Path, pg: Cluster, world: dict
) -> None:
    certs = make_ca(world["base"] / "pg-certs", hosts=("10.0.2.2", "127.0.0.1"))
    pg.enable_tls(certs.server_cert, certs.server_key)
    url = pg.url(database=pg.database("tls")) + "?sslmode=verify-full"
    untrusted = serve_once(app, world, AR_QUEUE_URL=url.replace("127.0.0.1", "10.0.2.2"))
    assert untrusted.returncode == EXIT_DATABASE, untrusted.stderr
    [line] = [x for x in untrusted.stderr.splitlines() if "error" in x]
    assert "TLS to the database" in line and "AUTO_REVIEW_CA_FILE" in line
    encrypted = (
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)"
        " WHERE ssl AND datname = 'tls' AND application_name = 'auto-review'"
    )
    for bare in (False, True):  # the CA reaches libpq in the sandbox and on the host
        replica = Replica(app, world, url, bare=bare, AUTO_REVIEW_CA_FILE=str(certs.ca_cert))
        try:
            poll_for(lambda: int(pg.sql(encrypted)) >= 2)  # the store's and the listener's
            assert get(replica, "/info")[1]["queue"]["pending"] == 0
        finally:
            assert replica.stop() in (0, 143)


LEASES = """
import psycopg
from auto_review_gateway.jobs.pg_queue import PgJobQueue
from auto_review_gateway.jobs.spec import JobRequest

clock = psycopg.connect(URL, autocommit=True)

def lease_runs_out(job_id):
    # The store reads the database's clock; rather than wait for it, the lease is moved
    # an hour into the past, as if that hour had gone by for this job alone.
    clock.execute("UPDATE jobs SET lease_until = lease_until - 3600 WHERE id = %s", (job_id,))

steady = PgJobQueue(URL, forge="forgejo", lease=600.0, max_attempts=2)
flaky = PgJobQueue(URL, forge="forgejo", lease=600.0, max_attempts=2)  # never renews
for number in (8000, 8001):
    request = JobRequest("acme", "demo", number, "a" * 40, "main", "https://f/a/d.git", "x")
    assert steady.submit(request).status == "accepted"
held = steady.claim()
assert steady.renew([held.id]) == 1 and flaky.renew([held.id]) == 0  # whose it is
first = flaky.claim()  # the other job: the held one is skipped
assert (held.request.pr_number, first.request.pr_number, first.attempts) == (8000, 8001, 1)
assert steady.claim() is None and steady.reap(3) == []  # flaky's lease still holds
lease_runs_out(first.id)
again = steady.claim()  # flaky's lease passed: the job is taken again
assert (again.id, again.attempts) == (first.id, 2)
assert flaky.finish(first.id) is False  # no longer flaky's: nothing changes
assert steady.retry(again.id, "try later", 0.0)  # steady still holds it
third = flaky.claim()  # due at once
assert (third.id, third.attempts) == (first.id, 3)
assert steady.reap(3) == []  # its lease holds: not failed yet
lease_runs_out(third.id)
[dead] = steady.reap(3)  # three claims, the last lease passed: failed
row = steady.get(dead.id)
assert row["state"] == "failed" and row["error"].startswith("interrupted 3 times"), row
assert steady.finish(held.id) is True and steady.claim() is None
steady.close()
flaky.close()
clock.close()
print("ok")
"""


def test_an_expired_lease_is_claimed_again_then_the_job_failed_after_max_attempts(
    pg: Cluster,
) -> None:
    """The store itself, run by the system python3 (its psycopg), on the database's clock."""
    url = pg.url(database=pg.database("leases"))
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent / "payload" / "gateway")}
    result = subprocess.run([HOST_PYTHON, "-c", f"URL = {url!r}\n{LEASES}"], env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.stdout.strip() == "ok", result.stderr[-3000:]


def test_the_queue_url_travels_as_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from launcher.sandbox import gateway_env

    url = "postgresql://auto_review:s3cret@db.example:5432/auto_review?sslmode=verify-full"
    monkeypatch.setenv("AR_QUEUE_URL", url)
    monkeypatch.setenv("AR_QUEUE_LEASE", "30")
    env, secrets = gateway_env.sandbox_env_and_secrets(["PATH=/usr/bin"], "runc", {})
    assert secrets["AR_QUEUE_URL"] == url  # the pipe, never config.json or PID 1's env
    assert not [item for item in env if "s3cret" in item] and "AR_QUEUE_LEASE=30" in env
