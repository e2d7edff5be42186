"""The HTTPS git test server (tests/gitserver.py), driven by the host's git.

No sandbox here: these tests prove the helper itself is a faithful smart-HTTP
server (protocol v0 and v2, real TLS verification, gzip and chunked request
bodies, fetch by SHA), so sandbox tests built on it fail only for their own
reasons.
"""

from __future__ import annotations

import random
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gitserver import (
    CertFiles,
    GitHttpsServer,
    commit,
    git_env,
    make_ca,
    make_repo,
)

FILES: dict[str, bytes | str] = {
    "README.md": "# demo\n",
    "src/app.py": "print('hello')\n",
    "data/blob.bin": bytes(range(256)) * 4,
    "dir with space/é.txt": "unicode name\n",
}
# "default" runs git without protocol.version, which is v2 for git >= 2.26.
PROTOCOLS = ["default", "0"]


def protocol_option(version: str) -> list[str]:
    """The git options selecting protocol ``version`` ("default": none)."""
    return [] if version == "default" else ["-c", f"protocol.version={version}"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """One throwaway CA and server certificate for the whole module."""
    return make_ca(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def repos(tmp_path: Path) -> Path:
    """An empty directory of bare repositories to serve."""
    path = tmp_path / "repos"
    path.mkdir()
    return path


@pytest.fixture
def server(repos: Path, certs: CertFiles) -> Iterator[GitHttpsServer]:
    """A running server over ``repos``."""
    with GitHttpsServer(repos, certs) as srv:
        yield srv


def client_env(tmp_path: Path, certs: CertFiles | None) -> dict[str, str]:
    """Host git with an empty HOME, no system config, trusting ``certs``' CA if given."""
    extra = {"GIT_SSL_CAINFO": str(certs.ca_cert)} if certs is not None else {}
    return git_env(tmp_path / "home", **extra)


def git(
    *args: str, env: dict[str, str], cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the host's git with a timeout, capturing text output."""
    proc = subprocess.run(
        ["git", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def tree_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` except .git, by relative path."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def as_bytes(files: dict[str, bytes | str]) -> dict[str, bytes]:
    """``files`` with str contents encoded as UTF-8."""
    return {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}


@pytest.mark.parametrize("version", PROTOCOLS)
def test_clone_over_https(
    version: str, server: GitHttpsServer, repos: Path, certs: CertFiles, tmp_path: Path
) -> None:
    """A clone with the CA goes through the server and yields the committed files."""
    first = make_repo(repos / "demo.git", FILES)
    second = commit(repos / "demo.git", {"src/app.py": "print('v2')\n", "README.md": None})
    env = client_env(tmp_path, certs)
    out = tmp_path / "clone"

    git(*protocol_option(version), "clone", server.repo_url("demo"), str(out), env=env)

    expected = as_bytes(FILES)
    expected["src/app.py"] = b"print('v2')\n"
    del expected["README.md"]
    assert tree_files(out) == expected
    assert git("rev-parse", "HEAD", env=env, cwd=out).stdout.strip() == second
    assert git("rev-parse", "HEAD^", env=env, cwd=out).stdout.strip() == first
    assert git("symbolic-ref", "HEAD", env=env, cwd=out).stdout.strip() == "refs/heads/main"

    assert server.requests[0] == "GET /demo.git/info/refs?service=git-upload-pack"
    posts = [r for r in server.records if r.method == "POST"]
    assert posts, server.requests
    assert all(r.path == "/demo.git/git-upload-pack" for r in posts)
    assert all(r.status == 200 for r in server.records), server.records
    expected_header = "version=2" if version == "default" else None
    assert {r.git_protocol for r in server.records} == {expected_header}
    assert server.tls_handshakes == 1  # one kept-alive connection: responses are well framed
    assert server.errors == []


def test_clone_without_ca_fails_on_certificate(
    server: GitHttpsServer, repos: Path, tmp_path: Path
) -> None:
    """Without our CA the TLS handshake reaches the server, and git refuses its certificate."""
    make_repo(repos / "demo.git", FILES)
    proc = git(
        "clone",
        server.repo_url("demo"),
        str(tmp_path / "clone"),
        env=client_env(tmp_path, None),
        check=False,
    )
    assert proc.returncode != 0
    assert "certificate" in proc.stderr.lower(), proc.stderr
    assert server.requests == []
    assert not (tmp_path / "clone").exists()


@pytest.mark.parametrize("version", PROTOCOLS)
def test_shallow_fetch_of_a_commit_sha(
    version: str, server: GitHttpsServer, repos: Path, certs: CertFiles, tmp_path: Path
) -> None:
    """``git fetch --depth=1 origin <sha>`` of a non-tip commit gets exactly that commit."""
    bare = repos / "history.git"
    config = {
        "uploadpack.allowReachableSHA1InWant": "true",
        "uploadpack.allowAnySHA1InWant": "true",
    }
    make_repo(bare, {"f.txt": "one\n"}, "one", config=config)
    wanted = commit(bare, {"f.txt": "two\n", "g.txt": "new\n"}, "two")
    commit(bare, {"f.txt": "three\n"}, "three")
    env = client_env(tmp_path, certs)
    work = tmp_path / "work"
    git("init", "-q", str(work), env=env)
    git("remote", "add", "origin", server.repo_url("history"), env=env, cwd=work)

    git(*protocol_option(version), "fetch", "--depth=1", "origin", wanted, env=env, cwd=work)

    assert git("rev-parse", "FETCH_HEAD", env=env, cwd=work).stdout.strip() == wanted
    assert git("rev-list", "--count", "FETCH_HEAD", env=env, cwd=work).stdout.strip() == "1"
    assert (work / ".git" / "shallow").read_text().split() == [wanted]
    git("checkout", "-q", "--detach", "FETCH_HEAD", env=env, cwd=work)
    assert tree_files(work) == {"f.txt": b"two\n", "g.txt": b"new\n"}
    assert "POST /history.git/git-upload-pack" in server.requests
    expected_header = "version=2" if version == "default" else None
    assert {r.git_protocol for r in server.records} == {expected_header}


def test_gzip_request_body(
    server: GitHttpsServer, repos: Path, certs: CertFiles, tmp_path: Path
) -> None:
    """Many wants make git gzip its upload-pack request; the backend inflates it."""
    bare = repos / "branches.git"
    make_repo(bare, {"base": "0\n"})
    branches = [f"topic-{i:02d}" for i in range(30)]
    for i, name in enumerate(branches):
        commit(bare, {"base": "0\n", f"file-{i}": f"{i}\n"}, name, branch=name)
    env = client_env(tmp_path, certs)
    out = tmp_path / "clone"

    git("clone", "--mirror", server.repo_url("branches"), str(out), env=env)

    heads = git("for-each-ref", "--format=%(refname:short)", "refs/heads", env=env, cwd=out)
    assert set(heads.stdout.split()) == {"main", *branches}
    assert any(r.content_encoding == "gzip" for r in server.records), server.records


def test_chunked_push(repos: Path, certs: CertFiles, tmp_path: Path) -> None:
    """A push bigger than git's post buffer is sent chunked; the server decodes it."""
    make_repo(repos / "push.git", {"README": "x\n"})
    big = random.Random(0).randbytes(3 * 1024 * 1024 // 2)  # incompressible: > http.postBuffer
    env = client_env(tmp_path, certs)
    work = tmp_path / "work"
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    with GitHttpsServer(repos, certs, push=True) as server:
        git("clone", "-q", server.repo_url("push"), str(work), env=env)
        (work / "big.bin").write_bytes(big)
        git("add", "big.bin", env=env, cwd=work)
        git(*ident, "commit", "-q", "-m", "big", env=env, cwd=work)
        git("push", "-q", "origin", "main", env=env, cwd=work)
        pushed = git("rev-parse", "HEAD", env=env, cwd=work).stdout.strip()

    # git first POSTs a tiny probe (a flush packet, with Content-Length), then the pack.
    receive = [r for r in server.records if r.path == "/push.git/git-receive-pack"]
    assert [r.chunked for r in receive] == [False, True]
    assert receive[-1].body_size > len(big)
    assert [r.status for r in receive] == [200, 200]
    served = git("--git-dir", str(repos / "push.git"), "rev-parse", "main", env=env)
    assert served.stdout.strip() == pushed
    blob = git("--git-dir", str(repos / "push.git"), "cat-file", "-s", "main:big.bin", env=env)
    assert int(blob.stdout) == len(big)


def test_push_refused_by_default(
    server: GitHttpsServer, repos: Path, certs: CertFiles, tmp_path: Path
) -> None:
    """Without ``push=True`` the server is read-only."""
    make_repo(repos / "ro.git", {"README": "x\n"})
    env = client_env(tmp_path, certs)
    work = tmp_path / "work"
    git("clone", "-q", server.repo_url("ro"), str(work), env=env)
    git("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "--allow-empty", "-m", "x",
        env=env, cwd=work)  # fmt: skip
    assert git("push", "origin", "main", env=env, cwd=work, check=False).returncode != 0
    assert any(r.status == 403 for r in server.records), server.records


def test_missing_repository_is_404(
    server: GitHttpsServer, certs: CertFiles, tmp_path: Path
) -> None:
    """An unknown repository fails cleanly with the backend's 404."""
    proc = git(
        "clone",
        server.repo_url("nope"),
        str(tmp_path / "c"),
        env=client_env(tmp_path, certs),
        check=False,
    )
    assert proc.returncode != 0
    assert "not found" in proc.stderr.lower(), proc.stderr
    assert [r.status for r in server.records] == [404]


def test_certificate_names_and_tls_errors(server: GitHttpsServer, certs: CertFiles) -> None:
    """The certificate verifies for both loopback names with the CA; without it, no handshake."""
    trusting = ssl.create_default_context(cafile=str(certs.ca_cert))
    for name in ("localhost", "127.0.0.1"):
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
            trusting.wrap_socket(raw, server_hostname=name) as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert tls.selected_alpn_protocol() in (None, "http/1.1")

    untrusting = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no CA loaded at all
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        untrusting.wrap_socket(raw, server_hostname="localhost")
    deadline = time.monotonic() + 5
    while not server.tls_errors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.tls_errors, "the server did not see the client's alert"
    assert server.requests == []


def test_server_identity_and_stop(repos: Path, certs: CertFiles) -> None:
    """The URL names localhost on a loopback port, and stop() frees the port."""
    server = GitHttpsServer(repos, certs)
    with server:
        port = server.port
        assert server.url == f"https://localhost:{port}"
        assert server.repo_url("x") == server.repo_url("x.git") == f"{server.url}/x.git"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    server.stop()  # idempotent


def test_commits_are_deterministic(tmp_path: Path) -> None:
    """The same calls give the same SHAs in different repositories."""
    shas = []
    for name in ("a.git", "b.git"):
        first = make_repo(tmp_path / name, FILES, "first")
        second = commit(tmp_path / name, {"README.md": "changed\n"}, "second")
        shas.append((first, second))
    assert shas[0] == shas[1]
    assert shas[0][0] != shas[0][1]
