"""`review --post`: the commit status is pending before reviewing, and a review that
cannot finish leaves `error`, never a stale pending. Run bare on the host against the
loopback stand-ins for an OpenAI-compatible API and for Forgejo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_forgejo import FakeForgejo
from fake_openai import FakeOpenAI

GATEWAY = Path(__file__).resolve().parent.parent / "payload" / "gateway"


def git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@x", GIT_AUTHOR_DATE="2026-01-01T00:00:00Z",
               GIT_COMMITTER_DATE="2026-01-01T00:00:00Z")  # fmt: skip
    out = subprocess.run(["git", "-C", str(repo), *args], env=env, check=True,
                         capture_output=True, text=True)  # fmt: skip
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "a.py").write_text("x = 1\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "base")
    git(path, "checkout", "-q", "-b", "topic")
    (path / "a.py").write_text("x = 2   \n")
    git(path, "commit", "-q", "-am", "topic")
    return path


def review(repo: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auto_review_gateway", "review", "--path", str(repo),
         "--base", "main", "--head", "topic", *extra],
        cwd=GATEWAY, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_failing_reviewer_leaves_status_error(repo: Path) -> None:
    with FakeForgejo() as forge, FakeOpenAI() as llm:
        llm.script("not json at all")
        llm.script("still not json")
        env = dict(os.environ, FORGEJO_BASE_URL=forge.url, AR_FORGEJO_TOKEN="t0ken",
                   LLM_BASE_URL=llm.url)  # fmt: skip
        result = review(repo, env, "--post", "--pr", "acme/demo#3")
        states = [s["state"] for s in forge.statuses()]
        reviews = forge.reviews()
    assert result.returncode == 5, result.stderr
    assert states == ["pending", "error"]
    assert reviews == []


def test_post_without_pr_is_a_usage_error_before_anything_is_sent(repo: Path) -> None:
    with FakeForgejo() as forge:
        env = dict(os.environ, FORGEJO_BASE_URL=forge.url, AR_FORGEJO_TOKEN="t0ken")
        result = review(repo, env, "--post")
        assert forge.requests == []
    assert result.returncode == 2
    assert "--pr" in result.stderr


def test_a_successful_post_goes_pending_then_final(repo: Path) -> None:
    with FakeForgejo() as forge:
        env = dict(os.environ, FORGEJO_BASE_URL=forge.url, AR_FORGEJO_TOKEN="t0ken")
        env.pop("LLM_BASE_URL", None)
        result = review(repo, env, "--post", "--pr", "acme/demo#3")
        states = [s["state"] for s in forge.statuses()]
    assert result.returncode == 0, result.stderr
    assert states == ["pending", "success"]  # trailing whitespace is low: verdict pass
