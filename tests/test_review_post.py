"""`review --post`: the commit status is pending before reviewing, and a review that
cannot finish leaves `error`, never a stale pending. Run bare on the host against the
loopback stand-ins for an OpenAI-compatible API and for the forge: Forgejo, or GitHub
when GITHUB_TOKEN is set (over verified TLS, as GitHub is HTTPS only)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fake_forgejo import FakeForgejo
from fake_github import FakeGitHub
from fake_openai import FakeOpenAI
from gitserver import CertFiles, make_ca

GATEWAY = Path(__file__).resolve().parent.parent / "payload" / "gateway"
FORGEJO_TOKEN = "t0ken"
GITHUB_TOKEN = "ghp_" + "t" * 36
WRONG_TOKEN = "ghp_" + "w" * 36


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
    """Branch topic changes a.py's line 1 (trailing whitespace: a low finding) and adds a
    binary file (a low finding on its line 1, which has no patch on GitHub: off the diff)."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "a.py").write_text("x = 1\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "base")
    git(path, "checkout", "-q", "-b", "topic")
    (path / "a.py").write_text("x = 2   \n")
    (path / "logo.bin").write_bytes(b"\x89PNG\x00\x01\x02")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "topic")
    return path


def review(repo: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auto_review_gateway", "review", "--path", str(repo),
         "--base", "main", "--head", "topic", *extra],
        cwd=GATEWAY, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def post_env(state_dir: Path, **settings: str) -> dict[str, str]:
    """The host's environment without forge or LLM settings, with a state dir of its own
    (no github.env there to name a forge), plus ``settings``."""
    prefixes = ("FORGEJO_", "AR_FORGEJO_", "GITHUB_", "LLM_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["AUTO_REVIEW_STATE_DIR_INSIDE"] = str(state_dir)
    return dict(env, **settings)


@dataclass
class Stand:
    """A forge stand-in as `review --post` sees it: the environment pointing at it, the
    variable holding its token, and what it received."""

    server: Any
    env: dict[str, str]
    token_name: str
    states: Callable[[], list[str]]  # the commit statuses it took, in order
    reviews: Callable[[], list[Any]]
    sent: Callable[[], int]  # how many requests reached it


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_ca(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def forgejo_stand(tmp_path: Path) -> Iterator[Stand]:
    with FakeForgejo(token=FORGEJO_TOKEN) as forge:
        env = post_env(
            tmp_path / "state", FORGEJO_BASE_URL=forge.url, AR_FORGEJO_TOKEN=FORGEJO_TOKEN
        )
        yield Stand(
            forge,
            env,
            "AR_FORGEJO_TOKEN",
            states=lambda: [s["state"] for s in forge.statuses()],
            reviews=forge.reviews,
            sent=lambda: len(forge.requests),
        )


@pytest.fixture
def github_stand(tmp_path: Path, certs: CertFiles, repo: Path) -> Iterator[Stand]:
    """GitHub serving ``repo`` as acme/demo, its topic branch as pull request #3."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    git(repo, "clone", "-q", "--bare", ".", str(tmp_path / "hub" / "acme" / "demo.git"))
    hub = FakeGitHub(ssl_context=context, tokens=(GITHUB_TOKEN,), git_root=tmp_path / "hub")
    with hub:
        hub.set_pull("acme", "demo", 3, git(repo, "rev-parse", "topic"))
        env = post_env(
            tmp_path / "state",
            GITHUB_API_URL=hub.api_url,
            GITHUB_TOKEN=GITHUB_TOKEN,
            SSL_CERT_FILE=str(certs.ca_cert),
        )
        yield Stand(
            hub,
            env,
            "GITHUB_TOKEN",
            states=lambda: [s["state"] for s in hub.statuses],
            reviews=lambda: hub.reviews("acme", "demo", 3),
            sent=lambda: len(hub.requests),
        )


@pytest.fixture(params=["forgejo", "github"])
def stand(request: pytest.FixtureRequest) -> Stand:
    return request.getfixturevalue(f"{request.param}_stand")


def test_a_failing_reviewer_leaves_status_error(repo: Path, stand: Stand) -> None:
    with FakeOpenAI() as llm:
        llm.script("not json at all")
        llm.script("still not json")
        env = dict(stand.env, LLM_BASE_URL=llm.url)
        result = review(repo, env, "--post", "--pr", "acme/demo#3")
    assert result.returncode == 5, result.stderr
    assert stand.states() == ["pending", "error"]
    assert stand.reviews() == []


@pytest.mark.parametrize("args", [["--post"], ["--post", "--pr", "acme/demo"]])
def test_post_without_a_pr_is_a_usage_error_before_anything_is_sent(
    repo: Path, stand: Stand, args: list[str]
) -> None:
    result = review(repo, stand.env, *args)
    assert stand.sent() == 0
    assert result.returncode == 2
    assert "--pr" in result.stderr


def test_both_forges_configured_is_a_config_error_before_anything_is_sent(
    repo: Path, forgejo_stand: Stand
) -> None:
    # a stray GITHUB_TOKEN (CI runners export one) must not send the review elsewhere
    env = dict(forgejo_stand.env, GITHUB_TOKEN="ghp_" + "x" * 36)
    result = review(repo, env, "--post", "--pr", "acme/demo#3")
    assert result.returncode == 6, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "both GitHub" in line and "FORGEJO_BASE_URL" in line and "ghp_" not in line
    assert forgejo_stand.sent() == 0


def test_a_refused_token_is_one_line_exit_post_without_the_token(repo: Path, stand: Stand) -> None:
    env = dict(stand.env, **{stand.token_name: WRONG_TOKEN})
    result = review(repo, env, "--post", "--pr", "acme/demo#3")
    assert result.returncode == 7, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("auto-review: error:")]
    assert len(errors) == 1 and "401" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert WRONG_TOKEN not in result.stdout + result.stderr
    assert stand.reviews() == []


def test_a_successful_post_goes_pending_then_final(repo: Path, forgejo_stand: Stand) -> None:
    result = review(repo, forgejo_stand.env, "--post", "--pr", "acme/demo#3")
    assert result.returncode == 0, result.stderr
    assert forgejo_stand.states() == ["pending", "success"]  # low findings: verdict pass
    assert len(forgejo_stand.reviews()) == 1


def test_a_github_post_comments_inline_on_diff_lines_only(repo: Path, github_stand: Stand) -> None:
    result = review(repo, github_stand.env, "--post", "--pr", "acme/demo#3")
    assert result.returncode == 0, result.stderr
    assert github_stand.states() == ["pending", "success"]  # low findings: verdict pass
    [posted] = github_stand.reviews()
    assert posted["state"] == "COMMENTED"
    assert posted["commit_id"] == git(repo, "rev-parse", "topic")
    assert [(c["path"], c["line"]) for c in posted["comments"]] == [("a.py", 1)]
    outside = posted["body"].split("Outside the diff:", 1)[1]
    assert "logo.bin:1" in outside and "binary file added" in outside
    assert GITHUB_TOKEN not in result.stdout + result.stderr
