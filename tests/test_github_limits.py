"""GitHub's secondary rate limits, followed as its "Rate limits for the REST API" says
(docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api, "Exceeding the
rate limit"): a 403 or 429 that says it is a secondary limit, without ``retry-after`` and
with ``x-ratelimit-remaining`` not 0, is waited out for at least one minute (longer at
each retry); with ``retry-after``, that long; only within the review's deadline: a job
whose deadline passes goes back to the queue, due after the wait, not failed.

Against the GitHub stand-in (tests/fake_github.py) over verified TLS; the clock and the
sleeper are injected, so a minute of waiting costs no real time.
"""

from __future__ import annotations

import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "payload" / "gateway"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from auto_review_gateway.core import httpjson
from auto_review_gateway.core.metrics import Metrics
from auto_review_gateway.core.model import Finding, Review
from auto_review_gateway.forges.github import client as github
from auto_review_gateway.forges.publication import Publication
from auto_review_gateway.jobs import github_job
from auto_review_gateway.jobs.queue import JobQueue
from auto_review_gateway.jobs.retry_policy import retryable, server_wait
from auto_review_gateway.jobs.spec import JobRequest
from auto_review_gateway.jobs.workers import Workers

from tests.fake_github import FakeGitHub
from tests.gitserver import CertFiles, make_ca

TOKEN = "ghp_" + "L" * 36
HEAD = "c" * 40
PATCH = "@@ -1,1 +1,2 @@\n a = 1\n+b = 2\n"


class Clock:
    """A monotonic clock that moves only when the injected sleeper sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_ca(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def hub(certs: CertFiles, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca_cert))
    with FakeGitHub(ssl_context=context, tokens=(TOKEN,)) as fake:
        fake.set_pull("acme", "demo", 7, HEAD, files=[{"filename": "a.py", "patch": PATCH}])
        yield fake


def gh(hub: FakeGitHub, clock: Clock) -> github.GitHub:
    config = github.GitHubConfig(hub.api_url, static_token=TOKEN)
    return github.GitHub(config, clock=clock, sleep=clock.sleep)


def review() -> Review:
    finding = Finding("a.py", 2, "low", "rule", "message")
    return Review(
        base="b" * 40, head=HEAD, reviewer="builtin", findings=[finding], files_reviewed=1
    )


def test_a_403_secondary_limit_without_retry_after_is_waited_a_minute(hub: FakeGitHub) -> None:
    clock = Clock()
    hub.secondary_limit("status", 403)
    gh(hub, clock).set_status("acme", "demo", HEAD, "success", "ok")
    [limited, posted] = hub.of_kind("status")
    assert limited.status == 403 and posted.status == 201
    assert len(clock.sleeps) == 1 and 60 <= clock.sleeps[0] <= 75
    assert [s["state"] for s in hub.statuses] == ["success"]


def test_a_429_secondary_limit_is_waited_a_minute_then_longer(hub: FakeGitHub) -> None:
    clock = Clock()
    hub.secondary_limit("review", 429, times=2)  # the review is posted on the third try
    gh(hub, clock).post_review("acme", "demo", 7, review())
    assert [r.status for r in hub.of_kind("review")] == [429, 429, 200]
    first, second = clock.sleeps
    assert 60 <= first <= 75 and 120 <= second <= 150  # at least a minute, doubled
    assert len(hub.reviews("acme", "demo", 7)) == 1


def test_a_secondary_limit_with_retry_after_waits_that_long(hub: FakeGitHub) -> None:
    clock = Clock()
    hub.secondary_limit("pull", 403, retry_after="90")
    assert gh(hub, clock).get_pull("acme", "demo", 7).head_sha == HEAD
    assert clock.sleeps == [90.0]


def test_a_403_that_is_no_rate_limit_fails_at_once(hub: FakeGitHub) -> None:
    clock = Clock()
    hub.fail("status", 403, body={"message": "Resource not accessible by integration"})
    with pytest.raises(httpjson.HttpError) as exc:
        gh(hub, clock).set_status("acme", "demo", HEAD, "success", "ok")
    assert exc.value.status == 403 and not exc.value.transient and clock.sleeps == []
    assert exc.value.headers["x-ratelimit-remaining"] != "0"  # GitHub sends it on every answer
    assert not retryable(exc.value)


def test_a_wait_past_the_deadline_is_not_waited_and_keeps_its_minute(hub: FakeGitHub) -> None:
    clock = Clock()
    hub.secondary_limit("status", 403, times=2)  # the pending status, then the error status
    with pytest.raises(httpjson.HttpError) as exc:
        Publication("acme/demo#7", HEAD, gh(hub, clock).within(30), key="job-1")
    assert clock.sleeps == []  # a minute does not fit in 30 s: not waited
    assert exc.value.transient and retryable(exc.value)
    assert server_wait(exc.value) == 60.0  # the queue's retry waits at least that


def test_a_job_past_its_deadline_goes_back_to_the_queue(
    hub: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_API_URL", hub.api_url)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("AUTO_REVIEW_STATE_DIR_INSIDE", str(tmp_path / "state"))
    for name in ("GITHUB_APP_ID", "FORGEJO_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    clock = Clock()
    config = github.load_config()
    github_job._clients.clear()
    github_job._clients[config] = github.GitHub(config, clock=clock, sleep=clock.sleep)
    # Two waits of 300 s fit in the job's deadline, a third does not.
    assert 600 < github_job.REVIEW_DEADLINE <= 900
    hub.secondary_limit("status", 403, times=3, retry_after="300")  # the pending status
    queue = JobQueue(str(tmp_path / "state" / "jobs.sqlite3"))
    request = JobRequest(
        owner="acme",
        repo="demo",
        pr_number=7,
        head_sha=HEAD,
        base_ref="main",
        clone_url=f"{hub.api_url}/acme/demo.git",
        reason="pull_request:opened",
    )
    queue.submit(request)
    metrics = Metrics()
    workers = Workers(queue, github_job.run_github_job, concurrency=1, metrics=metrics)
    try:
        seq = queue.changes.current()
        workers.start()
        deadline = time.monotonic() + 20
        # The retry is counted, then recorded in the queue, which wakes its waiters:
        # re-checked on each change of the queue, never on a clock.
        while metrics.value("job_retries_total", {"cause": "post"}) != 1:
            left = deadline - time.monotonic()
            assert left > 0, "the job was not retried"
            queue.changes.wait(seq, left)
            seq = queue.changes.current()
    finally:
        workers.stop(5)
        github_job._clients.clear()
    row = queue.recent()[0]
    queue.close()
    assert row["state"] == "pending" and row["attempts"] == 1  # not failed: retried later
    assert "HTTP 403" in row["error"]
    assert row["not_before"] >= time.time() + 290  # no sooner than GitHub asked
    assert clock.sleeps == [300.0, 300.0]  # waited inside the deadline, not past it
    assert [r.status for r in hub.of_kind("status")] == [403, 403, 403, 201]
    assert [s["state"] for s in hub.statuses] == ["error"]  # told, best effort
