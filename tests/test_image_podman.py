"""The exported image in real podman, run with the line docs/IMAGE.md documents:
`check` passes every item (from the docker-archive and from the OCI layout), the
default command serves and answers /healthz, and a fresh named volume on the state
dir is writable by the gateway. The seccomp profile comes from `bundle export
--seccomp`. Each test makes its own containers and volumes and removes them."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, needs_root, run_app

pytestmark = needs_root

IMAGE_DOC = ROOT / "docs" / "IMAGE.md"


def podman(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    if check:
        assert proc.returncode == 0, f"podman {' '.join(args)}: {proc.stderr}"
    return proc


def documented_line() -> list[str]:
    """The `podman run` line of docs/IMAGE.md, as words."""
    match = re.search(r"^(podman run --rm --read-only .*)$", IMAGE_DOC.read_text(), re.M)
    assert match, "docs/IMAGE.md must give the podman run line"
    return shlex.split(match.group(1))


def host_options() -> list[str]:
    """What this CI host needs on top of the documented line: the runtime the launcher's
    discovery picks here (podman's default crun refuses a hybrid cgroup host whose
    unified hierarchy has controllers), and rlimits within our hard limits (root in a
    CI container may lack CAP_SYS_RESOURCE to raise them to podman's defaults)."""
    from launcher.sandbox import runtime

    return ["--runtime", runtime.discover(rootless=False).path,
            "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=1024:1024"]  # fmt: skip


def run_line(image: str, seccomp: Path, volume: str, *command: str, extra=()) -> list[str]:
    """The documented line with this test's image, profile and volume, then `command`."""
    words = documented_line()
    assert words[:2] == ["podman", "run"] and words[-1] == "check"
    out = []
    for word in words[2:-2]:  # the image and the command are replaced
        word = re.sub(r"^seccomp=.*", f"seccomp={seccomp}", word)
        word = re.sub(r"^[\w.-]+:/var/lib/auto-review$", f"{volume}:/var/lib/auto-review", word)
        out.append(word)
    return [*host_options(), *extra, *out, image, *command]


@pytest.fixture(scope="module")
def exported(app: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The image loaded from the docker-archive and from the OCI layout, and the profile."""
    work = tmp_path_factory.mktemp("podman")
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(work / "cache"))
    env.pop("AUTO_REVIEW_BUNDLE", None)
    version = json.loads(run_app(app, "bundle", "info", "--json", env=env).stdout)["version"]
    for args in (["--docker-archive", str(work / "image.tar")], ["--oci", str(work / "oci")],
                 ["--seccomp", str(work / "seccomp.json")]):  # fmt: skip
        proc = run_app(app, "bundle", "export", *args, env=env)
        assert proc.returncode == 0, proc.stderr
    tag = f"localhost/auto-review:{version}"
    podman("rmi", "-f", tag, check=False)
    loaded = podman("load", "-i", str(work / "image.tar"))
    layout_tag = f"localhost/auto-review-layout:{version}"
    source, dest = f"oci:{work / 'oci'}:{version}", f"containers-storage:{layout_tag}"
    subprocess.run(["skopeo", "copy", source, dest], check=True, capture_output=True)
    yield {"tag": tag, "layout": layout_tag, "seccomp": work / "seccomp.json", "loaded": loaded}
    podman("rmi", "-f", tag, layout_tag, check=False)


@pytest.fixture
def volume() -> Iterator[str]:
    name = f"ar-test-{uuid.uuid4().hex[:12]}"
    yield name
    podman("volume", "rm", "-f", name, check=False)


def test_docker_archive_is_tagged_by_its_version(exported: dict) -> None:
    assert f"Loaded image: {exported['tag']}" in exported["loaded"].stdout
    inspect = json.loads(podman("image", "inspect", exported["tag"]).stdout)[0]
    assert inspect["Config"]["Cmd"] == ["serve"]
    assert inspect["Config"]["User"] == "10001:10001"


@pytest.mark.parametrize("source", ["tag", "layout"])
def test_check_passes_every_item_with_the_documented_line(
    exported: dict, volume: str, source: str
) -> None:
    line = run_line(exported[source], exported["seccomp"], volume, "check", "--json")
    proc = podman("run", *line, check=False)
    report = json.loads(proc.stdout)
    failed = [i for i in report["items"] if not i["ok"]]
    assert proc.returncode == 0 and not failed, failed or proc.stderr
    assert len(report["items"]) >= 20


def test_podman_defaults_fail_check_where_the_line_does_not(exported: dict, volume: str) -> None:
    # Why the line matters: podman's defaults allow ptrace and unshare, a writable root.
    proc = podman("run", "--rm", *host_options(), "-v", f"{volume}:/var/lib/auto-review",
                  exported["tag"], "check", "--json", check=False)  # fmt: skip
    failed = {i["name"] for i in json.loads(proc.stdout)["items"] if not i["ok"]}
    assert proc.returncode == 1
    assert {"rootfs-readonly", "ptrace", "unshare", "no-new-privs"} <= failed


def test_a_fresh_named_volume_is_writable(exported: dict, volume: str) -> None:
    line = run_line(exported["tag"], exported["seccomp"], volume, "probe", "write",
                    "/var/lib/auto-review/probe.txt")  # fmt: skip
    proc = podman("run", *line, check=False)
    assert proc.stdout.strip() == "ok", proc.stdout + proc.stderr
    mount = podman("volume", "inspect", volume, "--format", "{{.Mountpoint}}").stdout.strip()
    assert (Path(mount) / "probe.txt").read_text() == "probe\n"
    assert os.stat(mount).st_uid == 10001


def test_serve_is_the_default_command_and_answers_healthz(exported: dict, volume: str) -> None:
    name = f"ar-serve-{uuid.uuid4().hex[:12]}"
    extra = ["-d", "--name", name, "-p", "127.0.0.1::8080", "-e", "AR_GATEWAY_BIND=0.0.0.0:8080",
             "-e", "WEBHOOK_SECRET=podman-test-secret-0123", "-e", "FORGEJO_BASE_URL=http://forge.invalid",
             "-e", "AR_FORGEJO_TOKEN=podman-test-token"]  # fmt: skip
    line = run_line(exported["tag"], exported["seccomp"], volume, extra=extra)
    line.remove("--rm")
    podman("run", *line)
    try:
        logs = subprocess.Popen(["podman", "logs", "-f", name], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip
        try:
            assert logs.stdout is not None
            for line_out in logs.stdout:  # wait for the event, not for a time
                if "serving on" in line_out:
                    break
            else:
                raise AssertionError("serve never said it was serving")
        finally:
            logs.kill()
            logs.wait()
        port = podman("port", name, "8080/tcp").stdout.strip().rsplit(":", 1)[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as resp:
            assert resp.status == 200
            assert json.loads(resp.read())["status"] == "ok"
        mount = podman("volume", "inspect", volume, "--format", "{{.Mountpoint}}").stdout.strip()
        assert (Path(mount) / "jobs.sqlite3").exists()  # the queue lives on the volume
    finally:
        podman("rm", "-f", name, check=False)


def test_seccomp_export_is_the_sandbox_profile(exported: dict, app: Path, tmp_path: Path) -> None:
    from launcher.sandbox import seccomp

    assert json.loads(exported["seccomp"].read_text()) == seccomp.profile()
    again = run_app(app, "bundle", "export", "--seccomp", str(exported["seccomp"]))
    assert again.returncode == 2 and "already exists" in again.stderr
