"""The GitHub review job with App auth, on the host: the App's JWT, an installation token
minted for the repository, the clone over HTTPS with it as ``x-access-token`` (real git,
the stand-in's TLS git endpoint), the review with inline comments, the final status.
(The sandbox run of the same job with a token is tests/test_github_sandbox.py.)"""

from __future__ import annotations

import base64
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

from auto_review_gateway.core.model import EXIT_CLONE, ReviewError
from auto_review_gateway.jobs import github_job as github_worker
from auto_review_gateway.jobs.spec import Job, JobRequest

from tests.fake_github import FakeGitHub
from tests.gitserver import commit, make_ca, make_repo
from tests.hostile import RecordingGitServer


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    certs = make_ca(tmp_path / "certs")
    git_dir = tmp_path / "repos" / "acme" / "demo.git"
    make_repo(git_dir, {"app.py": "x = 1\n"}, "base")
    subprocess.run(["git", "--git-dir", str(git_dir), "branch", "topic", "main"], check=True)
    head = commit(git_dir, {"app.py": "x = 1\n<<<<<<< HEAD\n"}, "topic", branch="topic")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "app.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    with FakeGitHub(ssl_context=context, app_key=key, git_root=tmp_path / "repos") as hub:
        hub.install("acme", "demo", 99)
        hub.set_pull("acme", "demo", 5, head)
        for name, value in {
            "SSL_CERT_FILE": str(certs.ca_cert),
            "GIT_SSL_CAINFO": str(certs.ca_cert),
            "GITHUB_API_URL": hub.api_url,
            "GITHUB_APP_ID": str(hub.app_id),
            "GITHUB_APP_PRIVATE_KEY_FILE": str(key_file),
            "AUTO_REVIEW_STATE_DIR_INSIDE": str(tmp_path / "state"),
        }.items():
            monkeypatch.setenv(name, value)
        for name in ("GITHUB_TOKEN", "LLM_BASE_URL"):
            monkeypatch.delenv(name, raising=False)
        github_worker._clients.clear()
        yield {"hub": hub, "head": head, "tls": context, "repos": tmp_path / "repos"}
        github_worker._clients.clear()


def job(head: str, job_id: int = 1) -> Job:
    request = JobRequest(
        owner="acme",
        repo="demo",
        pr_number=5,
        head_sha=head,
        base_ref="main",
        clone_url="https://github.com/acme/demo.git",  # GitHub's own: rewritten to the GHES host
        reason="pull_request:opened",
    )
    return Job(id=job_id, request=request, attempts=1)


def test_an_app_job_mints_a_token_clones_with_it_and_posts(world: dict) -> None:
    hub: FakeGitHub = world["hub"]
    github_worker.run_github_job(job(world["head"]))
    [token] = hub.minted
    [mint] = hub.of_kind("mint")
    assert mint.path == "/api/v3/app/installations/99/access_tokens"
    fetches = hub.of_kind("git")
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    assert fetches and all(r.headers.get("authorization") == f"Basic {basic}" for r in fetches)
    [review] = hub.reviews("acme", "demo", 5)
    assert review["state"] == "CHANGES_REQUESTED"
    assert [(c["path"], c["line"]) for c in review["comments"]] == [("app.py", 2)]
    assert [s["state"] for s in hub.statuses] == ["pending", "failure"]
    github_worker.run_github_job(job(world["head"], job_id=2))  # another job: the token is cached
    assert len(hub.minted) == 1


def test_a_job_whose_app_is_not_installed_ends_in_error(world: dict) -> None:
    hub: FakeGitHub = world["hub"]
    hub.installations.clear()
    with pytest.raises(Exception) as exc:
        github_worker.run_github_job(job(world["head"]))
    assert "404" in str(exc.value)
    assert hub.statuses == [] and hub.minted == []  # no token: not even the pending status


def test_a_job_run_again_after_its_post_does_not_post_twice(world: dict) -> None:
    hub: FakeGitHub = world["hub"]
    github_worker.run_github_job(job(world["head"], job_id=3))
    github_worker.run_github_job(job(world["head"], job_id=3))  # the queue's retry of job 3
    assert len(hub.reviews("acme", "demo", 5)) == 1
    assert [s["state"] for s in hub.statuses] == ["pending", "failure", "pending", "failure"]


def test_a_redirect_to_another_origin_never_carries_the_installation_token(world: dict) -> None:
    hub: FakeGitHub = world["hub"]
    with RecordingGitServer(world["repos"], world["tls"]) as other:
        hub.git_redirect = other.url  # the same repository, at another origin
        with pytest.raises(ReviewError) as caught:
            github_worker.run_github_job(job(world["head"]))
        [token] = hub.minted
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        assert [r for r in hub.of_kind("git") if r.status == 302]
        assert not [h for _, _, h in other.requests if "authorization" in h]
        assert not [h for _, _, h in other.requests if basic in repr(h) or token in repr(h)]
    assert caught.value.exit_code == EXIT_CLONE
    assert f"redirected to {other.url}" in str(caught.value)
    assert "does not follow redirects" in str(caught.value)
    assert [s["state"] for s in hub.statuses] == ["pending", "error"]
    assert hub.reviews("acme", "demo", 5) == []


def test_the_app_follows_the_pr_with_one_summary_and_no_repeats(
    world: dict, tmp_path: Path
) -> None:
    from auto_review_gateway.jobs.history import PrHistory

    hub, git_dir = world["hub"], world["repos"] / "acme" / "demo.git"
    history = PrHistory(str(tmp_path / "state" / "jobs.sqlite3"))
    try:
        github_worker.run_github_job(job(world["head"]), history)
        second = commit(git_dir, {"b.py": "y = 2   \n"}, "more", branch="topic")
        hub.set_pull("acme", "demo", 5, second)
        github_worker.run_github_job(job(second, job_id=2), history)
    finally:
        history.close()
    posted = [r.json for r in hub.requests if r.kind == "review" and r.status < 300]
    assert [[c["path"] for c in r["comments"]] for r in posted] == [["app.py"], ["b.py"]]
    [summary] = hub.comments.on("acme", "demo", 5)
    assert summary["user"]["login"] == "auto-review[bot]"  # the App's installation
    assert hub.comments.edits[summary["id"]] == 1
    assert "(incremental)" in summary["body"] and "1 high, 1 low" in summary["body"]
