"""The gateway's ``check`` and ``probe`` commands, run bare on the host.

The gateway is packed into a zipapp the way the build packs it and started the
way the sandbox starts it: ``python -I -S gateway.pyz COMMAND``. The host is not
a sandbox, so several check items must fail here; that proves they can fail.
"""

import json
import os
import select
import signal
import subprocess
import sys
import zipapp
from pathlib import Path

import pytest
from conftest import needs_root
from hostile import fifo_and_oversized

GATEWAY_SOURCE = Path(__file__).resolve().parent.parent / "payload" / "gateway"
HOST_CA_FILE = Path("/etc/ssl/certs/ca-certificates.crt")
ITEM_NAMES = [
    "git",
    "ca-bundle",
    "git-https",
    "tmp-writable",
    "state-writable",
    "rootfs-readonly",
    "no-shell",
    "uid",
    "capabilities",
    "no-new-privs",
    "unshare",
    "mount",
    "ptrace",
    "network",
    "abstract-sockets",
    "vsock",
    "host-fds",
    "pid1-environ",
    "not-dumpable",
    "dev-tmpfs",
    "pids-limit",
]


@pytest.fixture(scope="session")
def gateway_pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """gateway.pyz built from payload/gateway, without bytecode caches."""
    target = tmp_path_factory.mktemp("gateway") / "gateway.pyz"
    zipapp.create_archive(
        GATEWAY_SOURCE, target, filter=lambda path: "__pycache__" not in path.parts
    )
    return target


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """An existing, writable state dir."""
    path = tmp_path / "state"
    path.mkdir()
    return path


