"""The launcher's two fds into the sandbox, without a sandbox: the secrets pipe read back
by the gateway's own reader, the lifeline ending a real gateway process at EOF, and the
launcher's network decisions (which commands get the user-mode stack, what is forwarded)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from launcher import gateway_env, hostlink, network, usernet
from launcher.errors import ConfigError

sys.path.insert(0, str(ROOT / "payload" / "gateway"))
from auto_review_gateway import hostlink as inner


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


def test_the_lifeline_ends_the_gateway_when_its_write_end_closes() -> None:
    link = hostlink.HostLink({"WEBHOOK_SECRET": "v"})
    code = (
        "import os, sys, threading\n"
        f"sys.path.insert(0, {str(ROOT / 'payload' / 'gateway')!r})\n"
        "from auto_review_gateway import hostlink\n"
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
