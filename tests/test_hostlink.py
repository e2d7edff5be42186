"""The launcher's two fds into the sandbox, without a sandbox: the secrets pipe read back
by the gateway's own reader (the GitHub App key read from its host file included, and
hostile files refused), the lifeline ending a real gateway process at EOF, and the
launcher's network decisions (which commands get the user-mode stack, what is forwarded)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from launcher.errors import ConfigError, ExitCode
from launcher.sandbox import gateway_env, hostlink, network, usernet

sys.path.insert(0, str(ROOT / "payload" / "gateway"))
from auto_review_gateway.core import hostlink as inner
from auto_review_gateway.forges.github import config as github_config


def test_secrets_round_trip_through_a_pipe() -> None:
    secrets = {"WEBHOOK_SECRET": "a=b=c", "LLM_API_KEY": "ключ-🔑", "AR_FORGEJO_TOKEN": ""}
    fd = hostlink.write_secrets(secrets)
    assert fd >= hostlink.FIRST_FREE_FD
    assert inner.read_secrets(fd) == secrets
    with pytest.raises(OSError):
        os.fstat(fd)  # read once, then closed


def test_secrets_that_cannot_be_sent_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="NUL"):
        hostlink.write_secrets({"WEBHOOK_SECRET": "a\0b"})
    with pytest.raises(ConfigError, match="more than"):
        hostlink.write_secrets({"LLM_API_KEY": "x" * (hostlink.PIPE_CAPACITY + 1)})


def test_the_secret_variables_leave_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("WEBHOOK_SECRET", "s"), ("FORGEJO_BASE_URL", "https://f"),
                        ("LLM_API_KEY", "k"), ("AR_FORGEJO_TOKEN", "t")):  # fmt: skip
        monkeypatch.setenv(name, value)
    env, secrets = gateway_env.sandbox_env_and_secrets(["PATH=/usr/bin"], "runc", {})
    assert secrets == {"WEBHOOK_SECRET": "s", "AR_FORGEJO_TOKEN": "t", "LLM_API_KEY": "k"}
    assert "FORGEJO_BASE_URL=https://f" in env and "PATH=/usr/bin" in env
    assert not [item for item in env if item.split("=", 1)[0] in secrets]
    assert inner.SECRET_NAMES == hostlink.SECRET_NAMES  # the two sides agree


@pytest.fixture(scope="module")
def app_pem() -> bytes:
    """A real GitHub App key, as GitHub hands it out (PKCS#1 PEM)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


@pytest.fixture
def no_host_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*hostlink.SECRET_NAMES, gateway_env.APP_KEY_FILE):
        monkeypatch.delenv(name, raising=False)


def test_the_app_key_file_is_sent_by_pipe_and_its_path_stays_out(
    app_pem: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_host_secrets: None
) -> None:
    (tmp_path / "app.pem").write_bytes(app_pem)
    (tmp_path / "link.pem").symlink_to(tmp_path / "app.pem")  # a symlink to a file is fine
    monkeypatch.setenv("GITHUB_APP_ID", "42")
    monkeypatch.setenv("GITHUB_APP_PRIVATE_KEY_FILE", str(tmp_path / "link.pem"))
    env, secrets = gateway_env.sandbox_env_and_secrets(["PATH=/usr/bin"], "runc", {})
    assert "GITHUB_APP_ID=42" in env
    # what goes to config.json: neither the key nor the host path nor the variable's name
    assert not [item for item in env if "PRIVATE" in item or str(tmp_path) in item]
    received = inner.read_secrets(hostlink.write_secrets(secrets))  # the gateway's reader
    assert received == {"GITHUB_APP_PRIVATE_KEY": app_pem.decode()}
    state = tmp_path / "state"
    state.mkdir()  # holds no github-app.pem: the key comes from the pipe alone
    inside = {**received, "GITHUB_APP_ID": "42", "AUTO_REVIEW_STATE_DIR_INSIDE": str(state)}
    assert github_config.load_config(inside).private_key == app_pem


def test_without_the_app_key_file_no_key_is_sent(no_host_secrets: None) -> None:
    assert gateway_env.sandbox_env_and_secrets([], "runc", {})[1] == {}


HOSTILE_KEY_FILES = {
    "fifo": "is not a regular file",
    "dev-zero": "is not a regular file",
    "link-to-dev-zero": "is not a regular file",
    "directory": "is not a regular file",
    "missing": "No such file or directory",
    "over-16-KiB": "over 16 KiB",
    "public-key": "holds no PEM private key",
    "no-end-line": "holds no PEM private key",
    "nul-byte": "holds no PEM private key",
}


def hostile_key_file(kind: str, tmp_path: Path, app_pem: bytes) -> Path:
    """A GITHUB_APP_PRIVATE_KEY_FILE of `kind`; those with content hold `app_pem`'s body."""
    path = tmp_path / f"{kind}.pem"
    if kind == "fifo":
        os.mkfifo(path)  # no writer: a blocking open would wait forever
    elif kind == "dev-zero":
        return Path("/dev/zero")
    elif kind == "link-to-dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    elif kind == "over-16-KiB":
        path.write_bytes(app_pem + b"\n" * ((17 << 10) - len(app_pem) + 1))
    elif kind == "public-key":
        body = b"".join(app_pem.splitlines(keepends=True)[1:-1])
        path.write_bytes(b"-----BEGIN PUBLIC KEY-----\n" + body + b"-----END PUBLIC KEY-----\n")
    elif kind == "no-end-line":
        path.write_bytes(app_pem.rstrip().rsplit(b"\n", 1)[0])
    elif kind == "nul-byte":
        path.write_bytes(app_pem.replace(b"\n", b"\n\0", 1))
    return path


