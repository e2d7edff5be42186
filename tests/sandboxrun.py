"""Running the single file as root or as the rootless user ar-rootless (created here),
each with its own cache and state dirs: the fixtures the sandbox tests share."""

from __future__ import annotations

import os
import pwd
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HOST_PYTHON

ROOTLESS_USER = "ar-rootless"


class Runner:
    """Runs the single file as one user, with its own cache and state dirs."""

    def __init__(self, app: Path, home: Path, user: str | None, **defaults: str) -> None:
        self.app, self.home, self.user = app, home, user
        self.cache, self.state = home / "cache", home / "state"
        self.defaults = defaults  # variables every run gets (e.g. AUTO_REVIEW_RUNTIME)

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.home),
            "AUTO_REVIEW_CACHE_DIR": str(self.cache),
            "AUTO_REVIEW_STATE_DIR": str(self.state),
            **self.defaults,
        }
        env.update(extra)
        return env

    def popen(self, *args: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(
            [HOST_PYTHON, str(self.app), *args],
            env=env or self.env(),
            text=True,
            user=self.user,
            group=self.user,
            extra_groups=[] if self.user else None,
            stdin=subprocess.DEVNULL,
            **kw,
        )

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120):
        proc = self.popen(*args, env=env)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A world-traversable dir (pytest's tmp is 0700 root) for the rootless user's files."""
    base = Path("/tmp") / f"ar-sandbox-{os.getpid()}"
    base.mkdir(mode=0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def rootless_user() -> str:
    try:
        pwd.getpwnam(ROOTLESS_USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        ROOTLESS_USER], check=True)  # fmt: skip
    return ROOTLESS_USER


@pytest.fixture(scope="module")
def root_runner(app: Path, tmp_path_factory: pytest.TempPathFactory) -> Runner:
    return Runner(app, tmp_path_factory.mktemp("root-home"), None)


@pytest.fixture(scope="module")
def rootless_runner(app: Path, shared_dir: Path, rootless_user: str) -> Runner:
    copy = shared_dir / "auto-review"
    shutil.copy(app, copy)
    copy.chmod(0o755)
    home = shared_dir / "home"
    home.mkdir(mode=0o700)
    entry = pwd.getpwnam(rootless_user)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    return Runner(copy, home, rootless_user)


@pytest.fixture(scope="module")
def runsc_runner(app: Path, tmp_path_factory: pytest.TempPathFactory) -> Runner:
    """As root, under gVisor's runsc."""
    return Runner(app, tmp_path_factory.mktemp("runsc-home"), None, AUTO_REVIEW_RUNTIME="runsc")


@pytest.fixture(params=["root", "rootless"])
def runner(request: pytest.FixtureRequest) -> Runner:
    return request.getfixturevalue(f"{request.param}_runner")


def gone(pid: int, timeout: float = 10) -> bool:
    """Whether `pid` (a child or not) exits within `timeout`: waits on a pidfd, which
    becomes readable when the process exits (zombies included), not on a clock."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _w, _x = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def run_dir_of(runner: Runner, launcher: subprocess.Popen) -> Path:
    """The run dir of `launcher`. Call it once the sandboxed process has said something
    (a ready line): the launcher writes config.json before it starts the runtime."""
    path = runner.cache / "v1" / "run" / "runs" / f"auto-review-{launcher.pid}"
    assert (path / "config.json").is_file(), f"no config.json in {path}"
    return path


class Serving:
    """`auto-review serve` started through the launcher as a service manager would,
    with exactly `env`; returns once it printed its ready line. Its stderr is kept in
    `errors` (read by a thread, so the pipe never fills)."""

    def __init__(self, app: Path, env: dict[str, str], timeout: float = 120) -> None:
        # unbuffered bytes: readline() then never reads past a line, so select() on the
        # pipe sees every line that is not yet read
        self.proc = subprocess.Popen(
            [HOST_PYTHON, str(app), "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        self.errors: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:  # a silent, live serve must not hang us
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while sel.select(max(deadline - time.monotonic(), 0)):
                line = self.proc.stdout.readline()  # ready: a line or EOF, no polling
                if b"serving on" in line:
                    return
                if not line:
                    self.proc.wait(timeout=30)
                    raise AssertionError(f"serve exited: {''.join(self.errors)[-2000:]}")
        self.proc.kill()
        raise AssertionError(f"serve never said it was serving in {timeout:g} s")

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.errors.append(line.decode(errors="replace"))

    def stop(self) -> int:
        """SIGTERM, then its exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)
