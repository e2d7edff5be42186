"""The sandbox's own network namespace, for real (runc root and rootless, slirp4netns):
egress to a TLS git server on a test host in a network namespace of its own (veth
pair, not loopback); the host's loopback, its other addresses and its abstract unix
sockets unreachable; `serve`'s port forwarded; the settings and their errors."""

# ruff: noqa: F811 - the shared fixtures are imported from sandboxrun, then named as parameters
from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import needs_root
from gitserver import GitHttpsServer, commit, make_ca, make_repo
from sandboxrun import (  # noqa: F401 - fixtures
    Runner,
    root_runner,
    rootless_runner,
    rootless_user,
    runner,
    runsc_runner,
    shared_dir,
)
from testhost import TestHost

pytestmark = needs_root
SECRET = "webhook-secret-for-network-tests"
PR_EVENT = {
    "action": "opened",
    "number": 1,
    "pull_request": {"number": 1, "draft": False, "head": {"sha": "1" * 40, "ref": "topic"},
                     "base": {"ref": "main"}},
    "repository": {"name": "demo", "full_name": "acme/demo", "owner": {"login": "acme"},
                   "clone_url": "https://10.253.7.2:1/none.git"},
}  # fmt: skip


@pytest.fixture(scope="module")
def test_host() -> Iterator[TestHost]:
    with TestHost("n", 7) as host:
        yield host


@pytest.fixture(scope="module")
def git_server(shared_dir: Path, test_host: TestHost) -> Iterator[tuple[GitHttpsServer, str, Path]]:
    """The TLS git server, listening inside the test host's namespace on its address."""
    certs = make_ca(shared_dir / "certs", hosts=(test_host.addr,))
    for path in (shared_dir / "certs").iterdir():
        path.chmod(0o644)  # the rootless user reads the CA file
    repos = shared_dir / "repos"
    sha = make_repo(repos / "demo.git", {"README.md": "hello\n", "src/app.py": "print(1)\n"})
    subprocess.run(["git", "--git-dir", str(repos / "demo.git"), "branch", "topic", "main"],
                   check=True)  # fmt: skip
    commit(repos / "demo.git", {"src/app.py": "print(2)   \n"}, "topic", branch="topic")
    subprocess.run(["chmod", "-R", "a+rX", str(repos)], check=True)
    server = GitHttpsServer(repos, certs, host=test_host.addr, hostname=test_host.addr)
    test_host.inside(server.start)
    try:
        yield server, sha, certs.ca_cert
    finally:
        server.stop()


@pytest.fixture(params=["root", "rootless", "runsc"])
def net_runner(request: pytest.FixtureRequest) -> Runner:
    """runc root and rootless, and gVisor's runsc (root): the same network design."""
    return request.getfixturevalue(f"{request.param}_runner")


def test_clone_over_https_inside_the_sandbox(net_runner: Runner, git_server) -> None:
    runner = net_runner
    server, sha, ca = git_server
    server.requests.clear()
    env = runner.env(AUTO_REVIEW_CA_FILE=str(ca))
    result = runner.run("probe", "clone", server.repo_url("demo"), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["cloned", sha, "README.md", "src/app.py"]
    assert any("git-upload-pack" in r for r in server.requests)


def test_clone_without_our_ca_fails_on_the_certificate(root_runner: Runner, git_server) -> None:
    server, _sha, _ca = git_server
    result = root_runner.run("probe", "clone", server.repo_url("demo"))
    assert result.returncode == 1
    assert "certificate" in result.stdout.lower()


def test_review_repo_clones_from_the_test_host(runner: Runner, git_server) -> None:
    server, _sha, ca = git_server
    env = runner.env(AUTO_REVIEW_CA_FILE=str(ca))
    result = runner.run("review", "--repo", server.repo_url("demo"), "--base", "main",
                        "--head", "topic", "--format", "json", env=env)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    findings = {(f["path"], f["rule"]) for f in json.loads(result.stdout)["findings"]}
    assert ("src/app.py", "trailing-whitespace") in findings


@pytest.fixture
def host_listeners() -> Iterator[dict[str, str]]:
    """A TCP listener on the host's 127.0.0.1, one on 0.0.0.0, and an abstract unix
    socket, each accepting (and counting) connections until the test ends."""
    loopback = socket.create_server(("127.0.0.1", 0))
    anywhere = socket.create_server(("0.0.0.0", 0))
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    name = f"ar-test-{os.getpid()}-{time.monotonic_ns()}"
    abstract.bind("\0" + name)
    abstract.listen()
    accepted: list[str] = []
    for sock, label in ((loopback, "loopback"), (anywhere, "anywhere"), (abstract, "abstract")):
        threading.Thread(target=_accept, args=(sock, label, accepted), daemon=True).start()
    host_ip = subprocess.run(["ip", "-4", "-o", "route", "get", "192.0.2.200"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    src = host_ip.split(" src ")[1].split()[0] if " src " in host_ip else "127.0.0.1"
    try:
        yield {
            "loopback": f"tcp:127.0.0.1:{loopback.getsockname()[1]}",
            "gateway-alias": f"tcp:10.0.2.2:{loopback.getsockname()[1]}",
            "host-address": f"tcp:{src}:{anywhere.getsockname()[1]}",
            "abstract": f"abstract:{name}",
            "accepted": accepted,  # type: ignore[dict-item]
        }
    finally:
        for sock in (loopback, anywhere, abstract):
            sock.close()


def _accept(sock: socket.socket, label: str, accepted: list[str]) -> None:
    while True:
        try:
            conn, _addr = sock.accept()
        except OSError:
            return
        accepted.append(label)
        conn.close()


def test_host_listeners_and_abstract_sockets_are_unreachable(
    net_runner: Runner, host_listeners: dict
) -> None:
    runner = net_runner
    for key in ("loopback", "gateway-alias", "host-address", "abstract"):
        result = runner.run("probe", "connect", host_listeners[key])
        assert result.returncode == 1, (key, result.stdout, result.stderr)
        assert result.stdout.strip() != "connected", key
    assert host_listeners["accepted"] == []


def test_the_host_loopback_opt_in_reaches_them(root_runner: Runner, host_listeners: dict) -> None:
    # the same probes succeed with the documented setting: the refusals above are real
    env = root_runner.env(AUTO_REVIEW_HOST_LOOPBACK="1")
    for key in ("gateway-alias", "host-address"):
        result = root_runner.run("probe", "connect", host_listeners[key], env=env)
        assert result.stdout.strip() == "connected", (key, result.stdout, result.stderr)
    host = root_runner.run("probe", "connect", host_listeners["abstract"],
                           env=root_runner.env(AUTO_REVIEW_NETWORK="host"))  # fmt: skip
    assert host.stdout.strip() == "connected"
    assert "AUTO_REVIEW_NETWORK=host" in host.stderr
    assert sorted(host_listeners["accepted"]) == ["abstract", "anywhere", "loopback"]


def test_bad_network_setting_is_a_config_error(root_runner: Runner) -> None:
    result = root_runner.run("check", env=root_runner.env(AUTO_REVIEW_NETWORK="bridge"))
    assert result.returncode == 78
    assert "AUTO_REVIEW_NETWORK='bridge'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_slirp4netns_is_named_never_a_fallback(
    root_runner: Runner, shared_dir: Path
) -> None:
    bin_dir = shared_dir / "only-runc"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "runc").exists():
        (bin_dir / "runc").symlink_to(subprocess.run(["which", "runc"], capture_output=True,
                                                     text=True).stdout.strip())  # fmt: skip
    env = root_runner.env(PATH=str(bin_dir))
    result = root_runner.run("probe", "connect", "tcp:10.253.7.2:1", env=env)
    assert result.returncode == 69, result.stderr
    assert "slirp4netns is not installed" in result.stderr
    assert "apt-get install slirp4netns" in result.stderr
    assert root_runner.run("check", env=env).returncode == 0  # no network needed, none started
    doctor = root_runner.run("doctor", "--json", env=env)  # names what will not work
    [item] = [i for i in json.loads(doctor.stdout)["items"] if i["name"] == "network"]
    assert not item["ok"] and doctor.returncode == 69
    assert "serve, review --repo, LLM reviews and review --post will not work" in item["detail"]


def test_a_failing_slirp4netns_is_named_by_its_own_error(
    root_runner: Runner, shared_dir: Path
) -> None:
    """slirp4netns prints its error, then its whole usage text: the one line says the
    error (it once showed only the usage's tail)."""
    bin_dir = shared_dir / "failing-slirp"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("runc",):
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(subprocess.run(["which", tool], capture_output=True,
                                                       text=True).stdout.strip())  # fmt: skip
    slirp = bin_dir / "slirp4netns"
    slirp.write_text(
        '#!/bin/sh\necho "userns path doesn\'t exist: /proc/1/ns/nothing" >&2\n'
        + "".join(f"echo '  --option-{i} something it can do' >&2\n" for i in range(40))
        + "exit 1\n"
    )
    slirp.chmod(0o755)
    result = root_runner.run("probe", "connect", "tcp:10.253.7.2:1",
                             env=root_runner.env(PATH=str(bin_dir)))  # fmt: skip
    assert result.returncode == 71, result.stderr
    assert "slirp4netns failed: userns path doesn't exist" in result.stderr
    assert "--option-39" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_a_signed_webhook_through_the_forwarded_port(net_runner: Runner) -> None:
    runner = net_runner
    port = free_port()
    env = runner.env(
        AR_GATEWAY_BIND=f"127.0.0.1:{port}",
        WEBHOOK_SECRET=SECRET,
        FORGEJO_BASE_URL="https://forge.invalid",
        AR_FORGEJO_TOKEN="t0ken",
    )
    proc = runner.popen("serve", env=env)
    try:
        wait_serving(proc)
        body = json.dumps(PR_EVENT).encode()
        assert deliver(port, body, "0" * 64) == 401
        good = deliver(port, body, hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest())
        assert good == 202
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=10) as response:
            isolation = json.loads(response.read())["isolation"]
        assert isolation == runner.defaults.get("AUTO_REVIEW_RUNTIME", discovered(runner))
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) in (0, 143)


