"""Runtimes other than runc, judged by what they can do here: crun where crun works
(on a hybrid cgroup host, a private mount namespace whose unified hierarchy lists no
controllers, as this test sets up), its skip and the reason where it does not, and
gVisor's runsc as root. `check` must pass every item under each."""

# ruff: noqa: F811 - the shared fixtures are imported from sandboxrun, then named as parameters
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import HOST_PYTHON, needs_root
from sandboxrun import (  # noqa: F401 - fixtures
    Runner,
    gone,
    root_runner,
    rootless_runner,
    rootless_user,
    run_dir_of,
    runsc_runner,
    shared_dir,
)
from test_sandbox_boundary import SECRETS, free_port, holding_secret, wait_line

pytestmark = needs_root

UNIFIED = "/sys/fs/cgroup/unified/cgroup.controllers"
# Run the rest of the command line in a private mount namespace where FILE is bound
# over TARGET (when TARGET exists), as USER ("-" for root).
IN_PRIVATE_NS = (
    'set -e; if [ -e "$2" ]; then mount --bind "$1" "$2"; fi; user=$3; shift 3;'
    ' if [ "$user" = - ]; then exec "$@"; fi; exec runuser -u "$user" -- "$@"'
)


def in_namespace(runner: Runner, file: Path, target: str, *args: str, **env: str):
    user = runner.user or "-"
    variables = [f"{k}={v}" for k, v in runner.env(**env).items()]
    cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", IN_PRIVATE_NS, "sh",
           str(file), target, user, "env", "-i", *variables,
           HOST_PYTHON, str(runner.app), *args]  # fmt: skip
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )


@pytest.fixture(scope="module")
def empty_controllers(shared_dir: Path) -> Path:
    path = shared_dir / "no-controllers"
    path.write_text("")
    path.chmod(0o644)
    return path


def assert_all_hold(result: subprocess.CompletedProcess[str]) -> list[dict]:
    assert result.returncode == 0, result.stdout + result.stderr
    items = json.loads(result.stdout)["items"]
    assert items and all(i["ok"] for i in items), [i for i in items if not i["ok"]]
    return items


@pytest.mark.parametrize("who", ["root", "rootless"])
def test_crun_is_used_where_it_works(
    who: str, request: pytest.FixtureRequest, empty_controllers: Path
) -> None:
    runner: Runner = request.getfixturevalue(f"{who}_runner")
    result = in_namespace(runner, empty_controllers, UNIFIED, "-v", "check", "--json")
    assert_all_hold(result)
    assert "auto-review: runtime crun " in result.stderr  # chosen by discovery, not named
    assert "first usable on PATH" in result.stderr


def test_crun_skipped_says_why(root_runner: Runner, shared_dir: Path) -> None:
    # A hybrid host whose unified hierarchy has a controller: a tmpfs over /sys/fs/cgroup
    # in a private mount namespace shows discovery exactly that layout.
    script = (
        "set -e; mount -t tmpfs tmpfs /sys/fs/cgroup; mkdir /sys/fs/cgroup/unified;"
        ' echo hugetlb > /sys/fs/cgroup/unified/cgroup.controllers; exec "$@"'
    )
    env = [f"{k}={v}" for k, v in root_runner.env().items()]
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", "env", "-i",
         *env, HOST_PYTHON, str(root_runner.app), "doctor", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    report = json.loads(result.stdout)
    [runtime] = [i for i in report["items"] if i["name"] == "runtime"]
    assert runtime["detail"].startswith("runc "), runtime
    assert "crun skipped: crun refuses this hybrid cgroup host" in runtime["detail"]
    assert "lists hugetlb" in runtime["detail"]
    named = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", "env", "-i",
         *env, "AUTO_REVIEW_RUNTIME=crun", HOST_PYTHON, str(root_runner.app), "probe", "exit",
         "0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert named.returncode == 69
    assert "AUTO_REVIEW_RUNTIME=crun: crun refuses" in named.stderr and "runc" in named.stderr


def test_runsc_as_root_passes_every_item(root_runner: Runner) -> None:
    result = root_runner.run(
        "-v", "check", "--json", env=root_runner.env(AUTO_REVIEW_RUNTIME="runsc")
    )
    items = {i["name"]: i for i in assert_all_hold(result)}
    assert "auto-review: runtime runsc " in result.stderr
    # gVisor's semantics, checked the way they can be: the kernel's own answers
    assert "(prctl)" in items["no-new-privs"]["detail"]
    assert "(syscall)" in items["capabilities"]["detail"]
    assert items["host-fds"]["detail"].startswith("lifeline on fd 0")
    assert items["network"]["detail"] == "own namespace: lo"


