"""The GitHub forge client and ``/webhooks/github`` against the loopback GitHub stand-in
(tests/fake_github.py), over verified TLS: token and App auth, reviews whose comments
must sit on the diff, statuses, rate limits retried through an injected sleeper."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "payload" / "gateway"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from auto_review_gateway.core import httpjson
from auto_review_gateway.core.metrics import Metrics
from auto_review_gateway.core.model import Finding, Review, ReviewError
from auto_review_gateway.core.retry import Retry
from auto_review_gateway.forges.github import auth as github_auth
from auto_review_gateway.forges.github import client as github
from auto_review_gateway.forges.github import webhooks as github_webhooks
from auto_review_gateway.intake.endpoint import Intake
from auto_review_gateway.jobs.queue import JobQueue
from auto_review_gateway.jobs.spec import JobRequest

from tests.fake_github import FakeGitHub
from tests.gitserver import CertFiles, make_ca

TOKEN = "ghp_" + "t" * 36
HEAD = "a" * 40
SECRET = b"github-webhook-secret"
PATCH = "@@ -1,3 +1,4 @@\n a = 1\n-b = 2\n+b = 3\n+c = 4\n d = 5\n@@ -10,2 +11,2 @@\n x\n-y\n+z\n"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_ca(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hub(
    certs: CertFiles, app_key: rsa.RSAPrivateKey, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeGitHub]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca_cert))
    with FakeGitHub(ssl_context=context, tokens=(TOKEN,), app_key=app_key, now=clock) as fake:
        fake.set_pull("acme", "demo", 7, HEAD, files=[{"filename": "app.py", "patch": PATCH}])
        fake.install("acme", "demo")
        yield fake


class Sleeps(list):
    """An injected sleeper: records the waits, never sleeps."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client(hub: FakeGitHub, sleeps: Sleeps | None = None, **kw) -> github.GitHub:
    sleeps = Sleeps() if sleeps is None else sleeps
    config = github.GitHubConfig(hub.api_url, static_token=TOKEN)
    return github.GitHub(config, retry=lambda: Retry(4, sleep=sleeps, random=lambda: 0), **kw)


def review(*findings: tuple[str, int, str]) -> Review:
    return Review(
        base="b" * 40,
        head=HEAD,
        reviewer="builtin",
        findings=[Finding(p, line, sev, "rule", "message") for p, line, sev in findings],
        files_reviewed=1,
    )


# --------------------------------------------------------------------------- the stand-in


def test_the_stand_in_refuses_a_review_with_one_comment_off_the_diff(hub: FakeGitHub) -> None:
    url = f"{hub.api_url}/repos/acme/demo/pulls/7/reviews"
    good = {"path": "app.py", "line": 3, "side": "RIGHT", "body": "on the diff"}
    off = {"path": "app.py", "line": 8, "side": "RIGHT", "body": "between the hunks"}
    body = {"commit_id": HEAD, "body": "x", "event": "COMMENT", "comments": [good, off]}
    with pytest.raises(httpjson.HttpError) as exc:
        httpjson.request("POST", url, token=TOKEN, body=body)
    assert exc.value.status == 422
    assert hub.reviews("acme", "demo", 7) == []  # nothing of it was posted


def test_the_stand_in_wants_a_live_token(hub: FakeGitHub, clock: Clock) -> None:
    url = f"{hub.api_url}/repos/acme/demo/pulls/7"
    for token in (None, "ghp_wrong"):
        with pytest.raises(httpjson.HttpError) as exc:
            httpjson.request("GET", url, token=token)
        assert exc.value.status == 401
    auth = github_auth.AppAuth(str(hub.app_id), pem_key(hub), clock=clock)
    token = auth.token_for("acme", "demo", client(hub).send, hub.api_url)
    assert httpjson.request("GET", url, token=token)[0] == 200
    clock.now += 3601  # installation tokens live an hour
    with pytest.raises(httpjson.HttpError) as exc:
        httpjson.request("GET", url, token=token)
    assert exc.value.status == 401


