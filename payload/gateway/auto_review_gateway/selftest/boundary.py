"""Self-test items for the sandbox boundary: the network namespace, the fds from the
host, the secrets, /dev and the process limit. Each returns ``(ok, detail)``."""

import errno
import os
import resource
import socket
import stat

from auto_review_gateway.core import hostlink
from auto_review_gateway.selftest import syscalls

Outcome = tuple[bool, str]

# Network interfaces of the sandbox's own namespace: loopback, and slirp4netns's tap.
SANDBOX_INTERFACES = {"lo", "tap0"}
AF_VSOCK = 40
# What runc puts in a /dev tmpfs of its own (devices, symlinks and mount points).
STANDARD_DEV = {"null", "zero", "full", "random", "urandom", "tty", "console", "ptmx",
                "pts", "shm", "mqueue", "fd", "stdin", "stdout", "stderr", "core"}  # fmt: skip
# gVisor's /dev also holds the Sentry's own emulated fuse and net/tun (no host node).
GVISOR_DEV = {"fuse", "net"}
PIDS_MAX_FILES = ("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max")
NPROC_MAX = 4096  # RLIMIT_NPROC at most this counts as a limit (the launcher sets 1024)


def network() -> Outcome:
    """A network namespace of its own: no interface but loopback and slirp4netns's tap."""
    with open("/proc/net/dev", encoding="ascii") as lines:
        names = {line.split(":", 1)[0].strip() for line in list(lines)[2:]}
    if os.environ.get("AUTO_REVIEW_NETWORK") == "host":
        return True, f"the host's network, as asked (AUTO_REVIEW_NETWORK=host): {len(names)} links"
    extra = sorted(names - SANDBOX_INTERFACES)
    if extra:
        return False, f"host interfaces visible: {' '.join(extra)}"
    return True, f"own namespace: {' '.join(sorted(names))}"


def abstract_sockets() -> Outcome:
    """No abstract unix socket of the host is visible (they are scoped by network namespace)."""
    if os.environ.get("AUTO_REVIEW_NETWORK") == "host":
        return True, "not checked with the host's network (AUTO_REVIEW_NETWORK=host)"
    with open("/proc/net/unix", encoding="utf-8", errors="replace") as lines:
        names = [f[-1] for f in (line.split() for line in list(lines)[1:]) if len(f) > 7]
    abstract = [n for n in names if n.startswith("@")]
    if abstract:
        return False, f"{len(abstract)} abstract sockets visible, e.g. {abstract[0]}"
    return True, f"no abstract sockets ({len(names)} unix sockets in the namespace)"


def vsock() -> Outcome:
    """socket(AF_VSOCK) is refused (on a VM it reaches the hypervisor)."""
    try:
        socket.socket(AF_VSOCK, socket.SOCK_STREAM).close()
    except OSError as exc:
        return exc.errno == errno.EPERM, f"refused: {syscalls.errno_name(exc.errno or 0)}"
    return False, "socket(AF_VSOCK) succeeded"


def host_fds() -> Outcome:
    """The lifeline (a read-only pipe) is the only fd from the host beyond stdio: no use lock."""
    lifeline = os.environ.get("AUTO_REVIEW_LIFELINE_FD", "")
    listing = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fds = {}
    try:
        for name in os.listdir(listing):
            try:
                fds[int(name)] = os.readlink(name, dir_fd=listing)
            except FileNotFoundError:  # listdir's own fd, closed already
                continue
    finally:
        os.close(listing)
    fds.pop(listing, None)
    others = {fd: target for fd, target in fds.items() if fd > 2 and str(fd) != lifeline}
    if any(target.endswith(".use.lock") for target in fds.values()):
        return False, "the cache use lock is open inside"
    if not lifeline and os.environ.get("AUTO_REVIEW_ISOLATION") == "bare" and not others:
        # The container image: no launcher, so no lifeline to watch, and nothing inherited.
        return True, "no launcher (container image): no fd beyond stdio"
    if not lifeline.isdigit() or int(lifeline) not in fds:
        return False, "no lifeline fd (AUTO_REVIEW_LIFELINE_FD)"
    if not stat.S_ISFIFO(os.fstat(int(lifeline)).st_mode):
        return False, f"the lifeline fd {lifeline} is not a pipe"
    if others:
        return False, "other fds open: " + ", ".join(f"{fd}->{t}" for fd, t in others.items())
    return True, f"lifeline on fd {lifeline} (a pipe); no other inherited fd"


def pid1_environ() -> Outcome:
    """PID 1's environment holds no secret variable (they came by pipe)."""
    if os.getpid() == 1 and hostlink.EXEC_ENVIRON is not None:
        items = hostlink.EXEC_ENVIRON.split(b"\0")  # read before PID 1 became non-dumpable
    else:
        with open("/proc/1/environ", "rb") as fh:
            items = fh.read().split(b"\0")
    names = {item.partition(b"=")[0].decode(errors="replace") for item in items}
    leaked = sorted(names & set(hostlink.SECRET_NAMES))
    if leaked:
        return False, f"in /proc/1/environ: {' '.join(leaked)}"
    return True, f"{len(names - {''})} variables, none of {', '.join(hostlink.SECRET_NAMES)}"


def not_dumpable() -> Outcome:
    """The gateway is not dumpable: no process of its uid can read its memory (secrets)."""
    value = hostlink.dumpable()
    if value == 0:
        return True, "prctl(PR_GET_DUMPABLE) = 0: /proc/<pid>/mem closed to its own uid"
    return False, f"prctl(PR_GET_DUMPABLE) = {value}: its memory is readable by its uid"


def dev_tmpfs() -> Outcome:
    """/dev is a tmpfs of its own holding only the standard nodes."""
    with open("/proc/self/mountinfo", encoding="utf-8") as lines:
        kinds = [line.split(" - ")[1].split()[0] for line in lines if line.split()[4] == "/dev"]
    if not kinds or kinds[-1] != "tmpfs":
        return False, f"/dev is {kinds[-1] if kinds else 'not a mount'}"
    gvisor = os.environ.get("AUTO_REVIEW_ISOLATION") == "runsc"  # set by the launcher only
    extra = sorted(set(os.listdir("/dev")) - STANDARD_DEV - (GVISOR_DEV if gvisor else set()))
    if extra:
        return False, f"unexpected in /dev: {' '.join(extra)}"
    note = " (and gVisor's emulated fuse, net)" if gvisor else ""
    return True, f"tmpfs with {len(os.listdir('/dev'))} standard entries{note}"


def pids_limit() -> Outcome:
    """The number of processes is capped (a cgroup pids limit, or RLIMIT_NPROC rootless)."""
    for path in PIDS_MAX_FILES:
        try:
            with open(path, encoding="ascii") as fh:
                value = fh.read().strip()
        except OSError:
            continue
        if value.isdigit():
            return True, f"cgroup {path} = {value}"
    soft, _hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if soft != resource.RLIM_INFINITY and soft <= NPROC_MAX:
        return True, f"RLIMIT_NPROC = {soft}"
    return False, f"no pids cgroup limit visible and RLIMIT_NPROC = {soft}"
