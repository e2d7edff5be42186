"""User-mode networking for gVisor's runsc, which reads its network at boot.

runc and crun get slirp4netns attached between `create` and `start` (launcher.
supervise). runsc cannot: it builds its own network stack (netstack, in the Sentry)
from the interfaces of the namespace it is given when the sandbox boots, and it
refuses to create one itself as root. So the namespace comes first: a small holder
process unshares a network namespace, slirp4netns configures tap0 in it, the host's
addresses are routed away, the serve port is forwarded, and only then is `runsc run`
started with that namespace's path in config.json (as podman does with runsc). The
holder and slirp4netns exit with the launcher: both watch a pipe only it holds.
"""

from __future__ import annotations

import os

from launcher.errors import SandboxFailed
from launcher.sandbox import hostlink, network, rundirs, usernet
from launcher.sandbox.runtime import Runtime

CLONE_NEWNET = 0x40000000


class NetnsHolder:
    """A child process that owns a fresh network namespace until the launcher goes."""

    __slots__ = ("pid", "watch_read", "watch_write")

    def __init__(self) -> None:
        import ctypes

        self.watch_read, self.watch_write = hostlink.pipe()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child only holds the namespace
            code = 1
            try:
                os.close(ready_r)
                os.close(self.watch_write)
                if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
                os.write(ready_w, b"1")
                os.close(ready_w)
                while os.read(self.watch_read, 1):  # EOF: the launcher is gone
                    pass
                code = 0
            finally:
                os._exit(code)
        os.close(ready_w)
        self.pid = pid
        try:
            ready = os.read(ready_r, 1)
        finally:
            os.close(ready_r)
        if ready != b"1":
            self.stop()
            raise SandboxFailed(
                "cannot create a network namespace for runsc", "run auto-review as root"
            )

    @property
    def path(self) -> str:
        return f"/proc/{self.pid}/ns/net"

    def stop(self) -> None:
        """Close the pipe the holder watches and reap it."""
        for fd in (self.watch_write, self.watch_read):
            try:
                os.close(fd)
            except OSError:
                pass
        self.watch_write = self.watch_read = -1
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def prepare(
    holder: NetnsHolder, slirp: str, run: rundirs.Run, forward: tuple[str, int] | None
) -> usernet.UserNet:
    """slirp4netns on the holder's namespace, host addresses routed away, port forwarded."""
    stack = usernet.UserNet.attach(
        slirp, holder.pid, False, holder.watch_read, run.path, api=forward is not None
    )
    try:
        if not network.host_loopback():
            usernet.block_addresses(holder.pid, False, usernet.host_addresses())
        if forward:
            stack.forward(*forward)
    except BaseException:
        stack.stop()
        raise
    return stack


def supervise_gvisor_network(
    runtime: Runtime,
    dirs: rundirs.RunDirs,
    run: rundirs.Run,
    link: hostlink.HostLink,
    holder: NetnsHolder,
    stack: usernet.UserNet,
) -> int:
    """`runsc run` on the prepared namespace; the stack and holder go when it ends."""
    from launcher.sandbox.supervise import supervise

    try:
        return supervise(runtime, dirs, run, link)
    finally:
        stack.stop()
        holder.stop()
