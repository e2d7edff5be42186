"""`--bare` (the gateway on the host, as in a container image) honours every setting the
sandbox does: AUTO_REVIEW_CA_FILE for git and for Python's TLS, the state dir, the
allowlisted variables and nothing else, the manifest's environment, the secrets by
pipe (never in the exec-time environment), and a bad CA file is the same one-line
error. It runs only where the host is a container, or with AUTO_REVIEW_BARE=force
(which these tests use, so that they hold on a plain host too): shown in a root of our
own, in private mount, PID and cgroup namespaces, with and without a container's
signs. Real single file, a real TLS git server and an OpenAI stand-in over TLS, both
on loopback (bare mode shares the host's network)."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HOST_PYTHON, needs_root
from fake_openai import FakeOpenAI
from gitserver import GitHttpsServer, commit, make_ca, make_repo


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("bare")
    certs = make_ca(base / "certs")
    repos = base / "repos"
    make_repo(repos / "demo.git", {"README.md": "hello\n", "a.txt": "x   \n"}, "base")
    subprocess.run(["git", "--git-dir", str(repos / "demo.git"), "branch", "topic", "main"],
                   check=True)  # fmt: skip
    # a change for the model to look at (an empty diff is reviewed without a model call)
    commit(repos / "demo.git", {"b.txt": "y\n"}, "topic", branch="topic")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(base / "home"),
        "AUTO_REVIEW_CACHE_DIR": str(base / "cache"),
        "AUTO_REVIEW_STATE_DIR": str(base / "state"),
        "AUTO_REVIEW_BARE": "force",  # these tests may run on a host that is no container
    }
    with GitHttpsServer(repos, certs) as server:
        yield {"server": server, "env": env, "certs": certs, "base": base}


def bare(app: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HOST_PYTHON, str(app), *args], env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)  # fmt: skip


def test_ca_file_reaches_git_in_bare_mode(app: Path, world: dict) -> None:
    url = world["server"].repo_url("demo")
    without = bare(app, world["env"], "probe", "clone", url)
    assert without.returncode == 1
    assert "certificate" in without.stdout.lower()  # the private CA is not trusted by default
    env = dict(world["env"], AUTO_REVIEW_CA_FILE=str(world["certs"].ca_cert))
    with_ca = bare(app, env, "review", "--repo", url, "--base", "main", "--head", "topic",
                   "--format", "json")  # fmt: skip
    assert with_ca.returncode == 0, with_ca.stdout + with_ca.stderr
    assert json.loads(with_ca.stdout)["verdict"] == "pass"


def test_ca_file_reaches_python_tls_in_bare_mode(app: Path, world: dict) -> None:
    certs = world["certs"]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    checkout = world["base"] / "checkout"
    if not checkout.exists():
        subprocess.run(["git", "clone", "-q", str(world["base"] / "repos" / "demo.git"),
                        str(checkout)], check=True)  # fmt: skip
        subprocess.run(["git", "-C", str(checkout), "fetch", "-q", "origin", "topic:topic"],
                       check=True)  # fmt: skip
    answer = {"findings": [], "summary": "fine"}
    with FakeOpenAI(context) as llm:
        llm.script(json.dumps(answer))
        llm.script(json.dumps(answer))
        url = llm.url.replace("http://", "https://")
        env = dict(world["env"], LLM_BASE_URL=url, LLM_API_KEY="sk-bare-0123456789")
        args = ("review", "--path", str(checkout), "--base", "main", "--head", "topic",
                "--format", "json")  # fmt: skip
        refused = bare(app, env, *args)
        assert len(llm.requests) == 0, "the private CA must not be trusted without the setting"
        trusted = bare(app, dict(env, AUTO_REVIEW_CA_FILE=str(certs.ca_cert)), *args)
        assert trusted.returncode == 0, trusted.stdout + trusted.stderr
        assert len(llm.requests) == 1
    assert refused.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr
    assert "sk-bare" not in trusted.stdout + trusted.stderr


def test_check_counts_the_extra_ca_in_bare_mode(app: Path, world: dict) -> None:
    def count(env: dict[str, str]) -> int:
        result = bare(app, env, "check", "--json")
        [item] = [i for i in json.loads(result.stdout)["items"] if i["name"] == "ca-bundle"]
        assert item["ok"], item
        return int(item["detail"].split()[0])

    plain = count(world["env"])
    extra = count(dict(world["env"], AUTO_REVIEW_CA_FILE=str(world["certs"].ca_cert)))
    assert extra == plain + 1


def test_bad_ca_file_is_the_same_error_bare(app: Path, world: dict, tmp_path: Path) -> None:
    missing = bare(app, dict(world["env"], AUTO_REVIEW_CA_FILE="/no/ca.pem"), "probe", "exit", "0")
    assert missing.returncode == 78
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("hello")
    result = bare(app, dict(world["env"], AUTO_REVIEW_CA_FILE=str(not_pem)), "probe", "exit", "0")
    assert result.returncode == 78
    assert "no PEM certificate" in result.stderr and "Traceback" not in result.stderr


def test_state_dir_setting_is_where_the_gateway_writes(app: Path, world: dict) -> None:
    state = world["base"] / "state-elsewhere"
    env = dict(world["env"], AUTO_REVIEW_STATE_DIR=str(state))
    result = bare(app, env, "check", "--json")
    [item] = [i for i in json.loads(result.stdout)["items"] if i["name"] == "state-writable"]
    assert item["ok"] and str(state) in item["detail"], item
    assert oct(state.stat().st_mode & 0o777) == "0o700"


def test_environment_is_the_sandbox_one(app: Path, world: dict) -> None:
    env = dict(world["env"], AR_BOT_NAME="bot", NOT_ALLOWED_HERE="x", WEBHOOK_SECRET="s3cret-val")
    names = set(bare(app, env, "probe", "env").stdout.split())
    # the manifest's variables, an allowlisted one, the secret (by pipe); nothing else
    assert {
        "LANG",
        "GIT_TERMINAL_PROMPT",
        "SSL_CERT_FILE",
        "AR_BOT_NAME",
        "WEBHOOK_SECRET",
    } <= names
    assert "NOT_ALLOWED_HERE" not in names
    assert "AUTO_REVIEW_STATE_DIR_INSIDE" in names and "AUTO_REVIEW_NETWORK" in names


def test_secrets_are_not_in_the_exec_environment(app: Path, world: dict) -> None:
    env = dict(world["env"], WEBHOOK_SECRET="s3cret-bare-value")
    proc = subprocess.Popen([HOST_PYTHON, str(app), "probe", "sleep", "30"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "ready"
        with open(f"/proc/{proc.pid}/environ", "rb") as fh:  # execve'd: the same pid
            environ = fh.read()
        assert b"s3cret-bare-value" not in environ
        assert b"AUTO_REVIEW_SECRETS_FD=" in environ
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# A root of our own in private mount, PID and cgroup namespaces: /usr, /etc, /tmp and
# /dev of the host, a proc of the new PID namespace, and none of the signs a container
# engine leaves (unless MARK names one to create). PID 1 is the command itself.
PLAIN_ROOT = r"""
set -e
root=$1; shift
mount -t tmpfs -o mode=0755 plain "$root"
for d in usr etc tmp dev; do mkdir "$root/$d"; mount --rbind "/$d" "$root/$d"; done
for l in bin sbin lib lib64; do
  if [ -L "/$l" ]; then ln -s "$(readlink "/$l")" "$root/$l"
  elif [ -d "/$l" ]; then mkdir "$root/$l"; mount --rbind "/$l" "$root/$l"; fi
