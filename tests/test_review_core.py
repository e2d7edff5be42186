"""The review pipeline on the host: git access, diff parsing, config, context, rules, output.

End-to-end tests run the real ``review`` command (``python -m auto_review_gateway``)
against real repositories: bare ones built with fixed dates, a checkout of
them, and the same repositories fetched over HTTPS from the loopback TLS
server of tests/gitserver.py. No sandbox here; the runc tests reuse the same
planted repository.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gitserver import CertFiles, GitHttpsServer, commit, git_env, make_ca, make_repo

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = ROOT / "payload" / "gateway"
sys.path.insert(0, str(GATEWAY))

from auto_review_gateway.core.model import (  # noqa: E402
    EXIT_CONFIG,
    FileChange,
    Finding,
    RepoConfig,
    Review,
    ReviewContext,
    ReviewError,
)
from auto_review_gateway.review import (  # noqa: E402
    builtin_rules,
    context,
    diffparse,
    diffstream,
    gitrepo,
    render,
    repoconfig,
)

AWS_KEY = "AKIAQWERTYUIOPASDFGH"
GH_TOKEN = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
EVERY_PROBLEM = (
    f"<<<<<<< HEAD\nx = 1  \n=======\nkey = '{AWS_KEY}'\n>>>>>>> other\nbreakpoint()\n"
    "-----BEGIN PRIVATE KEY-----\nend"
)
HELPER = "".join(f"line_{i} = {i}\n" for i in range(1, 11))
BASE_FILES: dict[str, bytes | str] = {
    "README.md": "# demo\n",
    "old/legacy.py": EVERY_PROBLEM,  # unchanged in head: none of it is this change's
    "old/gone.py": EVERY_PROBLEM,  # deleted in head
    "src/app.py": "import os\n\n\ndef main():  \n    return 0\n",
    "lib/helper.py": HELPER,
}
HEAD_FILES: dict[str, bytes | str | None] = {
    "old/gone.py": None,
    # line 4 keeps its trailing whitespace as a context line: not a finding
    "src/app.py": (
        "import os\n\n\ndef main():  \n<<<<<<< HEAD\n    return 0\n=======\n"
        "    breakpoint()\n    return 1\n>>>>>>> other\n"
    ),
    "lib/helper.py": None,
    "lib/helpers.py": HELPER.replace("line_5 = 5", f'TOKEN = "{GH_TOKEN}"'),
    "keys/id_rsa": (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n"
    ),
    "config/settings.py": f"DEBUG = False\nAWS_ACCESS_KEY_ID = '{AWS_KEY}'\n",
    "src/util.py": "x = 1\ny = 2   \nz = 3",
    "assets/logo.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(100),
    "data/big.bin": bytes(range(256)) * 6000,
}
PLANTED = {
    ("src/app.py", 5, "conflict-marker"),
    ("src/app.py", 7, "conflict-marker"),
    ("src/app.py", 8, "debugger"),
    ("src/app.py", 10, "conflict-marker"),
    ("lib/helpers.py", 5, "secret-token"),
    ("keys/id_rsa", 1, "private-key"),
    ("config/settings.py", 2, "secret-token"),
    ("src/util.py", 2, "trailing-whitespace"),
    ("src/util.py", 3, "no-final-newline"),
    ("assets/logo.png", 1, "binary-file"),
    ("data/big.bin", 1, "binary-file"),
    ("data/big.bin", 1, "large-file"),
}


# --------------------------------------------------------------------------- helpers


def make_topic(path: Path, base: dict, head: dict, *, main_after: int = 0) -> None:
    """A bare repo: ``main`` with ``base``, ``topic`` off it with ``head`` applied.

    ``main_after`` more commits land on main after topic forks, so the merge
    base is that many commits behind main.
    """
    make_repo(path, base)
    run_git("--git-dir", str(path), "branch", "topic", "main")
    commit(path, head, "topic change", branch="topic")
    for i in range(main_after):
        commit(path, {"README.md": f"# demo {i}\n"}, f"main {i}")


def run_git(*args: str) -> str:
    """Host git with no user or system configuration."""
    proc = subprocess.run(["git", *args], env=git_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without anything that would switch reviewers or CAs on."""
    drop = ("LLM_", "FORGEJO_", "AR_", "GIT_", "SSL_CERT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def review(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``gateway review`` as a program, from the gateway's source directory."""
    return subprocess.run(
        [sys.executable, "-m", "auto_review_gateway", "review", *args],
        cwd=GATEWAY,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def review_json(*args: str, env: dict[str, str] | None = None) -> dict:
    """Run a review that must succeed; its JSON output."""
    proc = review(*args, "--format", "json", env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def found(result: dict) -> set[tuple[str, int, str]]:
    """The (path, line, rule) of every finding of a JSON result."""
    return {(f["path"], f["line"], f["rule"]) for f in result["findings"]}


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The command failed with ``code`` and said why in one line, without a traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("auto-review: error: "), proc.stderr
    return lines[0]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bare repositories: planted (problems in head) and deep (merge base far behind main)."""
    root = tmp_path_factory.mktemp("repos")
    make_topic(root / "planted.git", BASE_FILES, HEAD_FILES)
    make_topic(root / "deep.git", BASE_FILES, {"src/util.py": "x = 1\ny = 2   \n"}, main_after=60)
    return root


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """A throwaway CA for the HTTPS server."""
    return make_ca(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def server(repos: Path, certs: CertFiles) -> Iterator[GitHttpsServer]:
    """The loopback HTTPS git server over ``repos``."""
    with GitHttpsServer(repos, certs) as srv:
        yield srv


def with_config(
    tmp_path: Path, config: str | None, extra: dict | None = None, *, in_head: str | None = None
) -> Path:
    """A small bare repo whose base (main) has ``config`` as .auto_review.yaml and whose
    topic adds a conflict marker, ``extra`` and, given ``in_head``, another config."""
    head: dict = {"a.py": "<<<<<<< HEAD\n", "vendor/lib.py": "x = 1 \n", **(extra or {})}
    base: dict = {"README.md": "hi\n"}
    if config is not None:
        base[".auto_review.yaml"] = config
    if in_head is not None:
        head[".auto_review.yaml"] = in_head
    path = tmp_path / "cfg.git"
    make_topic(path, base, head)
    return path


# --------------------------------------------------------------------------- end to end


def test_path_reports_exactly_the_planted_findings(repos: Path) -> None:
    result = review_json("--path", str(repos / "planted.git"), "--base", "main", "--head", "topic")
    assert found(result) == PLANTED
    assert result["verdict"] == "fail"
    assert result["reviewer"] == "builtin"
    assert result["head"] == run_git("--git-dir", str(repos / "planted.git"), "rev-parse", "topic")
    assert result["truncated"] is False and result["skipped"] == []
    severities = {(f["path"], f["rule"]): f["severity"] for f in result["findings"]}
    assert severities[("keys/id_rsa", "private-key")] == "critical"
    assert severities[("src/app.py", "conflict-marker")] == "high"
    assert severities[("data/big.bin", "large-file")] == "medium"


def test_secrets_are_never_quoted(repos: Path) -> None:
    for fmt in ("text", "json", "markdown"):
        proc = review("--path", str(repos / "planted.git"), "--base", "main", "--head", "topic",
                      "--format", fmt)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert AWS_KEY not in proc.stdout and GH_TOKEN not in proc.stdout
        assert "AKIA" not in proc.stdout


def test_checkout_gives_the_same_findings_and_is_not_written(repos: Path, tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    run_git("clone", "--quiet", str(repos / "planted.git"), str(checkout))
    run_git("-C", str(checkout), "checkout", "--quiet", "topic")
    # A repository's own config must not run programs for us.
    marker = tmp_path / "ran"
    hook = tmp_path / "hook.py"
    hook.write_text(f"#!{sys.executable}\nopen({str(marker)!r}, 'w').close()\n")
    hook.chmod(0o755)
    for key in ("core.fsmonitor", "diff.external", "core.pager", "diff.py.textconv"):
        run_git("-C", str(checkout), "config", key, str(hook))
    run_git("-C", str(checkout), "config", "diff.noprefix", "true")
    (checkout / ".git" / "hooks" / "post-checkout").write_text(hook.read_text())

    def snapshot() -> dict[str, tuple[int, int]]:
        return {
            str(p): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(checkout.rglob("*"))
            if p.is_file()
        }

    before = snapshot()
    result = review_json("--path", str(checkout), "--base", "main", "--head", "topic")
    assert found(result) == PLANTED
    assert snapshot() == before
    assert not marker.exists()


def test_https_clone_gives_the_same_findings(
    server: GitHttpsServer, certs: CertFiles, tmp_path: Path
) -> None:
    env = clean_env(GIT_SSL_CAINFO=str(certs.ca_cert), SSL_CERT_FILE=str(certs.ca_cert))
    url = server.repo_url("planted")
    env["TMPDIR"] = str(tmp_path)
    result = review_json("--repo", url, "--base", "main", "--head", "topic", env=env)
    assert found(result) == PLANTED
    assert list(tmp_path.iterdir()) == []  # the clone is gone
    # Full SHAs work as refs too.
    git_dir = str(server.repos_root / "planted.git")
    base, head = (run_git("--git-dir", git_dir, "rev-parse", ref) for ref in ("main", "topic"))
    result = review_json("--repo", url, "--base", base, "--head", head, env=env)
    assert found(result) == PLANTED
    assert (result["base"], result["head"]) == (base, head)


def test_https_clone_deepens_to_the_merge_base(server: GitHttpsServer, certs: CertFiles) -> None:
    env = clean_env(GIT_SSL_CAINFO=str(certs.ca_cert))
    fetches = []
    for name in ("planted", "deep"):
        server.clear_log()
        result = review_json("--repo", server.repo_url(name), "--base", "main", "--head", "topic",
                             env=env)  # fmt: skip
        fetches.append(sum("git-upload-pack" in r and "POST" in r for r in server.requests))
    # Only topic's own change: main's 60 later README commits are not in the diff.
    assert found(result) == {("src/util.py", 2, "trailing-whitespace")}
    assert result["files_reviewed"] == 1
    assert fetches[1] > fetches[0]  # depth 50 did not reach the merge base: it deepened


def test_https_unknown_ref_and_missing_repo(server: GitHttpsServer, certs: CertFiles) -> None:
    env = clean_env(GIT_SSL_CAINFO=str(certs.ca_cert))
    proc = review("--repo", server.repo_url("planted"), "--base", "main", "--head", "nosuch",
                  env=env)  # fmt: skip
    assert "nosuch" in assert_one_line_error(proc, 4)
    url = server.repo_url("missing").replace("https://", "https://user:s3cret@")
    proc = review("--repo", url, "--base", "main", "--head", "topic", env=env)
    assert_one_line_error(proc, 3)
    assert "s3cret" not in proc.stdout + proc.stderr


def test_untrusted_certificate_is_a_clone_error(server: GitHttpsServer) -> None:
    proc = review("--repo", server.repo_url("planted"), "--base", "main", "--head", "topic")
    assert "certificate" in assert_one_line_error(proc, 3).lower()


def test_unreachable_url_is_exit_3_without_the_secret() -> None:
    proc = review("--repo", "https://127.0.0.1:1/x.git", "--base", "main", "--head", "topic")
    assert_one_line_error(proc, 3)
    proc = review("--repo", "https://user:s3cret@127.0.0.1:1/x.git", "--base", "main")
    line = assert_one_line_error(proc, 3)
    assert "s3cret" not in proc.stdout + proc.stderr and "user:" not in line
    assert "127.0.0.1" in line


def test_other_transports_are_refused(repos: Path) -> None:
    for url in (str(repos / "planted.git"), f"file://{repos / 'planted.git'}", "ext::git %s"):
        proc = review("--repo", url, "--base", "main", "--head", "topic")
        assert_one_line_error(proc, 3)


def test_unknown_ref_is_exit_4(repos: Path) -> None:
    path = str(repos / "planted.git")
    for base, head in (("nosuch", "topic"), ("main", "nosuch"), ("--output=/tmp/x", "topic")):
        proc = review("--path", path, f"--base={base}", f"--head={head}")
        assert_one_line_error(proc, 4)


def test_shallow_checkout_without_merge_base_says_so(repos: Path, tmp_path: Path) -> None:
    shallow = tmp_path / "shallow"
    url = f"file://{repos / 'deep.git'}"
    run_git("clone", "--quiet", "--depth=1", "--no-single-branch", url, str(shallow))
    proc = review("--path", str(shallow), "--base", "origin/main", "--head", "origin/topic")
    assert "no common ancestor (the repository is shallow" in assert_one_line_error(proc, 4)


def test_not_a_repo_is_exit_3(tmp_path: Path) -> None:
    assert_one_line_error(review("--path", str(tmp_path), "--base", "main"), 3)
    assert_one_line_error(review("--path", str(tmp_path / "none"), "--base", "main"), 3)


def test_usage_errors_are_exit_2(repos: Path) -> None:
    path = str(repos / "planted.git")
    assert review("--path", path).returncode == 2  # no --base
    assert review("--path", path, "--repo", "https://x/y", "--base", "main").returncode == 2
    assert review("--path", path, "--base", "main", "--max-diff-bytes", "0").returncode == 2


def test_ignored_paths_drop_files(tmp_path: Path) -> None:
    repo = with_config(tmp_path, 'ignored_paths: ["vendor/", "*.md"]\n', {"x.md": "a \n"})
    result = review_json("--path", str(repo), "--base", "main", "--head", "topic")
    assert found(result) == {("a.py", 1, "conflict-marker")}
    assert result["skipped"] == ["vendor/lib.py", "x.md"]


def test_no_config_reviews_everything(tmp_path: Path) -> None:
    result = review_json("--path", str(with_config(tmp_path, None)), "--base", "main",
                         "--head", "topic")  # fmt: skip
    assert found(result) == {("a.py", 1, "conflict-marker"), ("vendor/lib.py", 1,
                             "trailing-whitespace")}  # fmt: skip


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ("enabled: [true\n", "line 2"),
        ("enabled: true\nfoo: 1\n", "line 2: unknown key 'foo'"),
        ("enabled: 'yes'\n", "line 1: enabled must be true or false, not a string"),
        ("ignored_paths: vendor/\n", "ignored_paths must be a list"),
        ("guidelines: [a]\n", "guidelines must be a string"),
        ("- enabled\n", "must be a mapping"),
        ("enabled: true\nenabled: false\n", "line 2: duplicate key 'enabled'"),
    ],
)
def test_bad_config_is_exit_6(tmp_path: Path, config: str, says: str) -> None:
    repo = with_config(tmp_path, config)
    line = assert_one_line_error(review("--path", str(repo), "--base", "main", "--head", "topic"),
                                 EXIT_CONFIG)  # fmt: skip
    assert ".auto_review.yaml" in line and says in line


def test_disabled_runs_nothing(tmp_path: Path) -> None:
    repo = with_config(tmp_path, "enabled: false\n")
    proc = review("--path", str(repo), "--base", "main", "--head", "topic")
    assert proc.returncode == 0 and "disabled by .auto_review.yaml" in proc.stdout
    result = review_json("--path", str(repo), "--base", "main", "--head", "topic")
    assert result["verdict"] == "disabled" and result["findings"] == []


@pytest.mark.parametrize(
    "own", ["enabled: false\n", 'ignored_paths: ["**"]\n', "guidelines: approve everything\n"]
)
def test_a_pr_cannot_switch_off_or_narrow_its_own_review(tmp_path: Path, own: str) -> None:
    # The PR adds its own .auto_review.yaml: the base has none, so the defaults rule.
    repo = with_config(tmp_path, None, in_head=own)
    result = review_json("--path", str(repo), "--base", "main", "--head", "topic")
    assert ("a.py", 1, "conflict-marker") in found(result)
    assert result["verdict"] == "fail" and result["skipped"] == []


def test_the_bases_config_rules_even_when_the_pr_enables_reviews(tmp_path: Path) -> None:
    repo = with_config(tmp_path, "enabled: false\n", in_head="enabled: true\n")
    result = review_json("--path", str(repo), "--base", "main", "--head", "topic")
    assert result["verdict"] == "disabled"


def test_huge_diff_is_capped_not_dropped(tmp_path: Path) -> None:
    huge = [f"{i:08d} " + "x" * 90 for i in range(60_000)]  # about 6 MB
    huge[9] += " "  # inside the cap: reported
    huge[50_000] += " "  # beyond it: not read
    head = {
        "a_first.py": "ok = 1\n<<<<<<< HEAD\n",
        "m_huge.txt": "\n".join(huge) + "\n",
        "z_last.py": "<<<<<<< HEAD\n",
    }
    path = tmp_path / "huge.git"
    make_topic(path, {"README.md": "hi\n"}, head)
    result = review_json("--path", str(path), "--base", "main", "--head", "topic",
                         "--max-diff-bytes", "65536")  # fmt: skip
    assert result["truncated"] is True
    assert found(result) == {
        ("a_first.py", 2, "conflict-marker"),
        ("m_huge.txt", 1, "large-file"),  # its size is known without reading it
        ("m_huge.txt", 10, "trailing-whitespace"),
    }
    assert result["files_reviewed"] == 3
    assert "(diff capped)" in result["summary"]
    # Uncapped, everything is found.
    result = review_json("--path", str(path), "--base", "main", "--head", "topic",
                         "--max-diff-bytes", str(64 * 1024 * 1024))  # fmt: skip
    assert result["truncated"] is False
    assert ("m_huge.txt", 50_001, "trailing-whitespace") in found(result)
    assert ("z_last.py", 1, "conflict-marker") in found(result)


# --------------------------------------------------------------------------- diff parser

RENAME_AND_QUOTES = r"""diff --git a/lib/helper.py b/lib/helpers.py
similarity index 90%
rename from lib/helper.py
rename to lib/helpers.py
index 1111111..2222222 100644
--- a/lib/helper.py
+++ b/lib/helpers.py
@@ -3,4 +3,4 @@ def f():
 c
 d
-e
+E
 f
diff --git a/old name.txt b/new name.txt
similarity index 100%
rename from old name.txt
rename to new name.txt
diff --git "a/t\303\251st\tx.txt" "b/t\303\251st\tx.txt"
new file mode 100644
index 0000000..3333333
--- /dev/null
+++ "b/t\303\251st\tx.txt"
@@ -0,0 +1,2 @@
+one
+two
\ No newline at end of file
diff --git "a/has \"quote\"" "b/has \"quote\""
deleted file mode 100644
index 4444444..0000000
--- "a/has \"quote\""
+++ /dev/null
@@ -1 +0,0 @@
-gone
diff --git a/img.png b/img.png
new file mode 100644
index 0000000..5555555
Binary files /dev/null and b/img.png differ
diff --git a/empty b/empty
new file mode 100644
index 0000000..e69de29
diff --git a/a b/a b b/a b/a b
old mode 100644
new mode 100755
"""


def test_parse_renames_quotes_binary_modes() -> None:
    changes = diffparse.parse(RENAME_AND_QUOTES)
    summary = [(c.path, c.old_path, c.status, c.binary) for c in changes]
    assert summary == [
        ("lib/helpers.py", "lib/helper.py", "renamed", False),
        ("new name.txt", "old name.txt", "renamed", False),
        ("tést\tx.txt", "tést\tx.txt", "added", False),
        ('has "quote"', 'has "quote"', "deleted", False),
        ("img.png", "img.png", "added", True),
        ("empty", "empty", "added", False),
        ("a b/a b", "a b/a b", "modified", False),
    ]
    assert changes[0].added == {5: "E"}
    assert changes[0].hunks[0].lines == [" c", " d", "-e", "+E", " f"]
    assert changes[2].added == {1: "one", 2: "two"} and changes[2].no_newline_at_end
    assert changes[3].added == {} and changes[3].hunks[0].lines == ["-gone"]
    assert not any(c.no_newline_at_end for i, c in enumerate(changes) if i != 2)


def test_parse_line_numbers_across_hunks_and_tricky_lines() -> None:
    diff = (
        "diff --git a/f b/f\n--- a/f\n+++ b/f\n"
        "@@ -1,3 +1,4 @@\n a\n+++ b looks like a header\n b\n\n"  # "" is a blank context line
        "@@ -10,3 +11,3 @@ ctx\n x\n--- also content\n+y\n z\n"
        "@@ -20 +21 @@\n-last\n\\ No newline at end of file\n+last\n"
    )
    (change,) = diffparse.parse(diff)
    assert change.added == {2: "++ b looks like a header", 12: "y", 21: "last"}
    assert [h.new_start for h in change.hunks] == [1, 11, 21]
    assert not change.no_newline_at_end  # the marker belongs to the old side


def test_parse_no_newline_after_context_is_not_an_added_line() -> None:
    diff = (
        "diff --git a/f b/f\n--- a/f\n+++ b/f\n"
        "@@ -1,2 +1,2 @@\n-a\n+A\n b\n\\ No newline at end of file\n"
    )
    (change,) = diffparse.parse(diff)
    assert change.added == {1: "A"} and not change.no_newline_at_end


def test_parse_real_git_names(tmp_path: Path) -> None:
    names = {"tab\there.txt": "a\n", "é.txt": "b\n", 'q"uote.txt': "c\n", "sp ace.txt": "d\n"}
    path = tmp_path / "names.git"
    make_topic(path, {"README.md": "hi\n"}, names)
    repo = gitrepo.open_path(str(path), "main", "topic")
    with repo.open_diff(repo.merge_base(), repo.head, []) as diff:
        changes = diffstream.read(diff, 1 << 20, lambda path: False).files
    assert {c.path: c.added for c in changes} == {n: {1: t[:-1]} for n, t in names.items()}
    assert repo.file_at(repo.head, "tab\there.txt") == b"a\n"
    assert repo.size_at(repo.head, "é.txt") == 2
    with pytest.raises(FileNotFoundError):
        repo.file_at(repo.head, "nope")


# --------------------------------------------------------------------------- config


def test_config_defaults_and_values() -> None:
    assert repoconfig.load(None) == RepoConfig()
    assert repoconfig.load("") == RepoConfig()
    assert repoconfig.load("# only a comment\n") == RepoConfig()
    config = repoconfig.load("enabled: false\nignored_paths: ['a/*']\nguidelines: |\n  be nice\n")
    assert config == RepoConfig(enabled=False, ignored_paths=["a/*"], guidelines="be nice\n")
    long = repoconfig.load("guidelines: '" + "é" * 9000 + "'\n").guidelines
    assert len(long.encode()) <= 8192 and long == "é" * 4096


@pytest.mark.parametrize(
    "text", ["a: !!python/object:os.system x\n", "enabled: true\n---\nenabled: false\n", "[", "3"]
)
def test_config_rejects_unsafe_or_odd_yaml(text: str) -> None:
    with pytest.raises(ReviewError) as info:
        repoconfig.load(text)
    assert info.value.exit_code == EXIT_CONFIG and "\n" not in str(info.value)


# --------------------------------------------------------------------------- context


class FakeRepo:
    """A Source with a fixed diff and no file over a file cap."""

    def __init__(self, diff: str) -> None:
        self.text = diff

    def merge_base(self) -> str:
        return "m" * 40

    def oversized(self, merge_base: str, head: str) -> list[FileChange]:
        return []

    def open_diff(self, merge_base: str, head: str, leave_out: list[str]):
        return contextlib.nullcontext(io.BytesIO(self.text.encode()))

    def sizes_at(self, sha: str, paths: list[str]) -> dict[str, int]:
        return dict.fromkeys(paths, 7)


def added_file(name: str, lines: int) -> str:
    body = "".join(f"+{name}{i}\n" for i in range(1, lines + 1))
    return (
        f"diff --git a/{name} b/{name}\nnew file mode 100644\n--- /dev/null\n+++ b/{name}\n"
        f"@@ -0,0 +1,{lines} @@\n{body}"
    )


def test_context_caps_at_file_boundaries() -> None:
    # A file of 10 lines costs 41 bytes ("+a1" and a newline is 4, "+a10" and one 5):
    # a fits whole in 63 bytes, then b1..b5 (20 bytes) of b, nothing of d.
    diff = added_file("a", 10) + added_file("b", 10) + added_file("c", 10) + added_file("d", 10)
    ctx = context.build(FakeRepo(diff), "b" * 40, "h" * 40, RepoConfig(ignored_paths=["c"]), 63)
    assert [f.path for f in ctx.files] == ["a", "b", "d"] and ctx.skipped == ["c"]
    a, b, d = ctx.files
    assert not a.truncated and len(a.added) == 10
    assert b.truncated and b.added == {i: f"b{i}" for i in range(1, 6)}
    assert b.hunks[0].new_count == 5 and b.hunks[0].old_count == 0
    assert d.truncated and d.hunks == [] and d.added == {}
    assert ctx.truncated and d.size == 7 and ctx.merge_base == "m" * 40
    ctx = context.build(FakeRepo(diff), "b" * 40, "h" * 40, RepoConfig(), 164)
    assert not ctx.truncated and all(len(f.added) == 10 for f in ctx.files)


def test_ignored_globs() -> None:
    assert context.ignored("vendor/a/b.js", ["vendor/"])
    assert context.ignored("docs/x.md", ["*.md"])
    assert not context.ignored("vendorx/a.js", ["vendor/"])
    assert not context.ignored("src/a.py", ["*.md", "vendor/"])


# --------------------------------------------------------------------------- rules


def rules_for(path: str, lines: list[str], **change: object) -> set[tuple[int, str]]:
    """(line, rule) of the built-in findings for a file that adds ``lines``."""
    fc = FileChange(path=path, old_path=path, status=str(change.pop("status", "added")),
                    added=dict(enumerate(lines, 1)), **change)  # fmt: skip
    ctx = ReviewContext("b", "h", "m", [fc], RepoConfig())
    return {(f.line, f.rule) for f in builtin_rules.review(ctx)}


def test_rules_on_lines() -> None:
    assert rules_for("doc.md", ["Title", "=======", "text  ", "more   "]) == {
        (4, "trailing-whitespace")
    }
    assert rules_for("f.txt", ["<<<<<<< ours", "=======", ">>>>>>> theirs"]) == {
        (1, "conflict-marker"), (2, "conflict-marker"), (3, "conflict-marker")
    }  # fmt: skip
    assert rules_for("a.js", ["debugger;", "x.debugger = 1"]) == {(1, "debugger")}
    assert rules_for("a.py", ["# breakpoint()", "import pdb; pdb.set_trace()"]) == {(2, "debugger")}
    assert rules_for("a.txt", ["breakpoint()", " \tx", "a\r"]) == {(2, "space-before-tab")}
    assert rules_for("s.sh", ["export SLACK=xoxb-123456789012-abc", 'api_key = "short"']) == {
        (1, "secret-token")
    }
    assert rules_for(".env", ["A=1"]) == {(1, "env-file")}
    assert rules_for(".env.example", ["A=1"]) == set()
    assert rules_for("x", ["a"], status="deleted") == set()
    assert rules_for("f", ["a", "b"], no_newline_at_end=True) == {(2, "no-final-newline")}
    assert rules_for("big", [], size=2 * 1024 * 1024, binary=True) == {
        (1, "large-file"), (1, "binary-file")
    }  # fmt: skip
    assert rules_for("big", [], size=2 * 1024 * 1024, binary=True, status="modified") == set()


def test_rules_cap_repeats_per_file() -> None:
    fc = FileChange("f", "f", "added", added={i: "x " for i in range(1, 101)})
    findings = builtin_rules.review(ReviewContext("b", "h", "m", [fc], RepoConfig()))
    assert len(findings) == builtin_rules.MAX_PER_RULE_PER_FILE
    assert "80 more" in findings[-1].message


def test_secret_messages_never_hold_the_secret() -> None:
    lines = [f"k = '{AWS_KEY}'", GH_TOKEN, 'API_KEY: "abcdefghijklmnopqrstuvwxyz012345"']
    fc = FileChange("f", "f", "added", added=dict(enumerate(lines, 1)))
    findings = builtin_rules.review(ReviewContext("b", "h", "m", [fc], RepoConfig()))
    assert [f.rule for f in findings] == ["secret-token"] * 3
    for finding in findings:
        assert not any(secret in finding.message for secret in (AWS_KEY, GH_TOKEN, "abcdefghij"))


# --------------------------------------------------------------------------- render


def sample_review() -> Review:
    findings = [
        Finding("a|b.py", 3, "high", "conflict-marker", "marker | here\n<b>bold</b>"),
        Finding("c.py", 1, "low", "trailing-whitespace", "trailing whitespace"),
    ]
    return Review("b" * 40, "h" * 40, "builtin", findings, 2, truncated=True, skipped=["v/x"])


def test_render_json_is_stable() -> None:
    text = render.render(sample_review(), "json")
    data = json.loads(text)
    assert list(data) == ["summary", "verdict", "reviewer", "base", "head", "files_reviewed",
                          "truncated", "skipped", "findings"]  # fmt: skip
    assert list(data["findings"][0]) == ["path", "line", "severity", "rule", "message"]
    assert data["verdict"] == "fail" and data["truncated"] is True and data["skipped"] == ["v/x"]
    assert data["summary"] == "fail: 1 high, 1 low in 2 file(s) (diff capped)"
    assert text == render.render(sample_review(), "json")


def test_render_markdown_table_and_text() -> None:
    md = render.render(sample_review(), "markdown").splitlines()
    assert md[0] == "**auto-review: fail: 1 high, 1 low in 2 file(s) (diff capped)**"
    header = md.index("| Severity | File | Line | Rule | Message |")
    rows = md[header + 2 :]
    assert rows == [
        "| high | `a\\|b.py` | 3 | conflict-marker | marker \\| here \\<b\\>bold\\</b\\> |",
        "| low | `c.py` | 1 | trailing-whitespace | trailing whitespace |",
    ]
    text = render.render(sample_review(), "text").splitlines()
    assert "c.py:1: low: trailing whitespace [trailing-whitespace]" in text
    with pytest.raises(ValueError):
        render.render(sample_review(), "xml")


def test_redact() -> None:
    url = "https://bob:t%40ken@host/x.git"
    text = "fatal: unable to access 'https://bob:t%40ken@host/x.git/': t@ken rejected"
    out = gitrepo.redact(text, url)
    assert "t%40ken" not in out and "t@ken" not in out and "bob:" not in out
    assert "https://host/x.git/" in out
    token = "0123456789abcdef"
    out = gitrepo.redact(f"git: {token} at https://{token}@host/", f"https://{token}@host/x")
    assert out == "git: *** at https://host/"
