"""slirp4netns attached to a container's network namespace, and the host's own
addresses routed away inside it (see launcher.sandbox.network for the policy)."""

from __future__ import annotations

import os

from launcher.errors import SandboxFailed
from launcher.sandbox.network import INSTALL, host_loopback

GUEST_ADDR = "10.0.2.100"  # slirp4netns --configure's address for the container


class UserNet:
    """slirp4netns attached to a container's network namespace."""

    __slots__ = ("api", "pid")

    def __init__(self, pid: int, api: str) -> None:
        self.pid = pid
        self.api = api

    @classmethod
    def attach(
        cls,
        binary: str,
        target_pid: int,
        rootless: bool,
        exit_fd: int,
        run_dir: str,
        api: bool = False,
    ) -> UserNet:
        """Start slirp4netns for `target_pid`'s namespace; return once the tap is configured.

        It exits when `exit_fd` (a lifeline read end) sees EOF, i.e. with the launcher.
        `api`: open its API socket (needed to forward a port). A unix socket path has a
        107-byte limit that a deep run dir exceeds, so both sides name the socket through
        a directory fd they share: /proc/self/fd/N/slirp.sock.
        """
        ready_r, ready_w = os.pipe()
        dir_fd = os.open(run_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) if api else -1
        socket_path = f"/proc/self/fd/{dir_fd}/slirp.sock" if api else ""
        argv = [
            binary, "--configure", "--mtu=65520", f"--exit-fd={exit_fd}",
            f"--ready-fd={ready_w}", "--enable-seccomp",
        ]  # fmt: skip
        if api:
            argv.append(f"--api-socket={socket_path}")
        if not rootless:  # rootless, its sandbox fails on setegid(0) in runc's 1:1 namespace
            argv.append("--enable-sandbox")
        if not host_loopback():
            argv.append("--disable-host-loopback")
        if rootless:
            argv += [f"--userns-path=/proc/{target_pid}/ns/user", "--netns-type=path",
                     f"/proc/{target_pid}/ns/net", "tap0"]  # fmt: skip
        else:
            argv += [str(target_pid), "tap0"]
        os.set_inheritable(exit_fd, True)
        os.set_inheritable(ready_w, True)
        if api:
            os.set_inheritable(dir_fd, True)
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        log = os.path.join(run_dir, "slirp4netns.log")
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            actions = [
                (os.POSIX_SPAWN_DUP2, devnull, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ]
            pid = os.posix_spawn(binary, argv, {"PATH": os.defpath}, file_actions=actions,
                                 setsid=True)  # fmt: skip
        except OSError as exc:
            raise SandboxFailed(f"cannot start {binary}: {exc.strerror}", INSTALL) from None
        finally:
            os.set_inheritable(exit_fd, False)
            if api:
                os.set_inheritable(dir_fd, False)  # kept open: the launcher connects through it
            for fd in (ready_w, devnull, log_fd):
                os.close(fd)
        try:
            ready = os.read(ready_r, 1)
        finally:
            os.close(ready_r)
        if ready != b"1":
            with open(log, errors="replace") as fh:
                lines = [line.strip() for line in fh.read(65536).splitlines() if line.strip()]
            # its error comes first; a usage text it may print after it says nothing
            reason = " ".join(lines[:1] + [ln for ln in lines[1:3] if "usage" not in ln.lower()])
            reason = reason[:600]
            raise SandboxFailed(
                f"slirp4netns failed: {reason or 'no output'}", "run: auto-review doctor"
            )
        return cls(pid, socket_path)

    def forward(self, host_addr: str, port: int) -> None:
        """Forward host_addr:port (TCP) to the container's port."""
        import json
        import socket

        request = {
            "execute": "add_hostfwd",
            "arguments": {"proto": "tcp", "host_addr": host_addr, "host_port": port,
                          "guest_addr": GUEST_ADDR, "guest_port": port},
        }  # fmt: skip
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(self.api)
            sock.sendall(json.dumps(request).encode())
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        reply = json.loads(answer or b"{}")
        if "error" in reply or "return" not in reply:
            detail = reply.get("error", {}).get("desc", answer.decode(errors="replace"))
            raise SandboxFailed(
                f"cannot forward {host_addr}:{port} into the sandbox: {detail}",
                "is the port in use? pick another in AR_GATEWAY_BIND",
            )

    def stop(self) -> None:
        """Ask it to go (it also goes by itself when the lifeline closes) and reap it."""
        import signal

        try:
            os.kill(self.pid, signal.SIGTERM)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
RTM_NEWROUTE, NLMSG_ERROR = 24, 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_PROHIBIT, RTA_DST = 254, 4, 0, 8, 1


def host_addresses() -> list[str]:
    """This host's own IPv4 addresses outside 127/8 (the LOCAL entries of the FIB)."""
    out: list[str] = []
    try:
        with open("/proc/net/fib_trie", encoding="ascii") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return out
    for i in range(1, len(lines)):
        previous, line = lines[i - 1], lines[i]
        if line.strip() == "/32 host LOCAL" and "-- " in previous:
            addr = previous.rsplit("-- ", 1)[1].strip()
            if not addr.startswith("127.") and addr not in out:
                out.append(addr)
    return out


def block_addresses(target_pid: int, rootless: bool, addresses: list[str]) -> None:
    """Add a "prohibit" route for each address inside `target_pid`'s network namespace."""
    if not addresses:
        return
    import ctypes

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's exit status is the result
        code = 1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            for kind, flag in (("user", CLONE_NEWUSER), ("net", CLONE_NEWNET)):
                if kind == "user" and not rootless:
                    continue
                fd = os.open(f"/proc/{target_pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
                if libc.setns(fd, flag) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {kind}")
            _prohibit(addresses)
            code = 0
        except OSError as exc:
            os.write(2, f"auto-review: cannot route host addresses away: {exc}\n".encode())
        finally:
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SandboxFailed(
            "cannot make the host's addresses unreachable from the sandbox",
            "set AUTO_REVIEW_HOST_LOOPBACK=1 to allow them, or run: auto-review doctor",
        )


def _prohibit(addresses: list[str]) -> None:
    """RTM_NEWROUTE type prohibit, ADDR/32, main table, over rtnetlink; raises on a NACK."""
    import socket
    import struct

    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0) as sock:
        sock.bind((0, 0))
        for seq, addr in enumerate(addresses, start=1):
            rtmsg = struct.pack("BBBBBBBBI", socket.AF_INET, 32, 0, 0, RT_TABLE_MAIN,
                                RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_PROHIBIT, 0)  # fmt: skip
            body = rtmsg + struct.pack("HH", 8, RTA_DST) + socket.inet_aton(addr)
            flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
            sock.send(struct.pack("IHHII", 16 + len(body), RTM_NEWROUTE, flags, seq, 0) + body)
            reply = sock.recv(65536)
            _length, kind = struct.unpack_from("IH", reply)
            if kind == NLMSG_ERROR:
                (error,) = struct.unpack_from("i", reply, 16)
                if error:
                    raise OSError(-error, f"route prohibit {addr}: {os.strerror(-error)}")