def pem_key(hub: FakeGitHub) -> bytes:
    return KEYS[hub.app_id]


KEYS: dict[int, bytes] = {}


@pytest.fixture(autouse=True)
def _keys(app_key: rsa.RSAPrivateKey) -> None:
    KEYS[4242] = pem(app_key)


# --------------------------------------------------------------------------- App auth


def test_an_app_mints_an_installation_token_per_repository_and_caches_it(
    hub: FakeGitHub, clock: Clock
) -> None:
    auth = github_auth.AppAuth("4242", pem_key(hub), clock=clock)
    gh = client(hub, auth=auth)
    assert gh.get_pull("acme", "demo", 7).head_sha == HEAD
    gh.set_status("acme", "demo", HEAD, "pending", "reviewing")
    assert len(hub.minted) == 1  # one token for both calls
    [mint] = hub.of_kind("mint")
    assert mint.json == {"repositories": ["demo"]}
    clock.now += 3600 - github_auth.REFRESH_BEFORE + 1  # close to expiry: renewed
    gh.get_pull("acme", "demo", 7)
    assert len(hub.minted) == 2


def test_an_installation_token_refused_before_its_expiry_is_minted_again(
    hub: FakeGitHub, clock: Clock
) -> None:
    gh = client(hub, auth=github_auth.AppAuth("4242", pem_key(hub), clock=clock))
    gh.get_pull("acme", "demo", 7)
    hub.tokens[hub.minted[0]] = clock.now - 1  # revoked early
    assert gh.get_pull("acme", "demo", 7).head_sha == HEAD
    assert len(hub.minted) == 2


def test_a_token_refused_by_github_is_not_retried(hub: FakeGitHub) -> None:
    sleeps = Sleeps()
    gh = github.GitHub(
        github.GitHubConfig(hub.api_url, static_token="ghp_revoked"),
        retry=lambda: Retry(4, sleep=sleeps),
    )
    with pytest.raises(httpjson.HttpError) as exc:
        gh.set_status("acme", "demo", HEAD, "pending", "x")
    assert exc.value.status == 401 and sleeps == [] and "ghp_revoked" not in str(exc.value)


def test_a_jwt_not_signed_by_the_apps_key_is_refused(hub: FakeGitHub, clock: Clock) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    gh = client(hub, auth=github_auth.AppAuth("4242", pem(other), clock=clock))
    with pytest.raises(httpjson.HttpError) as exc:
        gh.get_pull("acme", "demo", 7)
    assert exc.value.status == 401 and hub.minted == []
    wrong_app = client(hub, auth=github_auth.AppAuth("999", pem_key(hub), clock=clock))
    with pytest.raises(httpjson.HttpError) as exc:
        wrong_app.get_pull("acme", "demo", 7)
    assert exc.value.status == 401