def discovered(runner: Runner) -> str:
    """The runtime discovery picks here for this runner (runc, or crun where it works)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from launcher.sandbox import runtime

    return runtime.discover(rootless=runner.user is not None).name


def wait_serving(proc: subprocess.Popen, timeout: float = 60) -> str:
    """The ready line of a `serve` (each readline waits for a line or EOF)."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "serving on" in line:
            return line.strip()
        if not line and proc.poll() is not None:
            raise AssertionError(f"serve exited: {proc.stderr.read() if proc.stderr else ''}")
    raise AssertionError("serve never said it was serving")


def deliver(port: int, body: bytes, signature: str) -> int:
    headers = {
        "Content-Type": "application/json",
        "X-Forgejo-Event": "pull_request",
        "X-Forgejo-Delivery": f"d-{time.monotonic_ns()}",
        "X-Forgejo-Signature": signature,
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/webhooks/forgejo", data=body, method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def listens(address: str) -> bool:
    """Whether a TCP socket of this host's network namespace listens on IPV4:PORT."""
    host, port = address.rsplit(":", 1)
    want = f"{socket.inet_aton(host)[::-1].hex().upper()}:{int(port):04X}"
    with open("/proc/net/tcp") as fh:
        rows = [line.split() for line in fh.read().splitlines()[1:]]
    return any(row[1] == want and row[3] == "0A" for row in rows)  # 0A: LISTEN


@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0"])
def test_the_start_up_line_is_the_address_the_host_listens_on(runner: Runner, address: str) -> None:
    where = f"{address}:{free_port()}"
    env = runner.env(WEBHOOK_SECRET=SECRET, FORGEJO_BASE_URL="https://forge.invalid",
                     AR_FORGEJO_TOKEN="t0ken", AR_GATEWAY_BIND="127.0.0.1:1")  # fmt: skip
    assert not listens(where)
    proc = runner.popen("serve", "--listen", where, env=env)  # --listen wins over the variable
    try:
        assert wait_serving(proc) == f"auto-review: serving on http://{where}"
        assert listens(where)  # the host side of the forwarded port, bound before the start
        port = where.rsplit(":", 1)[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            assert response.status == 200
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) in (0, 143)


@pytest.mark.parametrize(
    "name, url, fix",
    [("FORGEJO_BASE_URL", "http://127.0.0.1:3000", "http://10.0.2.2:3000"),
     ("LLM_BASE_URL", "http://localhost:8000/v1", "http://10.0.2.2:8000"),
     ("HTTPS_PROXY", "127.0.0.1:3128", "http://10.0.2.2:3128")],
)  # fmt: skip
def test_a_url_on_the_hosts_loopback_stops_serve_with_the_fix(
    root_runner: Runner, name: str, url: str, fix: str
) -> None:
    settings = {"WEBHOOK_SECRET": SECRET, "FORGEJO_BASE_URL": "https://forge.invalid",
                "AR_FORGEJO_TOKEN": "t0ken", name: url}  # fmt: skip
    result = serve_refused(root_runner, root_runner.env(**settings))
    assert result.returncode == 78, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"auto-review: {name} names ")
    assert "set AUTO_REVIEW_HOST_LOOPBACK=1 and use " + fix in line
    # opted in, the URL must still name 10.0.2.2: inside, 127.0.0.1 is the sandbox's own
    opted = serve_refused(root_runner, root_runner.env(**settings, AUTO_REVIEW_HOST_LOOPBACK="1"))
    assert opted.returncode == 78 and f"use {fix}" in opted.stderr


def serve_refused(runner: Runner, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`serve` that should stop before it starts; stopped here if it serves instead."""
    proc = runner.popen("serve", "--listen", f"127.0.0.1:{free_port()}", env=env)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
