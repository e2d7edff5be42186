"""The gateway's end of the launcher's two fds (see the launcher's hostlink module).

``attach()`` runs before any command: it reads the secrets pipe once
(``AUTO_REVIEW_SECRETS_FD``) into ``os.environ`` and closes it, and watches the
lifeline (``AUTO_REVIEW_LIFELINE_FD``) from a daemon thread: EOF means the
launcher is gone, and the gateway exits at once, so nothing outlives it. As
PID 1 of the container, its exit ends every process inside. Values put into
``os.environ`` here never show in ``/proc/1/environ`` (the exec-time
environment), and git children get an environment built from scratch.

Once the secrets are in memory the gateway makes itself non-dumpable
(``prctl(PR_SET_DUMPABLE, 0)``): another process of the same uid (git, code of a
hostile repository) can then neither ptrace it nor open its ``/proc/<pid>/mem``
or ``environ``. That also hides ``/proc/1/environ`` from PID 1 itself, so the
exec-time environment is kept first (``EXEC_ENVIRON``) for ``check`` to inspect.
"""

import os
import threading

SECRETS_MAX = 1 << 20
LIFELINE_EXIT = 129  # 128 + SIGHUP: the other end hung up
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
# /proc/self/environ as it was before the process became non-dumpable (PID 1 only).
EXEC_ENVIRON: bytes | None = None
# Variables whose values are credentials (the launcher sends exactly these by pipe).
SECRET_NAMES = (
    "WEBHOOK_SECRET",
    "AR_FORGEJO_TOKEN",
    "AR_CI_REVIEW_TOKEN",
    "LLM_API_KEY",
    "GITHUB_TOKEN",
    "GITHUB_APP_PRIVATE_KEY",  # the content of the host's GITHUB_APP_PRIVATE_KEY_FILE
    "AR_QUEUE_URL",  # postgresql://USER:PASSWORD@...: the whole URL, for its password
)


def _fd_from(name: str) -> int | None:
    value = os.environ.pop(name, "")
    return int(value) if value.isdigit() else None


def read_secrets(fd: int) -> dict[str, str]:
    """NAME=VALUE records (NUL-separated) from ``fd``, read to EOF and closed."""
    chunks, size = [], 0
    try:
        while size <= SECRETS_MAX:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    out = {}
    for record in b"".join(chunks).split(b"\0"):
        name, sep, value = record.partition(b"=")
        if sep and name:
            out[os.fsdecode(name)] = os.fsdecode(value)
    return out


def read_secrets_until_end(fd: int) -> dict[str, str]:
    """The records from ``fd`` up to the empty one that ends them, leaving ``fd`` open:
    the launcher's single stdin pipe for runtimes without fd passing (gVisor), which
    then stays open as the lifeline."""
    data = b""
    while not (data == b"\0" or data.endswith(b"\0\0")) and len(data) <= SECRETS_MAX:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    out = {}
    for record in data.split(b"\0"):
        name, sep, value = record.partition(b"=")
        if sep and name:
            out[os.fsdecode(name)] = os.fsdecode(value)
    return out


def _watch(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 1):
                break
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
        except OSError:
            break
    try:
        os.write(2, b"auto-review: the launcher is gone; the gateway exits\n")
    except OSError:
        # stderr's reader may be gone with the launcher (a group kill takes the runtime
        # that relays it too): EPIPE must not end this thread before the exit below
        pass
    os._exit(LIFELINE_EXIT)


def _prctl(option: int, value: int) -> int:
    import ctypes  # only here: the few commands without attach() never pay for it

    return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def dumpable() -> int:
    """prctl(PR_GET_DUMPABLE): 0 once attach() has run, -1 where prctl is missing."""
    return _prctl(PR_GET_DUMPABLE, 0)


def _keep_exec_environ() -> None:
    global EXEC_ENVIRON
    if os.getpid() == 1:
        try:
            with open("/proc/self/environ", "rb") as fh:
                EXEC_ENVIRON = fh.read()
        except OSError:
            pass


def attach() -> None:
    """Load the secrets and start watching the lifeline, if the launcher passed them;
    then make the process non-dumpable, before any thread or child exists."""
    _keep_exec_environ()
    secrets = _fd_from("AUTO_REVIEW_SECRETS_FD")
    lifeline = os.environ.get("AUTO_REVIEW_LIFELINE_FD", "")
    if secrets is not None:
        try:
            if lifeline == str(secrets):
                os.environ.update(read_secrets_until_end(secrets))
            else:
                os.environ.update(read_secrets(secrets))
        except OSError:
            pass  # no such fd: run without secrets; commands that need them say so
    _prctl(PR_SET_DUMPABLE, 0)  # secrets in memory: no same-uid process may read it
    if lifeline.isdigit():
        fd = int(lifeline)
        try:
            os.set_inheritable(fd, False)  # git and other children do not get it
        except OSError:
            return
        threading.Thread(target=_watch, args=(fd,), name="lifeline", daemon=True).start()