def test_a_key_that_is_not_an_rsa_pem_is_a_config_error() -> None:
    with pytest.raises(ReviewError) as exc:
        github_auth.AppAuth("1", b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    assert exc.value.exit_code == 6 and "PEM" in str(exc.value)


def test_a_key_of_a_type_cryptography_cannot_load_is_a_config_error(tmp_path: Path) -> None:
    # A PKCS#8 "PRIVATE KEY" of a type cryptography does not support (SM2) raises
    # UnsupportedAlgorithm, not ValueError: it must still be one line, not a traceback.
    pem = tmp_path / "sm2.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "SM2", "-out", str(pem)], check=True)
    assert pem.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    with pytest.raises(ReviewError) as exc:
        github_auth.load_private_key(pem.read_bytes())
    assert exc.value.exit_code == 6
    assert "cannot be loaded (UnsupportedAlgorithm)" in str(exc.value)


# --------------------------------------------------------------------------- reviews


def test_findings_off_the_diff_go_into_the_body_and_the_review_is_accepted(
    hub: FakeGitHub,
) -> None:
    gh = client(hub)
    gh.post_review(
        "acme", "demo", 7, review(("app.py", 3, "medium"), ("app.py", 8, "low")), key="job-1"
    )
    [posted] = hub.reviews("acme", "demo", 7)
    assert posted["comments"] == [
        {"path": "app.py", "line": 3, "side": "RIGHT", "body": "**medium** rule: message"}
    ]
    assert "`app.py:8`" in posted["body"] and posted["state"] == "COMMENTED"
    [req] = hub.of_kind("review")
    assert req.headers["accept"] == "application/vnd.github+json"
    assert req.headers["x-github-api-version"] == github.API_VERSION
    assert req.headers["user-agent"].startswith("auto-review-gateway/")
    gh.post_review("acme", "demo", 7, review(("app.py", 3, "medium")), key="job-1")
    assert len(hub.reviews("acme", "demo", 7)) == 1  # the same run does not post twice


def test_a_review_whose_answer_was_lost_is_not_posted_again_by_the_retry(
    hub: FakeGitHub,
) -> None:
    sleeps = Sleeps()
    hub.lose_answers("review")
    client(hub, sleeps).post_review("acme", "demo", 7, review(("app.py", 3, "low")), key="job-9")
    assert len(hub.reviews("acme", "demo", 7)) == 1 and len(sleeps) == 1
    assert [r.status for r in hub.of_kind("review")] == [502]  # the retry found it posted


def test_request_changes_on_the_bots_own_pr_falls_back_to_a_comment(hub: FakeGitHub) -> None:
    hub.pulls[("acme", "demo", 7)].author = hub.login_for(
        TOKEN
    )  # the client acts as the token's user
    client(hub).post_review("acme", "demo", 7, review(("app.py", 4, "high")))
    [posted] = hub.reviews("acme", "demo", 7)
    assert posted["state"] == "COMMENTED"
    assert "Can not request changes on your own pull request" in posted["body"]


def test_statuses_use_the_auto_review_context_and_140_characters(hub: FakeGitHub) -> None:
    client(hub).set_status("acme", "demo", HEAD, "failure", "x" * 500)
    [status] = hub.statuses
    assert status["context"] == "auto_review" and len(status["description"]) == 140
    assert status["state"] == "failure" and "target_url" not in status


def test_a_secondary_rate_limit_is_waited_for_and_retried(hub: FakeGitHub) -> None:
    sleeps = Sleeps()
    hub.fail("review", 403, headers={"retry-after": "7"})
    client(hub, sleeps).post_review("acme", "demo", 7, review(("app.py", 3, "low")))
    assert sleeps == [7.0] and len(hub.reviews("acme", "demo", 7)) == 1


def test_a_primary_rate_limit_waits_until_the_reset(hub: FakeGitHub) -> None:
    import time

    sleeps = Sleeps()
    reset = int(time.time()) + 20
    hub.fail("status", 429, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)})
    client(hub, sleeps).set_status("acme", "demo", HEAD, "success", "ok")
    assert len(sleeps) == 1 and 10 < sleeps[0] <= 20 and len(hub.statuses) == 1


def test_a_plain_403_is_not_retried(hub: FakeGitHub) -> None:
    sleeps = Sleeps()
    hub.fail("status", 403)
    with pytest.raises(httpjson.HttpError) as exc:
        client(hub, sleeps).set_status("acme", "demo", HEAD, "success", "ok")
    assert exc.value.status == 403 and sleeps == []


def test_diff_lines_reads_right_side_lines_of_hunks() -> None:
    assert github.diff_lines(PATCH) == {1, 2, 3, 4, 11, 12}
    assert github.diff_lines(None) == set()


# --------------------------------------------------------------------------- settings


def test_ghes_and_github_com_web_roots() -> None:
    assert github.GitHubConfig("https://api.github.com").web_url == "https://github.com"
    ghes = github.GitHubConfig("https://ghe.example.com/api/v3")
    assert ghes.web_url == "https://ghe.example.com"
    assert ghes.repo_clone_url("acme", "demo") == "https://ghe.example.com/acme/demo.git"
    assert github.GitHubConfig("https://ghe.example.com:8443/api/v3").web_url == (
        "https://ghe.example.com:8443"
    )
    assert github.GitHubConfig("https://api.acme.ghe.com").web_url == "https://acme.ghe.com"