def test_runsc_gets_the_secrets_and_exit_status(root_runner: Runner) -> None:
    env = root_runner.env(AUTO_REVIEW_RUNTIME="runsc", WEBHOOK_SECRET="runsc-secret-value")
    names = root_runner.run("probe", "env", env=env)
    assert names.returncode == 0 and "WEBHOOK_SECRET" in names.stdout.split()
    assert root_runner.run("probe", "exit", "7", env=env).returncode == 7


@pytest.mark.parametrize("network", ["isolated", "host"])
def test_runsc_serve_stops_cleanly_on_sigterm(runsc_runner: Runner, network: str) -> None:
    """runsc dies of a SIGTERM it gets instead of passing it on: the launcher hands it to
    the sandbox with `runsc kill`, so the gateway stops as under runc (its line, exit 0),
    not 143 without a word."""
    env = runsc_runner.env(AR_GATEWAY_BIND=f"127.0.0.1:{free_port()}", AUTO_REVIEW_NETWORK=network,
                           FORGEJO_BASE_URL="https://forge.invalid", **SECRETS)  # fmt: skip
    proc = runsc_runner.popen("serve", env=env, stderr=subprocess.STDOUT)
    try:
        wait_line(proc, "serving on")
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read() if proc.stdout else ""
        assert proc.wait(timeout=60) == 0, rest
        assert "SIGTERM: no longer accepting; stopping" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_runsc_rootless_is_a_clear_error(rootless_runner: Runner) -> None:
    result = rootless_runner.run("check", env=rootless_runner.env(AUTO_REVIEW_RUNTIME="runsc"))
    assert result.returncode == 69
    assert "runsc needs root here" in result.stderr and "run as root" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    report = json.loads(
        rootless_runner.run(
            "doctor", "--json", env=rootless_runner.env(AUTO_REVIEW_RUNTIME="runsc")
        ).stdout
    )
    [runtime] = [i for i in report["items"] if i["name"] == "runtime"]
    assert not runtime["ok"] and "runsc needs root here" in runtime["detail"] and runtime["fix"]


def test_runsc_lifeline_ends_the_sandbox_and_no_secret_is_on_disk(runsc_runner: Runner) -> None:
    runner = runsc_runner
    env = runner.env(AR_GATEWAY_BIND=f"127.0.0.1:{free_port()}",
                     FORGEJO_BASE_URL="https://forge.invalid", **SECRETS)  # fmt: skip
    proc = runner.popen("serve", env=env)
    try:
        wait_line(proc, "serving on")
        run = run_dir_of(runner, proc)
        state = subprocess.run(
            ["runsc", "--root", str(runner.cache / "v1" / "run" / "runsc"), "state", run.name],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        sandbox = json.loads(state.stdout)["pid"]  # the Sentry's host process
        environ = Path(f"/proc/{sandbox}/environ").read_bytes()
        assert not [k for k, v in SECRETS.items() if v.encode() in environ]
        assert holding_secret(runner.cache, runner.state) == []
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert gone(sandbox, timeout=2), "the gVisor sandbox outlived its launcher by 2 s"
        assert holding_secret(runner.cache, runner.state) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    after = runner.run("probe", "exit", "0")  # the next start cleans up what is left
    assert after.returncode == 0, after.stderr


@pytest.mark.parametrize("who", ["root", "rootless"])
def test_crun_serves_on_the_isolated_network(
    who: str, request: pytest.FixtureRequest, empty_controllers: Path
) -> None:
    """`serve` under crun with slirp4netns: rootless, crun's created init is not
    dumpable, so the launcher makes the user and network namespaces first
    (launcher/sandbox/netfirst.py) and crun joins them; a signed webhook reaches the
    gateway through the forwarded port."""
    import hashlib
    import hmac
    import urllib.request

    from test_sandbox_network import PR_EVENT, SECRET, deliver, wait_serving

    runner: Runner = request.getfixturevalue(f"{who}_runner")
    port = free_port()
    env = runner.env(
        AR_GATEWAY_BIND=f"127.0.0.1:{port}",
        WEBHOOK_SECRET=SECRET,
        FORGEJO_BASE_URL="https://forge.invalid",
        AR_FORGEJO_TOKEN="t0ken",
    )
    variables = [f"{k}={v}" for k, v in env.items()]
    # Every step execs (setpriv, unlike runuser, leaves no parent behind): the process
    # is the launcher itself, and SIGTERM goes to it alone, as a service manager's does.
    user = ["setpriv", f"--reuid={runner.user}", f"--regid={runner.user}", "--clear-groups"]
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         'mount --bind "$1" "$2"; shift 2; exec "$@"', "sh", str(empty_controllers), UNIFIED,
         *(user if runner.user else []), "env", "-i", *variables,
         HOST_PYTHON, str(runner.app), "serve"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_serving(proc)
        body = json.dumps(PR_EVENT).encode()
        signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert deliver(port, body, signature) == 202
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=10) as response:
            assert json.loads(response.read())["isolation"] == "crun"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, proc.stderr.read() if proc.stderr else ""
