"""The sandbox's network made before the container, for the runtimes that cannot have
slirp4netns attached between `create` and `start` (as runc gets it, launcher.supervise):

- gVisor's runsc reads its network at boot: it builds its own network stack (netstack,
  in the Sentry) from the interfaces of the namespace it is given when the sandbox
  boots, and refuses to create one itself as root.
- crun, rootless: its init in the created state is not dumpable (crun drops it before
  it waits for `start`), so `/proc/PID/ns/*` belong to root and slirp4netns, run as
  the user, cannot open them ("userns path doesn't exist").

So the namespace comes first: a small holder process unshares a network namespace
(rootless: a user namespace with it, mapping container root to our uid, as runc's
config would), slirp4netns configures tap0 in it, the host's addresses are routed
away, the serve port is forwarded, and only then is the container started with the
namespaces' paths in config.json (as podman does). The holder and slirp4netns exit
with the launcher: both watch a pipe only it holds.
"""

from __future__ import annotations

import os

from launcher.errors import SandboxFailed
from launcher.sandbox import hostlink, network, rundirs, usernet
from launcher.sandbox.runtime import Runtime

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000


def needs_network_first(runtime: Runtime, rootless: bool) -> bool:
    """Whether `runtime` gets its network before the container (see the module doc)."""
    return runtime.gvisor or (rootless and runtime.name == "crun")


def _map_self(uid: int, gid: int) -> None:
    """In a fresh user namespace: container root is `uid`/`gid` of the parent, and
    setgroups is denied (what an unprivileged gid_map needs; runc's config does so too)."""
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        fd = os.open(f"/proc/self/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


class NetnsHolder:
    """A child process that owns a fresh network namespace (and with `user`, the user
    namespace that owns it) until the launcher goes."""

    __slots__ = ("pid", "user", "watch_read", "watch_write")

    def __init__(self, user: bool = False) -> None:
        import ctypes

        self.user = user
        self.watch_read, self.watch_write = hostlink.pipe()
        ready_r, ready_w = os.pipe()
        uid, gid = os.getuid(), os.getgid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child only holds the namespace
            code = 1
            try:
                os.close(ready_r)
                os.close(self.watch_write)
                flags = CLONE_NEWNET | (CLONE_NEWUSER if user else 0)
                if ctypes.CDLL(None, use_errno=True).unshare(flags) != 0:
                    raise OSError(ctypes.get_errno(), "unshare")
                if user:
                    _map_self(uid, gid)
                os.write(ready_w, b"1")
                os.close(ready_w)
                while os.read(self.watch_read, 1):  # EOF: the launcher is gone
                    pass
                code = 0
            except OSError as exc:
                os.write(2, f"auto-review: cannot hold the sandbox's namespaces: {exc}\n".encode())
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
            how = "a user and network namespace" if user else "a network namespace"
            fix = "run: auto-review doctor" if user else "run auto-review as root"
            raise SandboxFailed(f"cannot create {how} for the sandbox", fix)

    @property
    def userns_path(self) -> str | None:
        """The user namespace to join (None: the runtime makes its own, if any)."""
        return f"/proc/{self.pid}/ns/user" if self.user else None

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
        slirp, holder.pid, holder.user, holder.watch_read, run.path, api=forward is not None
    )
    try:
        if not network.host_loopback():
            usernet.block_addresses(holder.pid, holder.user, usernet.host_addresses())
        if forward:
            stack.forward(*forward)
    except BaseException:
        stack.stop()
        raise
    return stack


def supervise_prepared(
    runtime: Runtime,
    dirs: rundirs.RunDirs,
    run: rundirs.Run,
    link: hostlink.HostLink,
    holder: NetnsHolder,
    stack: usernet.UserNet,
) -> int:
    """The container on the prepared namespace; the stack and holder go when it ends."""
    from launcher.sandbox.supervise import supervise

    try:
        return supervise(runtime, dirs, run, link)
    finally:
        stack.stop()
        holder.stop()
