"""The systemd unit is one systemd itself accepts (systemd-analyze verify), and it wires
the pieces the launcher reads: state, cache and runtime dirs, the fixed container id."""

from __future__ import annotations

import os
import pwd
import re
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, needs_root

UNIT = ROOT / "deploy" / "systemd" / "auto-review.service"
pytestmark = needs_root


@pytest.fixture(scope="module")
def service_user() -> None:
    try:
        pwd.getpwnam("auto-review")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", "auto-review"], check=True)  # fmt: skip
    Path("/etc/auto-review").mkdir(exist_ok=True)
    Path("/etc/auto-review/env").touch()


def verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify on the unit, with the single file where the unit expects it."""
    unit = tmp_path / "auto-review.service"
    unit.write_text(unit_text.replace("/usr/local/bin/auto-review", str(ROOT / "build.py")))
    env = dict(os.environ, SYSTEMD_LOG_LEVEL="warning")
    return subprocess.run(["systemd-analyze", "verify", str(unit)], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_systemd_accepts_the_unit(service_user: None, tmp_path: Path) -> None:
    result = verify(UNIT.read_text(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_a_broken_unit_is_reported(service_user: None, tmp_path: Path) -> None:
    """Control: the check above can fail."""
    broken = UNIT.read_text().replace("ExecStart=/usr/bin/python3", "ExecStart=python3-relative")
    broken = broken.replace("KillSignal=SIGTERM", "KillSignal=SIGNOPE")
    result = verify(broken, tmp_path)
    assert result.returncode != 0 or result.stderr.strip()


def test_the_unit_sets_what_the_launcher_reads() -> None:
    lines = dict(
        line.split("=", 1)
        for line in UNIT.read_text().splitlines()
        if "=" in line and line[0] != "#"
    )
    assert lines["StateDirectory"] == "auto-review"
    assert lines["EnvironmentFile"] == "/etc/auto-review/env"
    assert "auto-review-gateway" in lines["ExecStopPost"]
    text = UNIT.read_text()
    assert "Environment=AUTO_REVIEW_CONTAINER_ID=auto-review-gateway" in text
    assert "Environment=AUTO_REVIEW_STATE_DIR=%S/auto-review" in text
    assert "RuntimeDirectoryMode=0700" in text  # rundirs only trusts a private XDG_RUNTIME_DIR


def test_readme_installs_what_the_unit_says_from_a_release() -> None:
    """The unit's install lines are README's operator steps, with the unit as the release
    file beside the single file (no deploy/ path: a release has no source tree)."""
    steps = [line.lstrip("# ").strip() for line in UNIT.read_text().splitlines()
             if line.startswith("#   ")]  # fmt: skip
    readme = (ROOT / "README.md").read_text()
    for step in steps:
        for part in step.split(" && "):
            part = part.split("   #")[0].strip()
            if part.startswith(("install", "useradd")):
                assert part in readme, part
    assert "install -d -m 0750 -g auto-review /etc/auto-review" in readme
    assert "install -m 0644 deploy/" not in readme


def test_readme_env_file_lines_carry_no_inline_comment() -> None:
    """systemd's EnvironmentFile= keeps a `# ...` after a value as part of the value
    (`AR_REVIEW_CONCURRENCY=2  # reviews at once` stops serve): README's settings for
    the unit's env file put their comments on lines of their own."""
    readme = (ROOT / "README.md").read_text()
    operators = readme.split("## Running the gateway", 1)[1].split("\n## ", 1)[0]
    settings = re.findall(r"^\s*[A-Z][A-Z0-9_]*=.*$", operators, re.M)
    assert len(settings) > 20
    assert [line for line in settings if "#" in line.split("=", 1)[1]] == []
