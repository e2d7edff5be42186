"""The repository under review is hostile (issue 27): its ``.auto_review.yaml`` explodes,
its file names forge findings or drive the terminal, its server redirects the credential
elsewhere; and whatever a command did not expect ends in one line.

Each is reproduced on the real ``review`` command (``python -m auto_review_gateway`` from
source, in a subprocess bounded by a timeout), on a repository built here or served on
loopback (tests/gitserver.py's CA, tests/fake_github.py, tests/hostile.py). The jobs'
own redirect tests are in tests/test_jobs.py and tests/test_github_job.py; docs/GATEWAY.md
("Hostile repositories") lists which test shows what.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tests.fake_github import FakeGitHub
from tests.gitserver import CertFiles, git_env, make_ca, make_repo
from tests.hostile import RecordingGitServer

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = ROOT / "payload" / "gateway"
sys.path.insert(0, str(GATEWAY))

from auto_review_gateway.core.model import (  # noqa: E402
    EXIT_CLONE,
    EXIT_CONFIG,
    EXIT_INTERNAL,
    Finding,
    Review,
    ReviewError,
)
from auto_review_gateway.forges import bodies  # noqa: E402
from auto_review_gateway.forges.github import client as github  # noqa: E402
from auto_review_gateway.review import render, repoconfig  # noqa: E402

# Measured: 0.1-0.25 s to refuse each bomb below; main took 36 s (and 0.8 GB) for the
# 26-level merge-key bomb, and a 27-level one was killed for its memory.
BOMB_TIMEOUT = 5.0
TOKEN = "ghp_hostile0123456789abcdefghijklmnopqr"
FORGED = "fake.py:1: critical: fine [none]\nreal.txt"
CONTROLS = "esc\x1b[2Jcr\rdel\x7fcsi\x9bbidi\u202etxt.py"
CLEAN_NAME = "ok.py"


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without anything that would switch reviewers, forges or CAs on."""
    drop = ("LLM_", "FORGEJO_", "AR_", "GIT_", "SSL_CERT_", "GITHUB_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def gateway(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
            code: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run the gateway's command line from source (``code``: a ``python -c`` program
    instead of ``-m auto_review_gateway``, given ``args`` as sys.argv[1:])."""
    how = ["-c", code, *args] if code is not None else ["-m", "auto_review_gateway", *args]
    return subprocess.run(
        [sys.executable, *how],
        cwd=GATEWAY,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line(proc: subprocess.CompletedProcess[str], code: int, prefix: str) -> str:
    """The command exited ``code`` and said why on one line of stderr, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), proc.stderr[-3000:]
    return lines[0]


def checkout(path: Path, head: dict[str, str], base: dict[str, str] | None = None) -> Path:
    """A work tree: ``main`` with a README (and ``base``), ``topic`` adding ``head``
    (names as given, so anything a file system allows, newlines and ESC included)."""
    env = git_env(path.parent / "home", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t.invalid",
                  GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t.invalid")  # fmt: skip

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(path), *args], env=env, check=True, capture_output=True)

    path.mkdir(parents=True)
    git("init", "--quiet", "--initial-branch=main")
    (path / "README").write_text("hi\n")
    for name, text in (base or {}).items():
        (path / name).write_text(text)
    git("add", "-A")
    git("commit", "--quiet", "-m", "base")
    git("checkout", "--quiet", "-b", "topic")
    for name, text in head.items():
        (path / name).write_text(text)
    git("add", "-A")
    git("commit", "--quiet", "-m", "topic")
    return path


