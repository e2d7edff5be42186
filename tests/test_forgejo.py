"""Posting a review to a pull request, against a loopback server speaking the Forgejo API.

The server (tests/fake_forgejo.py) stands in for a Forgejo instance, which cannot be
reached from here; it checks the token and the bodies' shapes like the real API and
records every request.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_forgejo import FakeForgejo
from tests.gitserver import CertFiles, make_ca

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "payload" / "gateway"))

from auto_review_gateway.core import httperror, httpjson
from auto_review_gateway.core.model import (
    EXIT_CONFIG,
    EXIT_POST,
    EXIT_USAGE,
    Finding,
    Review,
    ReviewError,
)
from auto_review_gateway.core.retry import Retry
from auto_review_gateway.forges import bodies
from auto_review_gateway.forges.forgejo import client as forgejo
from auto_review_gateway.forges.forgejo import config as forgejo_config

TOKEN = "f0rgej0-t0ken-0123456789abcdef0123456789abcdef"
HEAD = "3a5f" * 10
BASE = "9b1c" * 10
STATUS_PATH = f"/api/v1/repos/octo/widgets/statuses/{HEAD}"
REVIEW_PATH = "/api/v1/repos/octo/widgets/pulls/42/reviews"


def make_review(*severities: str, skipped: list[str] | None = None) -> Review:
    """A review with one finding per severity, on lines 10, 11, ... of two files."""
    findings = [
        Finding(
            path="src/app.py" if i % 2 == 0 else "lib/util.go",
            line=10 + i,
            severity=severity,
            rule=f"rule-{i}",
            message=f"problem number {i}",
        )
        for i, severity in enumerate(severities)
    ]
    return Review(
        base=BASE,
        head=HEAD,
        reviewer="builtin+llm:review-model-1",
        findings=findings,
        files_reviewed=2,
        skipped=skipped or [],
    )


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits of the forge client's retries, recorded instead of slept."""
    waited: list[float] = []
    monkeypatch.setattr(
        forgejo, "make_retry", lambda: Retry(forgejo.RETRY_ATTEMPTS, sleep=waited.append)
    )
    return waited


