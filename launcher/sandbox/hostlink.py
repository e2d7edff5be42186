"""The two fds the launcher hands the gateway, and nothing else of the host's.

- The lifeline (fd 3 inside): the read end of a pipe whose write end only the
  launcher holds. The gateway exits when it reads EOF, so it dies with the
  launcher, SIGKILL included. Nothing is ever written to it.
- The secrets (fd 4 inside): the read end of a pipe holding NAME=VALUE records
  (NUL-separated) of the secret variables, written and closed before the
  runtime starts. The gateway reads it once and closes it: secret values live
  in kernel pipe memory until then, never in config.json, the runtime's state
  or the environment of the container's PID 1.

The use lock is not among them: it stays with the launcher.
"""

from __future__ import annotations

import fcntl
import os

from launcher.errors import ConfigError

LIFELINE_FD = 3
SECRETS_FD = 4
STDIN_FD = 0  # both, for runtimes without fd passing (see HostLink)
FIRST_FREE_FD = 10  # our pipe ends live above the fds they are dup2'ed onto
PIPE_CAPACITY = 65536  # Linux default: the secrets must fit before anyone reads

# Variables whose values are credentials: passed through the secrets pipe only.
SECRET_NAMES = (
    "WEBHOOK_SECRET",
    "AR_FORGEJO_TOKEN",
    "AR_CI_REVIEW_TOKEN",
    "LLM_API_KEY",
    "GITHUB_TOKEN",
    "GITHUB_APP_PRIVATE_KEY",  # the content of the host's GITHUB_APP_PRIVATE_KEY_FILE
    "AR_QUEUE_URL",  # postgresql://USER:PASSWORD@...: the whole URL, for its password
)


def _high(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, FIRST_FREE_FD)
    os.close(fd)
    return high


def pipe() -> tuple[int, int]:
    """A close-on-exec pipe whose ends are above the fds the runtime passes in."""
    r, w = os.pipe()
    return _high(r), _high(w)


class HostLink:
    """The lifeline and secrets pipes of one run.

    For a runtime that cannot pass extra fds (runsc), `on_stdin`: one pipe on the
    container's stdin carries both, the secret records first, ended by an empty record
    (a lone NUL), then nothing until the launcher's end closes (the lifeline).
    """

    __slots__ = ("lifeline_read", "lifeline_write", "on_stdin", "secrets_read")

    def __init__(self, secrets: dict[str, str], on_stdin: bool = False) -> None:
        self.on_stdin = on_stdin
        self.lifeline_read, self.lifeline_write = pipe()
        if on_stdin:
            _write_all(self.lifeline_write, encode_secrets(secrets) + b"\0")
            self.secrets_read = -1
        else:
            self.secrets_read = write_secrets(secrets)

    def file_actions(self) -> list[tuple[int, int, int]]:
        """posix_spawn actions that put the read ends on fds 3 and 4 (or 0) of the runtime."""
        if self.on_stdin:
            return [(os.POSIX_SPAWN_DUP2, self.lifeline_read, STDIN_FD)]
        return [
            (os.POSIX_SPAWN_DUP2, self.lifeline_read, LIFELINE_FD),
            (os.POSIX_SPAWN_DUP2, self.secrets_read, SECRETS_FD),
        ]

    def close_read_ends(self) -> None:
        """Once the runtime holds them, our copies of the read ends go."""
        for fd in (self.lifeline_read, self.secrets_read):
            _close(fd)
        self.lifeline_read = self.secrets_read = -1

    def cut(self) -> None:
        """Close the lifeline: whatever still runs inside sees EOF and exits."""
        self.close_read_ends()
        _close(self.lifeline_write)
        self.lifeline_write = -1


def encode_secrets(secrets: dict[str, str]) -> bytes:
    """NAME=VALUE records, each NUL-terminated; refused if they would not fit the pipe."""
    data = b"".join(
        os.fsencode(name) + b"=" + os.fsencode(value) + b"\0" for name, value in secrets.items()
    )
    if b"\0" in b"".join(os.fsencode(v) for v in secrets.values()):
        raise ConfigError("a secret variable holds a NUL byte", "set it to a plain string")
    if len(data) + 1 > PIPE_CAPACITY:
        raise ConfigError(
            f"the secret variables hold {len(data)} bytes, more than {PIPE_CAPACITY}",
            f"keep {', '.join(SECRET_NAMES)} short",
        )
    return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_secrets(secrets: dict[str, str]) -> int:
    """A pipe holding `secrets`, write end closed; returns the read end."""
    data = encode_secrets(secrets)
    r, w = pipe()
    try:
        _write_all(w, data)
    finally:
        os.close(w)
    return r


def _close(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass
