"""Every git process of a review, hermetic and bounded.

Hermetic: a built-from-scratch environment (no system or global config, no prompts, no
askpass) and ``-c`` options that switch off everything a repository could use to run a
program: hooks, fsmonitor, credential helpers, every transport but HTTPS. A
repository's own config still applies, so every command that parses git's output
also pins the options it depends on.

Bounded: each git runs in a session of its own (so that it and its helpers, such as
``index-pack``, can be killed together) under rlimits set before git's ``exec``:
RLIMIT_DATA (its heap: the memory a diff or an index-pack grows), RLIMIT_CORE 0, and for
a fetch RLIMIT_FSIZE (no file it writes outgrows the pack cap). What git prints is read
with a cap, and stderr keeps only its tail. The caps are in ``budgets.py``; a cap
reached is a one-line ReviewError (EXIT_CLONE) that names it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from auto_review_gateway.core.model import EXIT_CLONE, ReviewError
from auto_review_gateway.review.budgets import (
    GIT_MEMORY_LIMIT,
    LOCAL_TIMEOUT,
    MAX_FILE_BYTES,
    MAX_GIT_OUTPUT,
    MiB,
)

GIT_OPTIONS = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "protocol.allow=never",
    "-c", "protocol.https.allow=always",
    "-c", "credential.helper=",
    "-c", "safe.directory=*",
    "-c", "transfer.fsckObjects=true",
    "-c", "init.templateDir=",
    # A stalled server must not hang the review: abort below 1 byte/s for a minute.
    "-c", "http.lowSpeedLimit=1",
    "-c", "http.lowSpeedTime=60",
    # Blobs over the file cap: index-pack streams them instead of holding them, and a
    # diff calls them binary rather than reading them line by line.
    "-c", f"core.bigFileThreshold={MAX_FILE_BYTES}",
    # Every fetched object lands in one pack (index-pack, whose file the size limit
    # caps), never as loose files, and nothing repacks after a fetch.
    "-c", "transfer.unpackLimit=1",
    "-c", "gc.auto=0",
    "-c", "maintenance.auto=false",
)  # fmt: skip
PASS_THROUGH_ENV = ("SSL_CERT_FILE", "GIT_SSL_CAINFO")
_TAIL = 64 * 1024  # bytes of stderr kept
_CHUNK = 64 * 1024


def git_env(home: str) -> dict[str, str]:
    """The whole environment of a git process: nothing of ours leaks in but the CA settings."""
    env = {
        "PATH": os.environ.get("PATH") or os.defpath,
        "HOME": home,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_OPTIONAL_LOCKS": "0",  # reading must never write to the repository
        "LANG": "C",
        "LC_ALL": "C",
    }
    for name in PASS_THROUGH_ENV:
        if os.environ.get(name):
            env[name] = os.environ[name]
    return env


def last_line(stderr: bytes) -> str:
    """The last non-empty line git wrote to stderr (its reason for failing)."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1] if lines else "no message from git"


def out_of_memory(stderr: bytes) -> bool:
    """Whether git said it hit its memory limit (xmalloc's "Out of memory")."""
    return b"Out of memory" in stderr or b"out of memory" in stderr


def memory_cap() -> str:
    """The memory cap, as the messages name it."""
    return f"the {GIT_MEMORY_LIMIT // MiB} MiB memory cap of a git process"


# The rlimits are set by a small exec wrapper, not by a preexec_fn: `serve` runs git from
# several worker threads, and Python code between fork and exec can deadlock on a lock
# another thread held at the fork (the subprocess documentation's warning). The wrapper
# is the rootfs's own interpreter; its exec keeps the pid, so the session still kills git.
_LIMIT_AND_EXEC = (
    "import os, resource, sys; n = int(sys.argv[1]); pairs = sys.argv[2:2 + 2 * n];"
    " [resource.setrlimit(int(k), (int(v), int(v))) for k, v in zip(pairs[::2], pairs[1::2])];"
    " os.execvp(sys.argv[2 + 2 * n], sys.argv[2 + 2 * n:])"
)


def _limited(cmd: list[str], file_size: int | None) -> list[str]:
    """``cmd`` run under the rlimits (computed here, in the parent; never above our hard
    limits): RLIMIT_DATA, RLIMIT_CORE 0, and RLIMIT_FSIZE for a fetch."""
    wanted = [(resource.RLIMIT_DATA, GIT_MEMORY_LIMIT), (resource.RLIMIT_CORE, 0)]
    if file_size is not None:
        wanted.append((resource.RLIMIT_FSIZE, max(file_size, 0)))
    pairs: list[str] = []
    for kind, value in wanted:
        _soft, hard = resource.getrlimit(kind)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        pairs += [str(int(kind)), str(value)]
    wrapper = [sys.executable, "-I", "-S", "-c", _LIMIT_AND_EXEC, str(len(wanted))]
    return [*wrapper, *pairs, *cmd]


def _popen(cmd: list[str], env: dict[str, str], stdin: int, file_size: int | None = None):
    try:
        return subprocess.Popen(
            _limited(cmd, file_size),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise ReviewError(f"cannot run git: {exc.strerror or exc}", EXIT_CLONE) from None


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s whole session (git and the helpers it started)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(proc: subprocess.Popen) -> None:
    """Wait for ``proc``, then kill what is left of its session before reaping it: a
    helper git orphaned (an ``index-pack`` whose ``fetch-pack`` died) must not run on.
    While unreaped, ``proc`` keeps its session id, so no other process can hold it."""
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        pass
    _kill(proc)
    proc.wait()


class Result:
    """A finished git process: its status, its stdout and the tail of its stderr."""

    def __init__(self, returncode: int, stdout: bytes, stderr: bytes) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


class Stream:
    """A running ``git <name>`` whose stdout is read as it comes (:meth:`read1`); threads
    of its own feed it ``input``, keep its stderr's tail, and stop it (its whole session)
    at ``timeout`` or when ``watch``, asked four times a second, gives a reason."""

    def __init__(
        self,
        cmd: list[str],
        env: dict[str, str],
        name: str,
        *,
        input: bytes | None = None,
        timeout: float = LOCAL_TIMEOUT,
        file_size: int | None = None,
        watch: Callable[[], str | None] | None = None,
    ) -> None:
        self.name = name
        self.finished = False  # stdout was read to its end
        self.stopped = ""  # why the watchdog killed it
        stdin = subprocess.DEVNULL if input is None else subprocess.PIPE
        self.proc = _popen(cmd, env, stdin, file_size)
        self._tail: collections.deque[bytes] = collections.deque(maxlen=_TAIL // 1024)
        self._done = threading.Event()
        self._threads = [
            threading.Thread(target=self._drain, daemon=True),
            threading.Thread(target=self._watchdog, args=(timeout, watch), daemon=True),
        ]
        if input is not None:
            self._threads.append(threading.Thread(target=self._feed, args=(input,), daemon=True))
        for thread in self._threads:
            thread.start()

    def read1(self, size: int = _CHUNK, /) -> bytes:
        """Up to ``size`` bytes of git's stdout, as soon as there are some; b"" at its end."""
        assert self.proc.stdout is not None
        data = self.proc.stdout.read1(size)
        self.finished = not data
        return data

    @property
    def stderr(self) -> bytes:
        """The last 64 KiB or so of what git wrote to stderr."""
        return b"".join(self._tail)

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        while data := self.proc.stderr.read1(1024):
            self._tail.append(data)

    def _feed(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass  # git stopped reading (it failed, or was killed): its status says why

    def _watchdog(self, timeout: float, watch: Callable[[], str | None] | None) -> None:
        deadline = time.monotonic() + timeout
        while not self._done.wait(min(0.25, timeout) if watch else timeout):
            reason = watch() if watch else None
            if reason is None and time.monotonic() >= deadline:
                reason = f"git {self.name} timed out after {timeout:.0f} s"
            if reason:
                self.stopped = reason
                _kill(self.proc)
                return

    def close(self, check: bool = True) -> None:
        """End the process: killed unless its output was read to the end (``finished``).
        ReviewError if the watchdog stopped it, or (``check``) if git failed."""
        if not self.finished:
            _kill(self.proc)
        _reap(self.proc)
        self._done.set()
        for thread in self._threads:
            thread.join()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except BrokenPipeError:
                    pass
        if self.stopped:
            raise ReviewError(self.stopped, EXIT_CLONE)
        if check and self.finished and self.proc.returncode != 0:
            if out_of_memory(self.stderr):
                raise ReviewError(f"git {self.name} ran out of memory: {memory_cap()}", EXIT_CLONE)
            raise ReviewError(f"git {self.name} failed: {last_line(self.stderr)}", EXIT_CLONE)


@contextlib.contextmanager
def stream(cmd: list[str], env: dict[str, str], name: str, **how: Any) -> Iterator[Stream]:
    """Run ``cmd`` (``git <name>``; ``how`` as for :class:`Stream`) and yield it, closed
    on leaving: killed if it was not read to its end, ReviewError if git failed."""
    running = Stream(cmd, env, name, **how)
    try:
        yield running
    except BaseException:
        running.finished = False
        running.close(check=False)
        raise
    running.close()


def run(
    cmd: list[str], env: dict[str, str], name: str, *, max_output: int = MAX_GIT_OUTPUT, **how: Any
) -> Result:
    """Run ``cmd`` (``git <name>``; ``how`` as for :class:`Stream`) to its end and return
    what it printed; never raises for git's exit status.

    ReviewError(EXIT_CLONE) when it cannot start, prints more than ``max_output``
    bytes, or its watchdog stops it (timeout, ``watch``).
    """
    running = Stream(cmd, env, name, **how)
    out = bytearray()
    try:
        while data := running.read1(_CHUNK):
            out += data
            if len(out) > max_output:
                raise ReviewError(
                    f"git {name} printed more than {max_output // MiB} MiB", EXIT_CLONE
                )
    except BaseException:
        running.finished = False
        running.close(check=False)
        raise
    running.close(check=False)
    return Result(running.proc.returncode, bytes(out), running.stderr)