@pytest.fixture
def forge(monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> Iterator[FakeForgejo]:
    """A running fake Forgejo with FORGEJO_BASE_URL / AR_FORGEJO_TOKEN pointing at it."""
    with FakeForgejo(token=TOKEN) as server:
        monkeypatch.setenv("FORGEJO_BASE_URL", server.base_url)
        monkeypatch.setenv("AR_FORGEJO_TOKEN", TOKEN)
        yield server


def post_error(review: Review, pr: str = "octo/widgets#42") -> ReviewError:
    """publish(), expecting a ReviewError that never carries the token."""
    with pytest.raises(ReviewError) as caught:
        forgejo.publish(review, pr=pr)
    exc = caught.value
    assert TOKEN not in str(exc) and TOKEN not in repr(exc)
    assert "\n" not in str(exc)
    return exc


def test_publish_passing_review(forge: FakeForgejo) -> None:
    review = make_review("low", "info")
    assert review.verdict == "pass"
    forgejo.publish(review, pr="octo/widgets#42")

    # Before posting, the bot (userGetCurrent) looks for a pending review of its own to
    # delete (repoListPullReviews).
    assert [(r.method, r.path) for r in forge.requests] == [
        ("POST", STATUS_PATH),
        ("GET", "/api/v1/user"),
        ("GET", REVIEW_PATH + "?limit=50&page=1"),
        ("POST", REVIEW_PATH),
        ("POST", STATUS_PATH),
    ]
    for r in forge.requests:
        assert r.headers["authorization"] == f"token {TOKEN}"
        if r.method == "POST":
            assert r.headers["content-type"] == "application/json"
    assert forge.statuses() == [
        {
            "state": "pending",
            "context": "auto_review",
            "description": "auto-review is reviewing",
            "target_url": "",
        },
        {
            "state": "success",
            "context": "auto_review",
            "description": review.summary,
            "target_url": "",
        },
    ]
    [body] = forge.reviews()
    assert set(body) == {"body", "event", "commit_id", "comments"}
    assert body["event"] == "COMMENT"
    assert body["commit_id"] == HEAD
    assert body["comments"] == [
        {"path": "src/app.py", "new_position": 10, "body": "**low** rule-0: problem number 0"},
        {"path": "lib/util.go", "new_position": 11, "body": "**info** rule-1: problem number 1"},
    ]
    assert body["body"].startswith("### auto-review: pass\n\n" + review.summary)
    assert f"head `{HEAD[:12]}`" in body["body"]


def test_publish_failing_review_requests_changes(forge: FakeForgejo) -> None:
    review = make_review("medium", "high", "critical")
    assert review.verdict == "fail"
    forgejo.publish(review, pr="octo/widgets#42")

    assert [s["state"] for s in forge.statuses()] == ["pending", "failure"]
    assert forge.statuses()[1]["description"] == "fail: 1 critical, 1 high, 1 medium in 2 file(s)"
    [body] = forge.reviews()
    assert body["event"] == "REQUEST_CHANGES"
    assert [(c["path"], c["new_position"]) for c in body["comments"]] == [
        ("src/app.py", 10),
        ("lib/util.go", 11),
        ("src/app.py", 12),
    ]
    assert body["comments"][2]["body"] == "**critical** rule-2: problem number 2"


def test_warn_is_a_comment_and_a_success_status(forge: FakeForgejo) -> None:
    review = make_review("medium")
    assert review.verdict == "warn"
    forgejo.publish(review, pr="octo/widgets#42")
    assert [s["state"] for s in forge.statuses()] == ["pending", "success"]
    assert forge.reviews()[0]["event"] == "COMMENT"


def test_no_findings_still_posts_a_review_with_a_body(forge: FakeForgejo) -> None:
    forgejo.publish(make_review(), pr="octo/widgets#42")
    [body] = forge.reviews()
    assert body["comments"] == []
    assert body["event"] == "COMMENT"
    assert "pass: no findings in 2 file(s)" in body["body"]


@pytest.mark.parametrize("suffix", ["/", "/api/v1", "/api/v1/"])
def test_base_url_forms(forge: FakeForgejo, monkeypatch, suffix: str) -> None:
    monkeypatch.setenv("FORGEJO_BASE_URL", forge.base_url + suffix)
    forgejo.publish(make_review(), pr="octo/widgets#42")
    posts = [r.path for r in forge.requests if r.method == "POST"]
    assert posts == [STATUS_PATH, REVIEW_PATH, STATUS_PATH]


def test_500_on_the_review_sets_error_status(forge: FakeForgejo, sleeps: list[float]) -> None:
    forge.fail("review", 500)
    exc = post_error(make_review("high"))
    assert exc.exit_code == EXIT_POST
    assert "octo/widgets#42" in str(exc)
    assert f"POST {forge.base_url}{REVIEW_PATH}: HTTP 500" in str(exc)
    kinds = [r.kind for r in forge.requests if r.kind in ("status", "review")]
    assert kinds == ["status", "review", "review", "review", "review", "status"]
    assert len(sleeps) == 3 and 0 < sleeps[0] < sleeps[1] < sleeps[2] <= 8  # backoff
    assert [s["state"] for s in forge.statuses()] == ["pending", "error"]
    assert forge.statuses()[1]["description"] == "auto-review could not post its review"


def test_401_everywhere_still_tries_the_error_status(forge: FakeForgejo) -> None:
    # the forge echoes the token in its error: it must not reach our message
    forge.fail("status", 401, {"message": f"token {TOKEN} is invalid", "url": ""})
    exc = post_error(make_review("low"))
    assert exc.exit_code == EXIT_POST
    assert "HTTP 401 (token *** is invalid)" in str(exc)
    assert [s["state"] for s in forge.statuses()] == ["pending", "error"]
    assert forge.reviews() == []


def test_failure_of_the_final_status_is_reported(forge: FakeForgejo, monkeypatch) -> None:
    original = forgejo.set_status
    calls: list[str] = []

    def flaky(owner: str, repo: str, sha: str, state: str, description: str, **kw) -> None:
        calls.append(state)
        if state == "success":
            forge.fail("status", 503)
        try:
            original(owner, repo, sha, state, description, **kw)
        finally:
            forge.recover("status")

    monkeypatch.setattr(forgejo, "set_status", flaky)
    exc = post_error(make_review())
    assert exc.exit_code == EXIT_POST
    assert calls == ["pending", "success", "error"]
    states = [s["state"] for s in forge.statuses()]
    assert states == ["pending"] + ["success"] * forgejo.RETRY_ATTEMPTS + ["error"]


# --------------------------------------------------------------------------- as Forgejo behaves


def test_a_503_with_retry_after_is_retried_once_and_one_review_is_posted(
    forge: FakeForgejo, sleeps: list[float]
) -> None:
    forge.fail("status", 503, times=1, retry_after="7")
    forgejo.publish(make_review("low"), pr="octo/widgets#42")
    assert sleeps == [7.0]  # the server's Retry-After, not our backoff
    assert [s["state"] for s in forge.statuses()] == ["pending", "pending", "success"]
    assert len(forge.reviews()) == 1


def test_retry_after_as_an_http_date() -> None:
    headers = {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
    now = 1445412480.0 - 30  # 30 s before that date
    assert httperror.parse_retry_after(headers, now=now) == pytest.approx(30.0)
    assert httperror.parse_retry_after(headers, now=now + 3600) == 0.0  # in the past
    assert httperror.parse_retry_after({"Retry-After": "120"}) == 120.0
    assert httperror.parse_retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    assert httperror.parse_retry_after({"Retry-After": "soon"}) is None


def test_request_changes_refused_with_422_falls_back_to_a_comment(forge: FakeForgejo) -> None:
    # The bot opened this PR: Forgejo refuses "reject your own pull".
    forge.set_pull("octo", "widgets", 42, HEAD, author="auto-review-bot")
    forgejo.publish(make_review("high"), pr="octo/widgets#42")
    first, second = forge.reviews()
    assert first["event"] == "REQUEST_CHANGES" and second["event"] == "COMMENT"
    assert "(reject your own pull is not allowed)" in second["body"]
    assert forge.base_url not in second["body"]  # the forge's reason, not our request
    assert second["comments"] == first["comments"] and len(second["comments"]) == 1
    [stored] = forge.pull_reviews("octo", "widgets", 42)
    assert stored["state"] == "COMMENT"
    assert [s["state"] for s in forge.statuses()] == ["pending", "failure"]


def test_request_changes_on_a_closed_pr_falls_back_to_a_comment(forge: FakeForgejo) -> None:
    forge.set_pull("octo", "widgets", 42, HEAD, state="closed")
    forgejo.publish(make_review("critical"), pr="octo/widgets#42")
    assert [r["event"] for r in forge.reviews()] == ["REQUEST_CHANGES", "COMMENT"]
    assert "closed or merged" in forge.reviews()[1]["body"]


def test_a_500_while_posting_leaves_no_duplicated_comments(
    forge: FakeForgejo, sleeps: list[float]
) -> None:
    forge.fail_midway("review")  # the pending review and its comment stay behind
    forgejo.publish(make_review("medium", "low"), pr="octo/widgets#42")
    [stored] = forge.pull_reviews("octo", "widgets", 42)
    assert stored["state"] == "COMMENT"
    assert len(stored["comments"]) == 2  # not 4: the leftover pending review was deleted
    assert [r.kind for r in forge.requests].count("delete") == 1
    assert len(sleeps) == 1


def test_a_review_of_a_run_is_never_posted_twice(forge: FakeForgejo) -> None:
    review = make_review("low")
    forgejo.post_review("octo", "widgets", 42, review, key="job-9")
    forgejo.post_review("octo", "widgets", 42, review, key="job-9")  # the job ran again
    forgejo.post_review("octo", "widgets", 42, review, key="job-10")  # another job
    assert len(forge.reviews()) == 2
    assert "<!-- auto-review run job-9 -->" in forge.reviews()[0]["body"]


def test_the_token_is_checked_on_version_too() -> None:
    with FakeForgejo(token=TOKEN) as server:
        config = forgejo_config.ForgejoConfig(api_url=server.base_url + "/api/v1", token="wrong")
        with pytest.raises(httpjson.HttpError) as caught:
            forgejo.Forgejo(config).version(3)
        assert caught.value.status == 401
        ok = forgejo_config.ForgejoConfig(api_url=server.base_url + "/api/v1", token=TOKEN)
        assert forgejo.Forgejo(ok).version(3)["version"]


def test_an_http_forge_warns_and_rewrites_clone_urls() -> None:
    config = forgejo_config.load_config(
        {"FORGEJO_BASE_URL": "http://forge.lan:3000", "AR_FORGEJO_TOKEN": TOKEN}
    )
    assert config.plain_http and "http://" in (config.warning() or "")
    assert config.repo_clone_url("acme", "demo") == "http://forge.lan:3000/acme/demo.git"
    tls = forgejo_config.load_config(
        {"FORGEJO_BASE_URL": "https://f.example", "AR_FORGEJO_TOKEN": TOKEN}
    )
    assert tls.warning() is None


@pytest.mark.parametrize(
    ("unset", "listed"),
    [
        (("FORGEJO_BASE_URL", "AR_FORGEJO_TOKEN"), "FORGEJO_BASE_URL, AR_FORGEJO_TOKEN"),
        (("AR_FORGEJO_TOKEN",), "AR_FORGEJO_TOKEN"),
        (("FORGEJO_BASE_URL",), "FORGEJO_BASE_URL"),
    ],
)
def test_missing_env_is_a_config_error_listing_names_only(
    forge: FakeForgejo, monkeypatch: pytest.MonkeyPatch, unset: tuple[str, ...], listed: str
) -> None:
    for name in unset:
        monkeypatch.delenv(name)
    exc = post_error(make_review("high"))
    assert exc.exit_code == EXIT_CONFIG
    assert str(exc) == f"missing environment variable(s): {listed}"
    assert forge.base_url not in str(exc)
    assert forge.requests == []


@pytest.mark.parametrize(
    "url", ["ftp://forge.example", "https://bot:pw@forge.example", "forge.example"]
)
def test_bad_base_url_is_a_config_error(forge: FakeForgejo, monkeypatch, url: str) -> None:
    monkeypatch.setenv("FORGEJO_BASE_URL", url)
    exc = post_error(make_review())
    assert exc.exit_code == EXIT_CONFIG
    assert "FORGEJO_BASE_URL" in str(exc)
    assert "pw" not in str(exc)


@pytest.mark.parametrize(
    "pr", [None, "octo/widgets", "octo#1", "octo/widgets#0", "../x#1", "octo/wid gets#3", "a/b/c#1"]
)
def test_bad_pr_is_a_usage_error_before_anything_is_sent(forge: FakeForgejo, pr: str) -> None:
    exc = post_error(make_review(), pr=pr)
    assert exc.exit_code == EXIT_USAGE
    assert forge.requests == []


def test_set_status_and_post_review_are_usable_alone(forge: FakeForgejo) -> None:
    config = forgejo_config.load_config(
        {"FORGEJO_BASE_URL": forge.base_url, "AR_FORGEJO_TOKEN": TOKEN}
    )
    assert TOKEN not in repr(config)
    forgejo.set_status("octo", "widgets", HEAD, "pending", "queued\nfor review", config=config)
    answer = forgejo.post_review("octo", "widgets", 42, make_review("high"), config=config)
    assert answer["state"] == "REQUEST_CHANGES"
    assert answer["commit_id"] == HEAD
    assert answer["comments_count"] == 1
    assert forge.statuses()[0]["description"] == "queued for review"
    with pytest.raises(ValueError):
        forgejo.set_status("octo", "widgets", HEAD, "approved", "x", config=config)
    with pytest.raises(ReviewError):
        forgejo.set_status("octo", "widgets", "HEAD", "pending", "x", config=config)


def test_body_neutralises_markdown_in_repository_paths() -> None:
    body = bodies.render_body(make_review(skipped=["vendor/`x`](https://evil)", "gen/**"]))
    # exact: a longer fence than the path's backticks, so nothing of it is markup
    assert "Skipped (ignored paths): ``vendor/`x`](https://evil)``, `gen/**`" in body


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """A throwaway CA and a certificate for 127.0.0.1."""
    return make_ca(tmp_path_factory.mktemp("certs"))


def _server_context(certs: CertFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    return context


def test_https_is_verified_against_ssl_cert_file(
    certs: CertFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeForgejo(token=TOKEN, ssl_context=_server_context(certs)) as forge:
        monkeypatch.setenv("FORGEJO_BASE_URL", forge.base_url)
        monkeypatch.setenv("AR_FORGEJO_TOKEN", TOKEN)
        monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca_cert))
        assert forge.base_url.startswith("https://")
        forgejo.publish(make_review("high"), pr="octo/widgets#42")
        assert [s["state"] for s in forge.statuses()] == ["pending", "failure"]


def test_https_with_an_untrusted_certificate_fails_closed(
    certs: CertFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = make_ca(tmp_path / "other")  # a CA that did not sign the server's certificate
    with FakeForgejo(token=TOKEN, ssl_context=_server_context(certs)) as forge:
        monkeypatch.setenv("FORGEJO_BASE_URL", forge.base_url)
        monkeypatch.setenv("AR_FORGEJO_TOKEN", TOKEN)
        monkeypatch.setenv("SSL_CERT_FILE", str(other.ca_cert))
        exc = post_error(make_review())
        assert exc.exit_code == EXIT_POST
        assert "CERTIFICATE_VERIFY_FAILED" in str(exc)
        assert getattr(exc, "transient", None) is False  # not retried, nor is the job
        assert forge.requests == []  # nothing (no token) reached the server


def test_fake_without_a_fixed_token_accepts_any_forge_token(monkeypatch) -> None:
    with FakeForgejo() as forge:
        monkeypatch.setenv("FORGEJO_BASE_URL", forge.url)
        monkeypatch.setenv("AR_FORGEJO_TOKEN", "any-token-at-all")
        forgejo.publish(make_review("low"), pr="octo/widgets#42")
        assert [b["state"] for _path, b in forge.posted("/statuses/")] == ["pending", "success"]
        assert [p for p, _b in forge.posted("/reviews")] == [REVIEW_PATH]


def test_a_status_on_a_commit_the_repository_lacks_is_404_and_not_retried(
    forge: FakeForgejo, sleeps: list[float]
) -> None:
    forge.set_pull("octo", "widgets", 42, HEAD)  # the stand-in now knows octo/widgets
    with pytest.raises(ReviewError) as caught:
        forgejo.set_status("octo", "widgets", BASE, "pending", "x")
    assert "HTTP 404" in str(caught.value) and sleeps == []
    assert len(forge.of_kind("status")) == 1
    forgejo.set_status("octo", "widgets", HEAD, "pending", "x")  # its head is fine


def test_a_token_without_read_user_still_posts_once_per_run(forge: FakeForgejo) -> None:
    forge.fail("user", 403, {"message": "token does not have required scope: read:user"})
    review = make_review("low")
    forgejo.post_review("octo", "widgets", 42, review, key="job-3")
    forgejo.post_review("octo", "widgets", 42, review, key="job-3")
    assert len(forge.reviews()) == 1
    assert forge.of_kind("delete") == []  # whose pending review it is cannot be told


class BrokenForge:
    """A ForgeClient whose post_review fails with `error`; it records the statuses set.
    (A stand-in of the forge's interface, not of our code: Publication is the real one.)"""

    def __init__(self, error: BaseException) -> None:
        self.error, self.states = error, []

    def get_pull(self, owner: str, repo: str, number: int) -> None:
        raise AssertionError("not asked")

    def set_status(self, owner: str, repo: str, sha: str, state: str, description: str) -> None:
        self.states.append((state, description))

    def post_review(self, owner: str, repo: str, index: int, review: Review, *, key=None) -> None:
        raise self.error

    def secrets(self) -> list[str]:
        return [TOKEN]


def test_a_publication_never_stays_pending_after_an_unexpected_failure() -> None:
    from auto_review_gateway.forges.publication import Publication

    forge = BrokenForge(RuntimeError("a bug in the client"))
    publication = Publication("octo/widgets#42", HEAD, forge)
    with pytest.raises(RuntimeError):
        publication.finish(make_review("low"))
    assert [state for state, _ in forge.states] == ["pending", "error"]


def test_only_an_http_failure_to_post_is_worth_retrying() -> None:
    from auto_review_gateway.forges.publication import Publication

    refused = BrokenForge(ReviewError(f"the names are off (token {TOKEN})", EXIT_USAGE))
    with pytest.raises(httpjson.HttpError) as exc:
        Publication("octo/widgets#42", HEAD, refused).finish(make_review("low"))
    assert exc.value.exit_code == EXIT_POST and exc.value.transient is False
    assert TOKEN not in str(exc.value)  # the client's secrets are redacted
    timed_out = BrokenForge(httpjson.HttpError("timed out", EXIT_POST, transient=True))
    with pytest.raises(httpjson.HttpError) as exc:
        Publication("octo/widgets#42", HEAD, timed_out).finish(make_review("low"))
    assert exc.value.transient is True
