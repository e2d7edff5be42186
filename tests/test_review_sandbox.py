"""`auto-review review` end to end through the real single file and real runc: a
repository served by the loopback TLS git server, a local checkout bound read-only,
the LLM reviewer against a loopback OpenAI-compatible stand-in, and posting to a
loopback Forgejo stand-in (both stand in for services that cannot be reached here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HOST_PYTHON, needs_root
from fake_forgejo import FakeForgejo
from fake_openai import FakeOpenAI
from gitserver import GitHttpsServer, commit, make_ca, make_repo

pytestmark = needs_root

KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
BASE_FILES = {
    "README.md": "hello\n",
    "app.py": "def main():\n    return 1\n",
    "old.py": "x = 1   \n",  # trailing whitespace in the base: unchanged, never reported
}
HEAD_FILES = {
    "app.py": "def main():\n<<<<<<< ours\n    return 2\n=======\n    return 3\n>>>>>>> theirs\n",
    "id_rsa": KEY,
    "notes.txt": "fine line\ntrailing   \nno newline at end",
}
# (path, line, rule) planted above
PLANTED = {
    ("app.py", 2, "conflict-marker"),
    ("app.py", 4, "conflict-marker"),
    ("app.py", 6, "conflict-marker"),
    ("id_rsa", 1, "private-key"),
    ("notes.txt", 2, "trailing-whitespace"),
    ("notes.txt", 3, "no-final-newline"),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A TLS git server with the repo, a world-readable checkout of it, and a runner env."""
    base = Path("/tmp") / f"ar-review-{os.getpid()}"
    base.mkdir(mode=0o755)
    certs = make_ca(base / "certs")
    repos = base / "repos"
    make_repo(repos / "demo.git", BASE_FILES, "base")
    subprocess.run(["git", "--git-dir", str(repos / "demo.git"), "branch", "topic", "main"],
                   check=True)  # fmt: skip
    head = commit(repos / "demo.git", HEAD_FILES, "topic", branch="topic")
    checkout = base / "checkout"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(repos / "demo.git"), str(checkout)],
                   check=True)  # fmt: skip
    subprocess.run(["git", "-C", str(checkout), "fetch", "-q", "origin", "topic:topic"], check=True)
    subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)  # uid 10001 reads it
    home = tmp_path_factory.mktemp("review-home")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "AUTO_REVIEW_CACHE_DIR": str(home / "cache"),
        "AUTO_REVIEW_STATE_DIR": str(home / "state"),
        "AUTO_REVIEW_CA_FILE": str(certs.ca_cert),
        # the git, LLM and forge stand-ins listen on this host's loopback: the documented
        # setting for services on the same host (test_sandbox_network covers isolated)
        "AUTO_REVIEW_NETWORK": "host",
    }
    with GitHttpsServer(repos, certs) as server:
        yield {"server": server, "env": env, "checkout": checkout, "head": head}
    shutil.rmtree(base, ignore_errors=True)


def review(app: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HOST_PYTHON, str(app), "review", *args, "--format", "json"],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip


def found(result: subprocess.CompletedProcess[str]) -> set[tuple[str, int, str]]:
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    return {(f["path"], f["line"], f["rule"]) for f in report["findings"]}


def test_review_over_https_finds_exactly_the_planted_problems(app: Path, world: dict) -> None:
    url = world["server"].repo_url("demo")
    result = review(app, world["env"], "--repo", url, "--base", "main", "--head", "topic")
    assert found(result) == PLANTED
    report = json.loads(result.stdout)
    assert report["verdict"] == "fail" and report["head"] == world["head"]
    assert any("git-upload-pack" in r for r in world["server"].requests)


def test_review_of_a_local_checkout_gives_the_same_findings(app: Path, world: dict) -> None:
    before = sorted(p.name for p in world["checkout"].iterdir())
    result = review(app, world["env"], "--path", str(world["checkout"]), "--base", "main",
                    "--head", "topic")  # fmt: skip
    assert found(result) == PLANTED
    assert sorted(p.name for p in world["checkout"].iterdir()) == before  # read-only


def test_fail_on_gates_a_ci_job_on_the_findings(app: Path, world: dict) -> None:
    checkout = ("--path", str(world["checkout"]), "--base", "main")
    failed = review(app, world["env"], *checkout, "--head", "topic", "--fail-on", "critical")
    assert failed.returncode == 8, failed.stdout + failed.stderr  # the private key
    assert json.loads(failed.stdout)["verdict"] == "fail"  # the review is printed all the same
    assert "1 finding(s) at or above critical (--fail-on critical)" in failed.stderr
    clean = review(app, world["env"], *checkout, "--head", "main", "--fail-on", "info")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert json.loads(clean.stdout)["findings"] == []


def test_unknown_ref_and_unreachable_repo(app: Path, world: dict) -> None:
    url = world["server"].repo_url("demo")
    bad_ref = review(app, world["env"], "--repo", url, "--base", "main", "--head", "nope")
    assert bad_ref.returncode == 4, bad_ref.stderr
    gone = review(app, world["env"], "--repo", "https://127.0.0.1:1/x.git", "--base", "a",
                  "--head", "b")  # fmt: skip
    assert gone.returncode == 3
    assert "Traceback" not in gone.stderr


def test_llm_reviewer_through_the_sandbox(app: Path, world: dict) -> None:
    answer = {"findings": [{"path": "app.py", "line": 3, "severity": "medium", "rule": "logic",
                            "message": "two returns"}], "summary": "one issue"}  # fmt: skip
    keep = {"verdicts": [{"id": 0, "keep": True, "reason": "both return paths are live"}]}
    with FakeOpenAI() as llm:
        llm.script(json.dumps(answer), json.dumps(keep))
        env = dict(world["env"], LLM_BASE_URL=llm.url, LLM_API_KEY="sk-test-key-0123456789",
                   LLM_VERIFIER_MODEL="checker-1")  # fmt: skip
        result = review(app, env, "--path", str(world["checkout"]), "--base", "main",
                        "--head", "topic")  # fmt: skip
    assert found(result) == PLANTED | {("app.py", 3, "logic")}
    assert "sk-test-key" not in result.stdout + result.stderr
    # the review, then the verifier pass on the model named by the setting passed in
    assert [r.json["model"] for r in llm.requests] == ["gpt-4o-mini", "checker-1"]
    assert llm.problems == []


def test_posting_to_forgejo_through_the_sandbox(app: Path, world: dict) -> None:
    with FakeForgejo() as forge:
        env = dict(world["env"], FORGEJO_BASE_URL=forge.url, AR_FORGEJO_TOKEN="forge-token-123")
        result = subprocess.run(
            [HOST_PYTHON, str(app), "review", "--path", str(world["checkout"]), "--base", "main",
             "--head", "topic", "--post", "--pr", "acme/demo#7"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        states = [body["state"] for path, body in forge.posted("/statuses/")]
        reviews = forge.posted("/pulls/7/reviews")
    assert states == ["pending", "failure"]
    [(_path, body)] = reviews
    assert body["event"] == "REQUEST_CHANGES" and body["commit_id"] == world["head"]
    assert {(c["path"], c["new_position"]) for c in body["comments"]} == {
        (p, line) for p, line, _rule in PLANTED
    }
    assert "forge-token-123" not in result.stdout + result.stderr
