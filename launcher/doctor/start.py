"""`doctor`'s last and deciding item: start a real sandbox and run `check` in it.

The host facts doctor lists can all be right and the sandbox still not start (a
runtime that cannot run here, a read-only or noexec cache, a state dir the
gateway cannot write), so "ready" is said only after this single file has
started a container with the chosen runtime on the cached (or freshly unpacked)
rootfs and every `check` item held. The run is the one a user gets: the same
environment, the same cache, state and run dirs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from launcher import embedded
from launcher.errors import ExitCode

START_TIMEOUT = 300  # a cold start unpacks the rootfs first

# What to do when a `check` item fails inside a sandbox that did start.
ITEM_FIXES = {
    "state-writable": "give the sandbox user a writable state dir: set AUTO_REVIEW_STATE_DIR"
    " to a directory on a writable filesystem",
    "tmp-writable": "the runtime did not mount /tmp as a tmpfs: use runc or crun",
    "ca-bundle": "unset AUTO_REVIEW_CA_FILE or point it at a valid PEM bundle",
    "network": "unset AUTO_REVIEW_NETWORK for a network namespace of its own",
    "pids-limit": "run as root, or delegate cgroup v2 to the user (systemd user slice)",
}
DEFAULT_FIX = "run `auto-review check` for details; report it if the runtime is runc or crun"


class StartResult:
    """Whether the sandbox started and check passed; what failed, with the fix."""

    __slots__ = ("detail", "exit_code", "fix", "ok")

    def __init__(self, ok: bool, detail: str, fix: str = "", exit_code: int = 0) -> None:
        self.ok, self.detail, self.fix, self.exit_code = ok, detail, fix, exit_code


def start_check(runtime_name: str) -> StartResult:
    """Run `auto-review -q check --json` as a child, exactly as a user would (as the
    file's first line runs it: `python3 -I -S`)."""
    argv = [sys.executable, "-I", "-S", embedded.archive_path(), "-q", "check", "--json"]
    env = {k: v for k, v in os.environ.items() if k != "AUTO_REVIEW_BARE"}  # the sandbox's
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return StartResult(
            False,
            f"no answer from the sandbox within {START_TIMEOUT} s",
            "run `auto-review -v check` to see where it stops",
            ExitCode.SANDBOX_FAILED,
        )
    return judge(runtime_name, proc.returncode, proc.stdout, proc.stderr)


def judge(runtime_name: str, code: int, stdout: str, stderr: str) -> StartResult:
    """Read `check --json`'s outcome: a launcher error line, failing items, or all held."""
    try:
        report = json.loads(stdout)
        items = report["items"]
    except (ValueError, KeyError, TypeError):
        report, items = None, None
    if items is None:
        return _launcher_failure(code, stderr)
    failed = [i for i in items if not i.get("ok")]
    if code == 0 and not failed:
        return StartResult(
            True, f"started a {runtime_name} container: all {len(items)} check items hold"
        )
    names = ", ".join(f"{i['name']} ({i['detail']})" for i in failed) or f"exit {code}"
    fixes = dict.fromkeys(ITEM_FIXES.get(i["name"], DEFAULT_FIX) for i in failed)
    return StartResult(
        False,
        f"a {runtime_name} container started but check failed {len(failed)} of"
        f" {len(items)} items: {names}",
        "; ".join(fixes) or DEFAULT_FIX,
        ExitCode.SANDBOX_FAILED,
    )


def _launcher_failure(code: int, stderr: str) -> StartResult:
    """The launcher's own one-line error (`auto-review: what -- fix`), split for the report."""
    lines = [
        ln for ln in stderr.splitlines() if ln.startswith("auto-review: ") and "warning" not in ln
    ]
    line = lines[-1][len("auto-review: ") :] if lines else ""
    if not line:
        tail = stderr.strip().splitlines()[-1:] or [f"exit {code}"]
        line = tail[0]
    what, _, fix = line.partition(" -- ")
    what = what.removeprefix("the sandbox could not start: ")
    known = {c for c in vars(ExitCode).values() if isinstance(c, int)}
    return StartResult(
        False,
        f"could not start the sandbox: {what}",
        fix or "run `auto-review -v check` for the runtime's own error",
        code if code in known and code else ExitCode.SANDBOX_FAILED,
    )