done
mkdir -p "$root/proc" "$root/run"
mount -t proc proc "$root/proc"
if [ -n "$MARK" ]; then mkdir -p "$root$(dirname "$MARK")"; touch "$root$MARK"; fi
exec chroot "$root" "$@"
"""


def in_plain_root(app: Path, base: Path, args: list[str], mark: str = "",
                  **env: str) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """`auto-review ARGS` as PID 1 of a fresh root that looks like no container."""
    root = base / "root"
    root.mkdir(exist_ok=True)
    app = Path(shutil.copy(app, base / "auto-review"))  # under /tmp: inside the new root
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(base), "AUTO_REVIEW_CACHE_DIR":
             str(base / "cache"), "AUTO_REVIEW_STATE_DIR": str(base / "state"), **env}  # fmt: skip
    command = ["env", "-i", *(f"{k}={v}" for k, v in clean.items()), HOST_PYTHON, str(app), *args]
    return subprocess.run(
        ["unshare", "-m", "-p", "-f", "-C", "--propagation", "private", "sh", "-c", PLAIN_ROOT,
         "sh", str(root), *command],
        env={"PATH": os.environ["PATH"], "MARK": mark}, capture_output=True, text=True,
        timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@needs_root
def test_bare_is_refused_on_a_host_that_is_no_container(app: Path, tmp_path: Path) -> None:
    for args, env in ((["--bare", "probe", "exit", "0"], {}),
                      (["probe", "exit", "0"], {"AUTO_REVIEW_BARE": "1"})):  # fmt: skip
        result = in_plain_root(app, tmp_path, args, **env)
        assert result.returncode == 78, result.stdout + result.stderr
        [line] = result.stderr.splitlines()
        assert "this host is not a container" in line and "AUTO_REVIEW_BARE=force" in line
        assert not (tmp_path / "cache").exists()  # refused before the cache is touched


@needs_root
@pytest.mark.parametrize(
    "mark, env",
    [("/.dockerenv", {}), ("/run/.containerenv", {}), ("", {"container": "podman"}),
     ("", {"AUTO_REVIEW_BARE": "force"})],
    ids=["dockerenv", "containerenv", "pid1-environ", "force"],
)  # fmt: skip
def test_bare_runs_in_a_container_or_when_forced(
    app: Path, tmp_path: Path, mark: str, env: dict[str, str]
) -> None:
    result = in_plain_root(app, tmp_path, ["--bare", "probe", "whoami"], mark, **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "uid=0 gid=0"
    assert "WITHOUT the sandbox" in result.stderr