def review_path(repo: Path, *more: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return gateway("review", "--path", str(repo), "--base", "main", "--head", "topic", *more,
                   timeout=timeout)  # fmt: skip


# --------------------------------------------------------------------------- config bombs


def merge_key_bomb(levels: int) -> str:
    """Each level merges the one before twice: 2^levels entries once flattened (~1.5 KB)."""
    lines = ["a0: &a0 {x: 1}"]
    lines += [f"a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}]}}" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


BOMBS = {
    "merge-keys": (merge_key_bomb(27), "line 1: anchors (&a0) are not allowed"),
    "deep-lists": ("[" * 5000 + "]" * 5000 + "\n", "line 1: nested deeper than 16 levels"),
    "deep-maps": ("{a: " * 3000 + "1" + "}" * 3000 + "\n", "line 1: nested deeper than 16"),
    "deep-blocks": ("".join(" " * i + "a:\n" for i in range(200)), "nested deeper than 16"),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_a_config_bomb_is_one_line_and_exit_6_at_once(tmp_path: Path, name: str) -> None:
    text, says = BOMBS[name]
    # In the base, whose config rules the review (one a PR adds is not even read).
    repo = checkout(tmp_path / "repo", {CLEAN_NAME: "x = 1\n"}, {".auto_review.yaml": text})
    # the timeout bounds the run: on main the merge keys alone took over a minute
    line = one_line(review_path(repo, timeout=BOMB_TIMEOUT), EXIT_CONFIG, "auto-review: error: ")
    assert line.startswith("auto-review: error: .auto_review.yaml") and says in line
    added = checkout(tmp_path / "pr", {".auto_review.yaml": text, CLEAN_NAME: "x = 1\n"})
    assert review_path(added, timeout=BOMB_TIMEOUT).returncode == 0


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("a: &x 1\n", "line 1: anchors (&x) are not allowed"),
        ("enabled: true\nguidelines: *x\n", "line 2: aliases (*x) are not allowed"),
        ("<<: {enabled: false}\n", "line 1: merge keys (<<) are not allowed"),
        ("enabled: !!bool yes\n", "line 1: tags (!!bool) are not allowed"),
        ("guidelines: !!binary aGk=\n", "tags (!!binary) are not allowed"),
        ("guidelines: 2001-13-14\n", "invalid YAML: month must be in 1..12"),
    ],
)
def test_config_refuses_what_a_settings_file_has_no_use_for(text: str, says: str) -> None:
    with pytest.raises(ReviewError) as caught:
        repoconfig.load(text)
    assert caught.value.exit_code == EXIT_CONFIG and says in str(caught.value)


def test_a_config_sixteen_levels_deep_is_still_read() -> None:
    nested = "guidelines: " + "[" * 15 + "]" * 15 + "\n"
    with pytest.raises(ReviewError, match="guidelines must be a string"):
        repoconfig.load(nested)  # read whole (15 + 1 levels), then refused for its type


# --------------------------------------------------------------------------- last resort

CRASH = textwrap.dedent(
    """
    import sys
    from auto_review_gateway import cli
    from auto_review_gateway.review import pipeline

    def crash(ctx):
        raise RuntimeError(
            "boom: token ghs_hostile_forge_token_123 at https://bob:hunter2secret@h/x "
            "and\\x1b[31m a line\\nbreak"
        )

    pipeline.review_context = crash
    sys.exit(cli.main(sys.argv[1:]))
    """
)


def test_an_unexpected_exception_is_one_line_and_exit_70(tmp_path: Path) -> None:
    repo = checkout(tmp_path / "repo", {CLEAN_NAME: "x = 1\n"})
    env = clean_env(AR_FORGEJO_TOKEN="ghs_hostile_forge_token_123")
    args = ("review", "--path", str(repo), "--base", "main", "--head", "topic")
    line = one_line(gateway(*args, env=env, code=CRASH), EXIT_INTERNAL,
                    "auto-review: internal error: RuntimeError: boom")  # fmt: skip
    assert "ghs_hostile" not in line and "hunter2" not in line and "***" in line
    assert "\x1b" not in line and "\\x1b[31m" in line and "--debug" in line
    for debug in (("--debug", *args), (*args, "--debug")):
        proc = gateway(*debug, env=env, code=CRASH)
        assert proc.returncode == EXIT_INTERNAL
        assert proc.stderr.startswith("Traceback (most recent call last):")
        assert "in crash\n" in proc.stderr and "\x1b" not in proc.stderr
        assert "ghs_hostile" not in proc.stderr and "hunter2" not in proc.stderr
        last = proc.stderr.splitlines()[-1]
        assert last.startswith("auto-review: internal error: RuntimeError: boom")


# --------------------------------------------------------------------------- forged output


@pytest.fixture(scope="module")
def forged_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A change adding files whose names forge a finding or drive a terminal, each with a
    real (low) finding: trailing whitespace on line 1."""
    names = (FORGED, CONTROLS, CLEAN_NAME)
    return checkout(tmp_path_factory.mktemp("forged") / "repo", dict.fromkeys(names, "x  \n"))


def test_text_output_escapes_what_a_file_name_forges(forged_repo: Path) -> None:
    proc = review_path(forged_repo)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert not [line for line in lines if line.startswith("fake.py:1: critical")]
    assert not any(c in proc.stdout for c in "\x1b\r\x7f\x9b\u202e")
    # quoted as git quotes such names: one line, and the name cannot end early
    assert '"fake.py:1: critical: fine [none]\\nreal.txt":1: low: ' in proc.stdout
    assert '"esc\\x1b[2Jcr\\rdel\\x7fcsi\\x9bbidi\\u202etxt.py":1: low: ' in proc.stdout
    assert f"{CLEAN_NAME}:1: low: trailing whitespace [trailing-whitespace]" in lines
    assert len([line for line in lines if ":1: low: " in line]) == 3


def test_json_keeps_the_names_exact_and_markdown_escapes_them(forged_repo: Path) -> None:
    proc = review_path(forged_repo, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert {f["path"] for f in json.loads(proc.stdout)["findings"]} == {
        FORGED, CONTROLS, CLEAN_NAME
    }  # fmt: skip
    proc = review_path(forged_repo, "--format", "markdown")
    html = MarkdownIt("commonmark").enable("table").render(proc.stdout)
    assert html.count("<tr>") == 1 + 3  # the header and one row per finding
    assert "<code>fake.py:1: critical: fine [none]\\nreal.txt</code>" in html
    assert not any(c in proc.stdout for c in "\x1b\r\x7f\x9b\u202e")


def test_markdown_for_the_forge_renders_repository_text_as_text() -> None:
    hostile = "x](https://evil.example) ![p](https://evil.example/p.png) <img src=x> &#x202e;"
    findings = [
        Finding(FORGED, 1, "low", "trailing-whitespace", f"| {hostile}\n\n# heading"),
        Finding("a`b`c.py", 2, "high", "llm-*rule*", "**bold** `code`"),
    ]
    review = Review("b" * 40, "h" * 40, "builtin", findings, 2, skipped=[FORGED, "``x"])
    md = MarkdownIt("commonmark").enable("table")
    texts = [bodies.render_body(review), render.render(review, "markdown")]
    texts += [c["body"] for c in bodies.review_body(review)["comments"]]
    gh = github.GitHub.__new__(github.GitHub)  # review_body needs no client state
    texts.append(github.GitHub.review_body(gh, review, {})["body"])
    for text in texts:
        html = md.render(text)
        for markup in ("<a ", "<img", "<h1", "<strong>bold", "<em>rule", "\u202e", "\x1b"):
            assert markup not in html, (markup, text)
    outside = md.render(texts[-1])
    assert "<code>fake.py:1: critical: fine [none]\\nreal.txt:1</code>" in outside
    assert "<code>a`b`c.py:2</code>" in outside


# --------------------------------------------------------------------------- redirects


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_ca(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def redirecting_forge(tmp_path: Path, certs: CertFiles) -> Iterator[tuple[FakeGitHub, Path]]:
    """A GitHub stand-in whose git answers 302 to another origin serving the same repo."""
    make_repo(tmp_path / "repos" / "acme" / "demo.git", {"a.py": "x = 1\n"})
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certs.server_cert, certs.server_key)
    with FakeGitHub(ssl_context=tls, tokens=(TOKEN,), git_root=tmp_path / "repos") as hub:
        yield hub, tmp_path / "repos"


def test_url_credentials_never_follow_a_redirect_to_another_origin(
    redirecting_forge: tuple[FakeGitHub, Path], certs: CertFiles
) -> None:
    hub, repos = redirecting_forge
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certs.server_cert, certs.server_key)
    with RecordingGitServer(repos, tls) as other:
        hub.git_redirect = other.url
        url = f"https://x-access-token:{TOKEN}@localhost:{hub.port}/acme/demo.git"
        ca = str(certs.ca_cert)
        env = clean_env(GIT_SSL_CAINFO=ca, SSL_CERT_FILE=ca)
        proc = gateway("review", "--repo", url, "--base", "main", "--head", "main", env=env)
    line = one_line(proc, EXIT_CLONE, "auto-review: error: could not fetch https://localhost:")
    assert f"redirected to {other.url}" in line and "does not follow redirects" in line
    assert TOKEN not in proc.stderr and [r for r in hub.of_kind("git") if r.status == 302]
    assert not [h for _, _, h in other.requests if "authorization" in h]