def test_settings_come_from_the_environment_or_the_state_dirs_file(tmp_path: Path) -> None:
    env = {"AUTO_REVIEW_STATE_DIR_INSIDE": str(tmp_path)}
    assert not github.configured(env)
    (tmp_path / "github.env").write_text(
        "GITHUB_API_URL=https://ghe.example.com/api/v3\nGITHUB_TOKEN=from-file\nOTHER=x\n"
    )
    config = github.load_config(env)
    assert config.api_url == "https://ghe.example.com/api/v3" and config.token == "from-file"
    assert github.load_config({**env, "GITHUB_TOKEN": "from-env"}).token == "from-env"
    assert "from-file" not in repr(config)


STATE_DIR_KEY = b"-----BEGIN PRIVATE KEY-----\nc3RhdGUtZGlyLWtleQ==\n-----END PRIVATE KEY-----\n"


def test_an_app_key_in_the_environment_comes_before_any_file(
    app_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    (tmp_path / "github-app.pem").write_bytes(STATE_DIR_KEY)
    env = {"AUTO_REVIEW_STATE_DIR_INSIDE": str(tmp_path), "GITHUB_APP_ID": "42"}
    assert github.load_config(env).private_key == STATE_DIR_KEY  # without it, as before
    inline = pem(app_key).decode()  # what the launcher's secrets pipe puts in os.environ
    for extra in ({}, {"GITHUB_APP_PRIVATE_KEY_FILE": "/nonexistent"}):
        config = github.load_config({**env, **extra, "GITHUB_APP_PRIVATE_KEY": inline})
        assert config.private_key == pem(app_key)
        assert github_auth.AppAuth(config.app_id, config.private_key).jwt().count(".") == 2
        assert "PRIVATE" not in repr(config) and inline.splitlines()[1] not in repr(config)


def test_an_app_key_is_never_taken_from_the_settings_file(tmp_path: Path) -> None:
    key_line = STATE_DIR_KEY.decode().replace("\n", "\\n")
    (tmp_path / "github.env").write_text(f"GITHUB_APP_ID=42\nGITHUB_APP_PRIVATE_KEY={key_line}\n")
    env = {"AUTO_REVIEW_STATE_DIR_INSIDE": str(tmp_path)}
    assert github.configured(env) and "GITHUB_APP_PRIVATE_KEY" not in github.settings(env)
    with pytest.raises(ReviewError) as exc:
        github.load_config(env)
    assert exc.value.exit_code == 6 and "github-app.pem" in str(exc.value)
    assert "c3RhdGUtZGlyLWtleQ" not in str(exc.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GITHUB_TOKEN": "t", "GITHUB_API_URL": "http://ghe.example.com/api/v3"}, "https"),
        ({"GITHUB_TOKEN": "t", "GITHUB_APP_ID": "1"}, "not both"),
        ({"GITHUB_APP_ID": "abc"}, "numeric"),
        ({"GITHUB_APP_ID": "1", "GITHUB_APP_PRIVATE_KEY_FILE": "/nonexistent"}, "KEY_FILE"),
    ],
)
def test_bad_settings_are_one_line_config_errors(env: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ReviewError) as exc:
        github.load_config({**env, "AUTO_REVIEW_STATE_DIR_INSIDE": str(tmp_path)})
    assert exc.value.exit_code == 6 and message in str(exc.value) and "\n" not in str(exc.value)


# --------------------------------------------------------------------------- webhooks


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[Intake]:
    queue = JobQueue(str(tmp_path / "jobs.sqlite3"), max_pending=10)
    yield Intake(
        webhook_secret=SECRET,
        forge=github.GitHubConfig("https://api.github.com", static_token=TOKEN),
        queue=queue,
        job_request=JobRequest,
        metrics=Metrics(),
    )
    queue.close()


