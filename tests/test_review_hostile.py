"""A hostile repository under review (issue 27): whatever it holds, the review's memory
follows its budgets and every git is bounded, and a cap reached is one line and exit 3.

On the host, the gateway from source: ``review`` runs under a small wrapper that makes
itself the child subreaper (so that a git helper orphaned by its parent is reaped, and
counted, there too) and reports its own peak RSS and the largest of its descendants'.
tests/test_review_hostile_sandbox.py runs the same attacks through the single file,
root and rootless. Measured on main for comparison: the 200 MB blob peaked the
gateway at 1 296 MiB, the newline bomb at 6 229 MiB (git diff at 2 822 MiB), the
endless pack grew index-pack past 1.2 GB in a minute.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gitserver import CertFiles, GitHttpsServer, make_ca
from tests.hostilegit import (
    HostileGitServer,
    endless_pack,
    hostile_repo,
    large_pack,
    newlines,
    stalled_pack,
    text_of,
)

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = ROOT / "payload" / "gateway"
sys.path.insert(0, str(GATEWAY))

from auto_review_gateway.core.model import EXIT_CLONE, ReviewError  # noqa: E402
from auto_review_gateway.review import (  # noqa: E402
    diffparse,
    diffstream,
    gitfetch,
    gitproc,
    gitrepo,
)
from auto_review_gateway.review.budgets import (  # noqa: E402
    MAX_FETCH_OBJECTS,
    MAX_FILE_LINES,
    MAX_PACK_BYTES,
    MiB,
)

PEAK_GOAL_MIB = 256  # the goal for the gateway's peak RSS, and ours for git's
BIG = 200 * MiB
BOMB = 64 * MiB
DENSE = 2 * MAX_FILE_LINES  # bytes of newlines: under the byte cap, over the line cap
SMALL = {"small.py": b"<<<<<<< HEAD\n"}

MEASURE = r"""
import ctypes, json, os, resource, runpy, sys
ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
sys.argv = ["auto_review_gateway", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("auto_review_gateway", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
finally:
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    peaks = {who: resource.getrusage(how).ru_maxrss // 1024 for who, how in
             (("self", resource.RUSAGE_SELF), ("git", resource.RUSAGE_CHILDREN))}
    sys.stderr.write("\nPEAKS " + json.dumps(peaks) + "\n")
sys.exit(code)
"""

SPAWN = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


def measured_review(*args: str, env: dict[str, str]) -> tuple[int, str, str, dict[str, int]]:
    """``review`` from source: (exit status, stdout, stderr, peak RSS in MiB of the
    gateway ("self") and of the largest git process ("git"))."""
    # Through a small process: a process's ru_maxrss starts at its parent's peak when it
    # is spawned (vfork shares the parent's memory until exec), and pytest's is large.
    proc = subprocess.run([sys.executable, "-c", SPAWN, sys.executable, "-c", MEASURE, "review",
                           *args], cwd=GATEWAY, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    stderr, _, peaks = proc.stderr.rpartition("\nPEAKS ")
    return proc.returncode, proc.stdout, stderr.strip(), json.loads(peaks)


def clean_env(certs: CertFiles | None, tmp: Path) -> dict[str, str]:
    drop = ("LLM_", "FORGEJO_", "AR_", "GIT_", "SSL_CERT_", "GITHUB_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["TMPDIR"] = str(tmp)
    if certs is not None:
        env["GIT_SSL_CAINFO"] = str(certs.ca_cert)
    return env


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("auto-review: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    hostile_repo(root / "big.git", {"big.txt": text_of(BIG), **SMALL})
    hostile_repo(root / "bomb.git", {"bomb.txt": newlines(BOMB), "dense.txt": newlines(DENSE),
                                     **SMALL})  # fmt: skip
    return root


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_ca(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def server(repos: Path, certs: CertFiles) -> Iterator[GitHttpsServer]:
    with GitHttpsServer(repos, certs) as srv:
        yield srv


def too_large(stdout: str) -> dict[str, int]:
    report = json.loads(stdout)
    assert report["verdict"] == "fail"  # small.py's conflict marker is still found
    assert ("small.py", 1, "conflict-marker") in {
        (f["path"], f["line"], f["rule"]) for f in report["findings"]
    }
    return {entry["path"]: entry["size"] for entry in report.get("too_large", [])}


# --------------------------------------------------------------------------- big blobs


@pytest.mark.parametrize("source", ["path", "repo"])
def test_a_200_mb_blob_is_listed_too_large_within_the_memory_goal(
    source: str, repos: Path, server: GitHttpsServer, certs: CertFiles, tmp_path: Path
) -> None:
    where = ["--path", str(repos / "big.git")] if source == "path" else [
        "--repo", server.repo_url("big")]  # fmt: skip
    env = clean_env(certs, tmp_path)
    code, out, err, peaks = measured_review(*where, "--base", "main", "--head", "topic",
                                            "--format", "json", env=env)  # fmt: skip
    assert code == 0, err
    assert too_large(out) == {"big.txt": BIG}
    report = json.loads(out)
    assert report["summary"].endswith("(1 too large to review)")
    assert ("big.txt", 1, "large-file") in {(f["path"], f["line"], f["rule"])
                                            for f in report["findings"]}  # fmt: skip
    assert peaks["self"] <= PEAK_GOAL_MIB and peaks["git"] <= PEAK_GOAL_MIB, peaks


def test_a_newline_bomb_is_listed_too_large(
    server: GitHttpsServer, certs: CertFiles, tmp_path: Path
) -> None:
    code, out, err, peaks = measured_review(
        "--repo", server.repo_url("bomb"), "--base", "main", "--head", "topic",
        "--format", "json", env=clean_env(certs, tmp_path),
    )  # fmt: skip
    assert code == 0, err
    # 64 MiB over the byte cap; 2 MiB under it, but two million lines, over the line cap
    assert too_large(out) == {"bomb.txt": BOMB, "dense.txt": DENSE}
    assert peaks["self"] <= PEAK_GOAL_MIB and peaks["git"] <= PEAK_GOAL_MIB, peaks
    assert list(tmp_path.iterdir()) == []  # the clone is gone


def test_attributes_that_force_a_text_diff_change_nothing(repos: Path, tmp_path: Path) -> None:
    """The files over a cap are left out of git's diff by path, so no ``diff`` attribute
    can make git read them line by line."""
    copy = tmp_path / "bomb.git"
    subprocess.run(["cp", "-a", str(repos / "bomb.git"), str(copy)], check=True)
    (copy / "info" / "attributes").write_text("* diff\n")
    code, out, err, peaks = measured_review("--path", str(copy), "--base", "main", "--head",
                                            "topic", "--format", "json",
                                            env=clean_env(None, tmp_path))  # fmt: skip
    assert code == 0, err
    assert too_large(out) == {"bomb.txt": BOMB, "dense.txt": DENSE}
    assert peaks["git"] <= PEAK_GOAL_MIB, peaks


def test_text_and_markdown_name_the_files_too_large(repos: Path, tmp_path: Path) -> None:
    env = clean_env(None, tmp_path)
    args = ("--path", str(repos / "big.git"), "--base", "main", "--head", "topic")
    code, out, err, _peaks = measured_review(*args, env=env)
    assert code == 0, err
    assert "too large to review: big.txt (200.0 MiB)" in out.splitlines()
    code, out, err, _peaks = measured_review(*args, "--format", "markdown", env=env)
    assert "Too large to review (listed, not read): `big.txt` (200.0 MiB)." in out


# --------------------------------------------------------------------------- hostile servers


def hostile_review(pack, repos: Path, certs: CertFiles, tmp_path: Path):
    with HostileGitServer(repos, certs, pack=pack) as srv:
        return measured_review("--repo", srv.repo_url("big"), "--base", "main", "--head",
                               "topic", env=clean_env(certs, tmp_path))  # fmt: skip


def test_an_endless_pack_ends_in_one_line_naming_the_memory_cap(
    repos: Path, certs: CertFiles, tmp_path: Path
) -> None:
    """A header that announces 100 million objects: index-pack sizes its table of objects
    from it, and the memory rlimit refuses that at once."""
    code, _out, err, peaks = hostile_review(endless_pack(100_000_000), repos, certs, tmp_path)
    assert code == EXIT_CLONE
    assert one_line(err).endswith(f"git ran out of memory: {gitproc.memory_cap()}")
    assert peaks["self"] <= PEAK_GOAL_MIB and peaks["git"] <= PEAK_GOAL_MIB, peaks
    assert list(tmp_path.iterdir()) == []


def test_a_pack_announcing_too_many_objects_is_stopped(
    repos: Path, certs: CertFiles, tmp_path: Path
) -> None:
    """Few enough objects for memory, more than the object cap: the watch on the pack's
    header stops the fetch (the server has gone quiet: nothing else would)."""
    claimed = MAX_FETCH_OBJECTS + 1
    code, _out, err, peaks = hostile_review(stalled_pack(claimed), repos, certs, tmp_path)
    assert code == EXIT_CLONE
    assert f"the pack announces {claimed} objects, over the cap" in one_line(err)
    assert peaks["git"] <= 1024, peaks  # its table of objects is allocated, not the rest


def test_a_pack_outgrowing_the_size_cap_is_stopped_there(
    repos: Path, certs: CertFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Objects without end: the pack file stops at the cap (RLIMIT_FSIZE), in-process here
    so that what was written can be measured before the work dir goes."""
    monkeypatch.setenv("GIT_SSL_CAINFO", str(certs.ca_cert))
    with (
        HostileGitServer(repos, certs, pack=large_pack()) as srv,
        pytest.raises(ReviewError) as caught,
    ):
        gitrepo.clone(srv.repo_url("big"), "main", "topic", str(tmp_path))
    assert caught.value.exit_code == EXIT_CLONE
    assert str(caught.value).endswith(f"the pack outgrew the {MAX_PACK_BYTES // MiB} MiB cap "
                                      "of a fetch")  # fmt: skip
    written = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())
    assert MAX_PACK_BYTES <= written <= MAX_PACK_BYTES + MiB


def test_all_fetches_of_a_review_share_the_repository_cap(
    server: GitHttpsServer, certs: CertFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below the repository cap, a fetch may only write what is left of it."""
    monkeypatch.setattr(gitfetch, "MAX_REPO_BYTES", 64 * 1024)
    monkeypatch.setenv("GIT_SSL_CAINFO", str(certs.ca_cert))
    with pytest.raises(ReviewError) as caught:
        gitrepo.clone(server.repo_url("big"), "main", "topic", str(tmp_path))
    assert str(caught.value).endswith("the repository outgrew the 0 MiB cap of a review")
    assert sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file()) <= 64 * 1024


# --------------------------------------------------------------------------- the pieces


def test_every_git_runs_under_the_memory_rlimit(
    repos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rlimit is set in the child: a cap of 32 MiB makes git's diff of the bomb die,
    and the review says so in one line, naming the cap."""
    monkeypatch.setattr(gitproc, "GIT_MEMORY_LIMIT", 32 * MiB)
    repo = gitrepo.open_path(str(repos / "bomb.git"), "main", "topic")
    with (
        pytest.raises(ReviewError) as caught,
        repo.open_diff(repo.merge_base(), repo.head, []) as d,
    ):
        diffstream.read(d, 1024, lambda path: False)
    assert str(caught.value) == "git diff ran out of memory: the 32 MiB memory cap of a git process"


def test_git_output_is_read_with_a_cap(repos: Path) -> None:
    repo = gitrepo.open_path(str(repos / "bomb.git"), "main", "topic")
    with pytest.raises(ReviewError, match="git cat-file printed more than 1 MiB"):
        gitproc.run(repo._cmd("cat-file", "blob", f"{repo.head}:bomb.txt"), repo.env,
                    "cat-file", max_output=1 * MiB)  # fmt: skip


def added(name: str, lines: list[str]) -> str:
    body = "".join(f"+{line}\n" for line in lines)
    return (f"diff --git a/{name} b/{name}\nnew file mode 100644\n--- /dev/null\n+++ b/{name}\n"
            f"@@ -0,0 +1,{len(lines)} @@\n{body}")  # fmt: skip


def test_the_stream_keeps_the_budget_and_lists_every_file() -> None:
    long_line = "x" * 100_000  # longer than what is left of the budget: the cut is there
    diff = (added("a", ["1", "2"]) + added("b", ["3", long_line, "4"]) + added("c", ["5"])
            + "diff --git a/img b/img\nBinary files a/img and b/img differ\n")  # fmt: skip
    got = diffstream.read(io.BytesIO(diff.encode()), 1000, lambda path: False)
    assert [(f.path, f.truncated, f.added) for f in got.files] == [
        ("a", False, {1: "1", 2: "2"}), ("b", True, {1: "3"}), ("c", True, {}),
        ("img", False, {}),
    ]  # fmt: skip
    assert got.truncated and got.files[1].hunks[0].new_count == 1
    # The line cap cuts the same way; the file cap stops listing.
    got = diffstream.read(io.BytesIO(diff.encode()), 10**6, lambda path: False, max_lines=3)
    assert [len(f.added) for f in got.files] == [2, 1, 0, 0] and got.truncated
    got = diffstream.read(io.BytesIO(diff.encode()), 10**6, lambda path: False, max_files=2)
    assert [f.path for f in got.files] == ["a", "b"] and got.truncated
    # What the stream keeps of a diff that fits is what the whole-text parser finds.
    small = added("a", ["1", "2"]) + added("c", ["5"])
    whole = diffstream.read(io.BytesIO(small.encode()), 10**6, lambda path: path == "c")
    assert [f.added for f in whole.files] == [diffparse.parse(small)[0].added]
    assert whole.skipped == ["c"] and not whole.truncated