def gateway(
    pyz: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the gateway with a small, explicit environment and capture its output."""
    return subprocess.run(
        [sys.executable, "-I", "-S", str(pyz), *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def check_items(pyz: Path, env: dict[str, str]) -> tuple[int, dict[str, dict[str, object]]]:
    """Run ``check --json``; return its exit status and its items by name."""
    result = gateway(pyz, "check", "--json", env=env)
    report = json.loads(result.stdout)
    assert report["ok"] is all(item["ok"] for item in report["items"])
    return result.returncode, {item["name"]: item for item in report["items"]}


@needs_root
def test_check_reports_every_item_and_fails_outside_a_sandbox(
    gateway_pyz: Path, state_dir: Path
) -> None:
    result = gateway(
        gateway_pyz, "check", "--json", env={"AUTO_REVIEW_STATE_DIR_INSIDE": str(state_dir)}
    )
    report = json.loads(result.stdout)
    items = {item["name"]: item for item in report["items"]}
    assert [item["name"] for item in report["items"]] == ITEM_NAMES
    assert all(isinstance(item["detail"], str) and item["detail"] for item in items.values())
    assert not items["capabilities"]["ok"]
    assert not items["rootfs-readonly"]["ok"]
    assert "/usr: writable" in items["rootfs-readonly"]["detail"]
    assert not items["uid"]["ok"]
    assert not items["host-fds"]["ok"]  # no lifeline: not started by the launcher
    assert report["ok"] is False
    assert result.returncode == 1


def test_check_table_has_one_line_per_item_and_a_summary(
    gateway_pyz: Path, state_dir: Path
) -> None:
    result = gateway(gateway_pyz, "check", env={"AUTO_REVIEW_STATE_DIR_INSIDE": str(state_dir)})
    lines = result.stdout.splitlines()
    assert len(lines) == len(ITEM_NAMES) + 1
    for line, name in zip(lines[:-1], ITEM_NAMES, strict=True):
        status, item_name, _ = line.split(maxsplit=2)
        assert (status, item_name) in {("ok", name), ("FAIL", name)}
    assert result.returncode == (0 if lines[-1].startswith("all ") else 1)


def test_check_does_not_leave_a_mount_on_the_host_tmp(gateway_pyz: Path, state_dir: Path) -> None:
    before = Path("/proc/self/mounts").read_text()
    gateway(gateway_pyz, "check", env={"AUTO_REVIEW_STATE_DIR_INSIDE": str(state_dir)})
    assert Path("/proc/self/mounts").read_text() == before


def test_state_writable_follows_the_state_dir(
    gateway_pyz: Path, state_dir: Path, tmp_path: Path
) -> None:
    _, items = check_items(gateway_pyz, {"AUTO_REVIEW_STATE_DIR_INSIDE": str(state_dir)})
    assert items["state-writable"]["ok"]
    assert list(state_dir.iterdir()) == []

    missing = tmp_path / "missing"
    _, items = check_items(gateway_pyz, {"AUTO_REVIEW_STATE_DIR_INSIDE": str(missing)})
    assert not items["state-writable"]["ok"]
    assert "ENOENT" in items["state-writable"]["detail"]


def test_ca_bundle_loads_the_host_bundle_and_rejects_an_empty_one(
    gateway_pyz: Path, state_dir: Path, tmp_path: Path
) -> None:
    assert HOST_CA_FILE.is_file(), f"no CA bundle at {HOST_CA_FILE}: install ca-certificates"
    state = {"AUTO_REVIEW_STATE_DIR_INSIDE": str(state_dir)}
    _, items = check_items(gateway_pyz, {**state, "SSL_CERT_FILE": str(HOST_CA_FILE)})
    assert items["ca-bundle"]["ok"]
    assert str(HOST_CA_FILE) in items["ca-bundle"]["detail"]

    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    status, items = check_items(gateway_pyz, {**state, "SSL_CERT_FILE": str(empty)})
    assert not items["ca-bundle"]["ok"]
    assert status == 1


def test_probe_exit_returns_the_status(gateway_pyz: Path) -> None:
    assert gateway(gateway_pyz, "probe", "exit", "7").returncode == 7
    assert gateway(gateway_pyz, "probe", "exit", "0").returncode == 0
    assert gateway(gateway_pyz, "probe", "exit", "256").returncode == 2


def test_probe_sleep_exits_143_on_sigterm(gateway_pyz: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", str(gateway_pyz), "probe", "sleep", "30"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        readable, _, _ = select.select([proc.stdout], [], [], 5)
        assert readable, "no output within 5 s"
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 143
        assert proc.stdout.read() == "terminated\n"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_probe_env_lists_names_never_values(gateway_pyz: Path) -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    result = gateway(gateway_pyz, "probe", "env", env={"PROBE_TEST_VARIABLE": secret})
    names = result.stdout.splitlines()
    assert "PROBE_TEST_VARIABLE" in names
    assert "PATH" in names
    assert names == sorted(names)
    assert secret not in result.stdout
    assert result.returncode == 0


def test_probe_write_creates_the_file(gateway_pyz: Path, tmp_path: Path) -> None:
    target = tmp_path / "written"
    result = gateway(gateway_pyz, "probe", "write", str(target))
    assert (result.stdout, result.returncode) == ("ok\n", 0)
    assert target.read_bytes() == b"probe\n"


@pytest.mark.parametrize(
    ("where", "errno_name"),
    [("missing/file", "ENOENT"), ("a-file/file", "ENOTDIR")],
)
def test_probe_write_reports_the_errno_name(
    gateway_pyz: Path, tmp_path: Path, where: str, errno_name: str
) -> None:
    (tmp_path / "a-file").write_text("")
    result = gateway(gateway_pyz, "probe", "write", str(tmp_path / where))
    assert (result.stdout, result.returncode) == (f"{errno_name}\n", 1)


def test_probe_whoami_prints_the_real_ids(gateway_pyz: Path) -> None:
    result = gateway(gateway_pyz, "probe", "whoami")
    assert result.stdout == f"uid={os.getuid()} gid={os.getgid()}\n"
    assert result.returncode == 0


@pytest.mark.parametrize("args", [["bogus"], [], ["probe", "bogus"]])
def test_unknown_command_is_a_usage_error(gateway_pyz: Path, args: list[str]) -> None:
    result = gateway(gateway_pyz, *args)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_probe_abi_runs_the_i386_abi_outside_a_sandbox(gateway_pyz: Path) -> None:
    # the control for the sandbox test that expects SIGSYS: on this host i386 syscalls run
    result = gateway(gateway_pyz, "probe", "abi")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "i386=ran"


def test_the_gateway_reads_the_ca_file_bounded(gateway_pyz: Path, tmp_path: Path) -> None:
    # The container image has no launcher: the gateway reads AUTO_REVIEW_CA_FILE itself.
    fifo, big = fifo_and_oversized(tmp_path, b"-----BEGIN CERTIFICATE-----\n", 17 << 20)
    for path in ("/dev/zero", fifo, big):
        result = gateway(gateway_pyz, "probe", "exit", "0", env={"AUTO_REVIEW_CA_FILE": str(path)})
        assert result.returncode == 78, result.stderr
        assert result.stderr.count("\n") == 1 and f"AUTO_REVIEW_CA_FILE={path}" in result.stderr


def test_the_gateway_reads_an_app_key_file_bounded(gateway_pyz: Path, tmp_path: Path) -> None:
    # Without the launcher (the image, --bare) the gateway opens GITHUB_APP_PRIVATE_KEY_FILE
    # itself: a FIFO must not hang `serve`, nor a huge file be read whole.
    fifo, big = fifo_and_oversized(tmp_path, b"-----BEGIN PRIVATE KEY-----\n", 1 << 30)
    base = {"WEBHOOK_SECRET": "s", "GITHUB_APP_ID": "1", "AUTO_REVIEW_STATE_DIR": str(tmp_path)}
    for path, why in ((fifo, "is not a regular file"), (big, "is 1073741824 bytes, over 16 KiB")):
        env = {**base, "GITHUB_APP_PRIVATE_KEY_FILE": str(path)}
        result = gateway(gateway_pyz, "serve", env=env)
        assert result.returncode == 6, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert f"GITHUB_APP_PRIVATE_KEY_FILE={path} {why}" in line


def test_app_auth_in_a_bare_run_uses_the_interpreters_own_site_dirs(
    gateway_pyz: Path, tmp_path: Path
) -> None:
    # --bare on a host: no /usr/lib/auto-review/site, and -S keeps the site dirs off the
    # path; the interpreter's own (here the venv's, which has cryptography) must serve.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    assert not os.path.exists("/usr/lib/auto-review/site")  # the host is not the rootfs
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    code = (
        "import sys, site; sys.path.insert(0, sys.argv[1]);"
        " from auto_review_gateway.forges.github import auth as github_auth;"
        " assert 'cryptography' not in sys.modules;"
        " github_auth.load_private_key(sys.stdin.buffer.read()); import cryptography;"
        " print(any(cryptography.__file__.startswith(d) for d in site.getsitepackages()))"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(gateway_pyz)],
        input=pem,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-800:]
    assert result.stdout.decode().strip() == "True"


def test_serve_refuses_an_unusable_app_key_at_start(gateway_pyz: Path, tmp_path: Path) -> None:
    # before any socket or job: an EC key, a key cryptography cannot load, garbage
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    sm2 = tmp_path / "sm2.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "SM2", "-out", str(sm2)], check=True)
    garbage = b"-----BEGIN PRIVATE KEY-----\nbm9wZQ==\n-----END PRIVATE KEY-----\n"
    cases = {
        "must be an RSA key": ec_key,
        "cannot be loaded (UnsupportedAlgorithm)": sm2.read_bytes(),
        "not an unencrypted PEM private key": garbage,
    }
    for why, pem in cases.items():
        env = {
            "WEBHOOK_SECRET": "s",
            "GITHUB_APP_ID": "1",
            "GITHUB_APP_PRIVATE_KEY": pem.decode(),
            "AUTO_REVIEW_STATE_DIR": str(tmp_path),
        }
        result = gateway(gateway_pyz, "serve", env=env)
        assert result.returncode == 6, (why, result.stderr)
        [line] = result.stderr.strip().splitlines()
        assert why in line and "BEGIN" not in line
