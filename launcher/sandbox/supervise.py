"""Supervise the runtime for one run and mirror the gateway's exit status.

The launcher supervises instead of exec'ing: it forwards signals, mirrors the
exit code (128+N for a signal), and can tell "the sandbox could not start" (the
runtime logged an error) from "the gateway exited non-zero".

Without the user-mode network, one `runc run`. With it, podman's sequence:
`runc create`, slirp4netns attached to the container's namespace by its pid,
the host's addresses routed away, the serve port forwarded, `runc start`; the
launcher is the child subreaper that waits for the container's init.
"""

from __future__ import annotations

import os
import signal

from launcher.errors import SandboxFailed
from launcher.sandbox import hostlink, network, rundirs, usernet
from launcher.sandbox.runtime import Runtime

TYPE_CHECKING = False  # typing costs milliseconds on every warm start
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
             signal.SIGUSR1, signal.SIGUSR2)  # fmt: skip
PR_SET_CHILD_SUBREAPER = 36
DOCTOR = "run: auto-review doctor"


def supervise(
    runtime: Runtime, dirs: rundirs.RunDirs, run: rundirs.Run, link: hostlink.HostLink
) -> int:
    """`runc run`, with signals forwarded to it; returns the gateway's exit status."""
    pid = spawn(runtime, dirs, run, link, "run", *runtime.fd_options())
    link.close_read_ends()
    via = None
    if runtime.gvisor:
        # runsc does not pass a signal it gets on to the sandbox (it dies of it): ask it
        # to; before the container exists (or after), the runtime process gets it.
        def via(signo: int) -> None:
            if not dirs.kill(runtime, run.container_id, signo):
                _forward(pid, signo)

    with forwarding(pid, via):
        status = _wait(pid)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # the runtime itself died of a signal: its container may be orphaned
        dirs.delete(runtime, run.container_id)
        return 128 - code
    if code != 0:
        failure = run.runtime_error()
        if failure:
            raise SandboxFailed(f"the sandbox could not start: {failure}", diagnose(failure))
    return code


def supervise_with_network(
    runtime: Runtime,
    dirs: rundirs.RunDirs,
    run: rundirs.Run,
    link: hostlink.HostLink,
    slirp: str,
    rootless: bool,
    forward: tuple[str, int] | None,
) -> int:
    """create, attach slirp4netns, forward the port, start; wait for the container's init."""
    import ctypes

    # The container's init is runc create's child: as subreaper we inherit and reap it.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    pid_file = os.path.join(run.path, "init.pid")
    stack = None
    try:
        with exiting_on_signals():  # until start, a signal means: clean up and go
            created = spawn(runtime, dirs, run, link, "create", "--pid-file", pid_file,
                            *runtime.fd_options())  # fmt: skip
            code = os.waitstatus_to_exitcode(_wait(created))
            if code != 0:
                failure = run.runtime_error() or f"{runtime.name} create exited {code}"
                raise SandboxFailed(f"the sandbox could not start: {failure}", diagnose(failure))
            with open(pid_file) as fh:
                init = int(fh.read().strip())
            stack = usernet.UserNet.attach(
                slirp, init, rootless, link.lifeline_read, run.path, api=forward is not None
            )
            link.close_read_ends()
            if not network.host_loopback():
                usernet.block_addresses(init, rootless, usernet.host_addresses())
            if forward:
                stack.forward(*forward)
            started = spawn(runtime, dirs, run, None, "start")
            code = os.waitstatus_to_exitcode(_wait(started))
            if code != 0:
                failure = run.runtime_error() or f"{runtime.name} start exited {code}"
                raise SandboxFailed(f"the sandbox could not start: {failure}", DOCTOR)
        with forwarding(init):
            status = _wait(init)
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code
    finally:
        link.cut()
        if stack:
            stack.stop()
        dirs.delete(runtime, run.container_id)


class exiting_on_signals:
    """While the block runs, a forwarded signal raises SystemExit(128+N), so `finally`
    clauses delete what was created so far."""

    def __enter__(self) -> None:
        self.previous = {sig: signal.signal(sig, _exit_on) for sig in FORWARDED}

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _exit_on(signo: int, _frame: object) -> None:
    raise SystemExit(128 + signo)


def spawn(
    runtime: Runtime,
    dirs: rundirs.RunDirs,
    run: rundirs.Run,
    link: hostlink.HostLink | None,
    verb: str,
    *options: str,
) -> int:
    """Start `<runtime> <verb>` for this run; the link's read ends become its fds 3 and 4."""
    argv = runtime.command("--root", dirs.state_root, *runtime.log_args(run.log), verb)
    if verb != "start":
        argv += ["--bundle", run.path]
    argv += [*options, run.container_id]
    env = {k: v for k, v in os.environ.items() if k not in ("LISTEN_FDS", "NOTIFY_SOCKET")}
    env = {k: v for k, v in env.items() if k not in hostlink.SECRET_NAMES}
    try:
        actions = link.file_actions() if link else []
        return os.posix_spawn(runtime.path, argv, env, file_actions=actions)
    except OSError as exc:
        raise SandboxFailed(f"cannot start {runtime.path}: {exc.strerror}", DOCTOR) from None


class forwarding:
    """Forward the signals in FORWARDED to `pid` while the block runs (or hand each to
    `via`, for a runtime that does not pass signals on itself)."""

    def __init__(self, pid: int, via: Callable[[int], None] | None = None) -> None:
        self.pid = pid
        self.via = via
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> forwarding:
        forward_sigint = not os.isatty(0)
        for sig in FORWARDED:
            if sig == signal.SIGINT and not forward_sigint:
                # The terminal already sends Ctrl-C to the whole process group, runtime included.
                self.previous[sig] = signal.signal(sig, signal.SIG_IGN)
                continue
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signo: int, _frame: object) -> None:
        if self.via is not None:
            self.via(signo)
        else:
            _forward(self.pid, signo)

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _forward(pid: int, signo: int) -> None:
    try:
        os.kill(pid, signo)
    except ProcessLookupError:
        pass


def _wait(pid: int) -> int:
    while True:
        try:
            _pid, status = os.waitpid(pid, 0)
            return status
        except ChildProcessError:
            return 0
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue


def diagnose(message: str) -> str:
    """The fix for the runtime errors users actually meet."""
    text = message.lower()
    if "hybrid mode not supported" in text or "cgroups in hybrid" in text:
        return "this host's cgroup layout needs runc: AUTO_REVIEW_RUNTIME=runc"
    if "user namespace" in text or "newuidmap" in text or "uid_map" in text:
        return "enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)"
    if "permission denied" in text and "exec" in text:
        return "the cache may be on a noexec filesystem: set AUTO_REVIEW_CACHE_DIR elsewhere"
    return DOCTOR