def deliver(intake: Intake, event: str, doc: dict, secret: bytes = SECRET, delivery: str = "d1"):
    raw = json.dumps(doc).encode()
    signature = "sha256=" + hmac.new(secret, raw, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": signature,
    }
    return github_webhooks.handle(intake, headers, raw)


def pr_doc(action: str = "opened", head: str = HEAD, **pull: object) -> dict:
    return {
        "action": action,
        "number": 7,
        "pull_request": {
            "number": 7,
            "draft": False,
            "state": "open",
            "head": {"sha": head},
            "base": {"ref": "main"},
            **pull,
        },
        "repository": {
            "name": "demo",
            "owner": {"login": "acme"},
            "clone_url": "https://github.com/acme/demo.git",
        },
    }


@pytest.mark.parametrize(
    ("headers", "raw", "status"),
    [
        ({"X-GitHub-Event": "pull_request"}, b"{}", 401),  # unsigned
        ({"X-GitHub-Event": "pull_request", "X-Hub-Signature": "sha1=00"}, b"{}", 401),
        ({}, b"{}", 400),  # signed, but which event?
        ({"X-GitHub-Event": "pull_request"}, b"{not json", 400),
        ({"X-GitHub-Event": "pull_request"}, b"[]", 400),
        ({"X-GitHub-Event": "pull_request"}, json.dumps(pr_doc(head="zz")).encode(), 400),
    ],
)
def test_unusable_deliveries(intake: Intake, headers: dict, raw: bytes, status: int) -> None:
    headers = dict(headers)
    if "X-Hub-Signature" not in headers and status != 401:
        headers["X-Hub-Signature-256"] = (
            "sha256=" + hmac.new(SECRET, raw, hashlib.sha256).hexdigest()
        )
    reply = github_webhooks.handle(intake, headers, raw)
    assert reply.status == status and "error" in reply.body
    assert intake.queue.depth() == 0


def test_webhook_signature_ping_and_one_review_per_head(intake: Intake) -> None:
    assert deliver(intake, "ping", {"zen": "hi"}, secret=b"wrong").status == 401
    raw = json.dumps(pr_doc()).encode()
    bare = hmac.new(SECRET, raw, hashlib.sha256).hexdigest()  # without "sha256=": refused
    headers = {"X-GitHub-Event": "pull_request", "X-Hub-Signature-256": bare}
    assert github_webhooks.handle(intake, headers, raw).status == 401
    assert deliver(intake, "ping", {"zen": "hi"}).body == {"pong": True}
    assert deliver(intake, "pull_request", pr_doc()).status == 202
    again = deliver(intake, "pull_request", pr_doc("synchronize"), delivery="d2")
    assert again.status == 200 and again.body["duplicate"] is True
    assert deliver(intake, "pull_request", pr_doc(draft=True), delivery="d3").body == {
        "ignored": "draft pull request"
    }
    assert deliver(intake, "star", {}, delivery="d4").status == 200


def comment_doc(association: str, body: str = "@auto-review re-review please") -> dict:
    return {
        "action": "created",
        "issue": {"number": 7, "state": "open", "pull_request": {"url": "x"}},
        "comment": {"body": body, "author_association": association, "user": {"login": "u"}},
        "repository": {
            "name": "demo",
            "owner": {"login": "acme"},
            "clone_url": "https://github.com/acme/demo.git",
        },
    }


def test_a_command_carries_its_authors_association_and_bots_are_not_read(
    intake: Intake,
) -> None:
    # Everyone's command is queued (the worker answers a refusal visibly) with the
    # association the worker compares with GITHUB_MIN_ASSOCIATION.
    reply = deliver(intake, "issue_comment", comment_doc("CONTRIBUTOR"))
    assert reply.status == 202, reply.body
    job = intake.queue.claim()
    assert job is not None and job.request.reason == "command:re-review:u:CONTRIBUTOR"
    bot = comment_doc("NONE")
    bot["comment"]["user"] = {"login": "renovate[bot]", "type": "Bot"}
    assert deliver(intake, "issue_comment", bot, delivery="d8").body == {
        "ignored": "comment by a bot"
    }
    odd = comment_doc("OVERLORD")
    assert (
        "author_association" in deliver(intake, "issue_comment", odd, delivery="d7").body["ignored"]
    )
    quoted = comment_doc("MEMBER", "> @auto-review pause\n\nno")
    assert deliver(intake, "issue_comment", quoted, delivery="d6").status == 200
    assert deliver(intake, "issue_comment", comment_doc("MEMBER"), delivery="d9").status == 202


# --------------------------------------------------------------------------- the service


def github_intake(hub: FakeGitHub, queue: JobQueue, token: str = TOKEN) -> Intake:
    return Intake(
        webhook_secret=SECRET,
        forge=github.GitHubConfig(hub.api_url, static_token=token),
        queue=queue,
        job_request=JobRequest,
        metrics=Metrics(),
        ci_token="c" * 32,
    )


def test_a_github_gateway_serves_github_webhooks_and_asks_github_if_ready(
    hub: FakeGitHub, tmp_path: Path
) -> None:
    from auto_review_gateway.web import endpoints

    queue = JobQueue(str(tmp_path / "jobs.sqlite3"), max_pending=10)
    try:
        gateway = endpoints.Gateway(github_intake(hub, queue), Metrics(), environ={})
        assert "/webhooks/github" in gateway.routes and "/webhooks/forgejo" not in gateway.routes
        assert gateway.readyz({}, b"").status == 200
        assert hub.of_kind("rate_limit")[-1].headers["authorization"] == f"Bearer {TOKEN}"
        bad = endpoints.Gateway(github_intake(hub, queue, "ghp_revoked"), Metrics(), environ={})
        reply = bad.readyz({}, b"")
        assert reply.status == 503 and "401" in reply.body["reason"]
    finally:
        queue.close()


def test_a_ci_request_reads_the_pull_request_from_github(hub: FakeGitHub, tmp_path: Path) -> None:
    from auto_review_gateway.web import ci

    queue = JobQueue(str(tmp_path / "jobs.sqlite3"), max_pending=10)
    try:
        intake = github_intake(hub, queue)
        auth = {"Authorization": "Bearer " + "c" * 32}
        body = {"owner": "acme", "repo": "demo", "pr_number": 7, "head_sha": HEAD}
        assert ci.handle_ci(intake, auth, json.dumps(body).encode()).status == 202
        moved = dict(body, head_sha="c" * 40)
        reply = ci.handle_ci(intake, auth, json.dumps(moved).encode())
        assert reply.status == 409 and reply.body["head"] == HEAD
        missing = dict(body, pr_number=8)
        assert ci.handle_ci(intake, auth, json.dumps(missing).encode()).status == 404
    finally:
        queue.close()


def test_a_forgejo_gateway_has_no_github_route(tmp_path: Path) -> None:
    from auto_review_gateway.forges.forgejo.config import ForgejoConfig
    from auto_review_gateway.web import endpoints

    queue = JobQueue(str(tmp_path / "jobs.sqlite3"), max_pending=10)
    try:
        intake = Intake(
            webhook_secret=SECRET,
            forge=ForgejoConfig("https://forge.example/api/v1", "t" * 20),
            queue=queue,
            job_request=JobRequest,
            metrics=Metrics(),
        )
        routes = endpoints.Gateway(intake, Metrics(), environ={}).routes
        assert "/webhooks/forgejo" in routes and "/webhooks/github" not in routes
    finally:
        queue.close()


def test_a_strangers_review_carrying_the_bots_marker_does_not_stop_its_review(
    hub: FakeGitHub,
) -> None:
    markers = "".join(f"<!-- auto-review run job-{n} -->" for n in range(1, 2000))
    hub.pulls[("acme", "demo", 7)].reviews.append(
        {"id": 99, "user": {"login": "mallory"}, "body": markers, "state": "COMMENTED"}
    )
    client(hub).post_review("acme", "demo", 7, review(("app.py", 3, "low")), key="job-9")
    mine = [r for r in hub.reviews("acme", "demo", 7) if r["user"]["login"] != "mallory"]
    assert len(mine) == 1