@pytest.mark.parametrize("kind", HOSTILE_KEY_FILES)
def test_hostile_app_key_files_are_one_line_config_errors(
    kind: str, app_pem: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_host_secrets
) -> None:
    path = hostile_key_file(kind, tmp_path, app_pem)
    monkeypatch.setenv("GITHUB_APP_PRIVATE_KEY_FILE", str(path))
    with pytest.raises(ConfigError) as exc:
        gateway_env.sandbox_env_and_secrets(["PATH=/usr/bin"], "runc", {})
    line = exc.value.one_line()
    assert exc.value.exit_code == ExitCode.CONFIG
    assert f"GITHUB_APP_PRIVATE_KEY_FILE={path}" in line
    assert HOSTILE_KEY_FILES[kind] in line and "\n" not in line
    assert exc.value.fix and "GITHUB_APP_PRIVATE_KEY_FILE" in exc.value.fix
    assert not [row for row in app_pem.splitlines()[1:-1] if row.decode() in line]


def test_the_lifeline_ends_the_gateway_when_its_write_end_closes() -> None:
    link = hostlink.HostLink({"WEBHOOK_SECRET": "v"})
    code = (
        "import os, sys, threading\n"
        f"sys.path.insert(0, {str(ROOT / 'payload' / 'gateway')!r})\n"
        "from auto_review_gateway.core import hostlink\n"
        "hostlink.attach()\n"
        "print(os.environ['WEBHOOK_SECRET'], flush=True)\n"
        "threading.Event().wait()\n"  # until the lifeline ends the process
    )
    env = {
        "PATH": os.defpath,
        "AUTO_REVIEW_LIFELINE_FD": str(link.lifeline_read),
        "AUTO_REVIEW_SECRETS_FD": str(link.secrets_read),
    }
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", code], env=env, text=True,
                            pass_fds=(link.lifeline_read, link.secrets_read),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "v"
        link.close_read_ends()
        started = time.monotonic()
        link.cut()
        assert proc.wait(timeout=2) == inner.LIFELINE_EXIT
        assert time.monotonic() - started < 2
        assert "launcher is gone" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("argv", "llm", "stack"),
    [
        (["check"], "", False),
        (["probe", "exit", "0"], "", False),
        (["probe", "clone", "https://x"], "", True),
        (["serve"], "", True),
        (["review", "--repo", "https://x", "--base", "main"], "", True),
        (["review", "--path", "/mnt/repo", "--base", "main"], "", False),
        (["review", "--path", "/mnt/repo", "--base", "main"], "https://llm", True),
        (["review", "--path", "/mnt/repo", "--base", "m", "--post", "--pr", "a/b#1"], "", True),
    ],
)
def test_which_commands_get_the_user_mode_stack(
    argv: list[str], llm: str, stack: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_BASE_URL", llm)
    assert network.needs_stack(argv) is stack


@pytest.mark.parametrize(
    ("bind", "forward"),
    [("", ("127.0.0.1", 8080)), ("0.0.0.0:9000", ("0.0.0.0", 9000)),
     ("localhost:81", ("127.0.0.1", 81))],
)  # fmt: skip
def test_serve_forwards_its_bind(bind: str, forward, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AR_GATEWAY_BIND", bind)
    assert network.serve_forward(["serve"]) == forward
    assert network.serve_forward(["check"]) is None


@pytest.mark.parametrize("bind", ["[::1]:8080", "127.0.0.1:0", "example.org:80", "nonsense"])
def test_binds_the_isolated_network_cannot_forward(bind: str, monkeypatch) -> None:
    monkeypatch.setenv("AR_GATEWAY_BIND", bind)
    with pytest.raises(ConfigError, match="AR_GATEWAY_BIND"):
        network.serve_forward(["serve"])


def test_network_mode(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("AUTO_REVIEW_NETWORK", raising=False)
    assert network.mode() == "isolated"
    monkeypatch.setenv("AUTO_REVIEW_NETWORK", "host")
    assert network.mode() == "host"
    assert "AUTO_REVIEW_NETWORK=host" in capsys.readouterr().err
    monkeypatch.setenv("AUTO_REVIEW_NETWORK", "bridge")
    with pytest.raises(ConfigError):
        network.mode()


def test_resolv_conf_names_the_forwarder_and_keeps_search(tmp_path) -> None:
    host = tmp_path / "host-resolv.conf"
    host.write_text("nameserver 127.0.0.53\nsearch corp.example\noptions edns0\n")
    text = Path(network.resolv_conf(str(host), str(tmp_path))).read_text()
    assert text.splitlines() == ["nameserver 10.0.2.3", "search corp.example", "options edns0"]


def test_host_addresses_are_this_hosts_and_never_loopback() -> None:
    addrs = usernet.host_addresses()
    assert not [a for a in addrs if a.startswith("127.")]
    listed = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    assert all(f"inet {a}/" in listed for a in addrs)
