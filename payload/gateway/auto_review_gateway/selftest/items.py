"""The sandbox self-test items: each probe checks one property and says what it saw.

A probe returns ``(ok, detail)``. Paths are fixed to where the sandbox puts
things; only the state dir and the CA bundle follow the environment, through
the variables the launcher already sets.
"""

import errno
import os
import ssl
import subprocess
import time
from collections.abc import Callable

from auto_review_gateway.selftest import boundary, syscalls

Outcome = tuple[bool, str]

DEFAULT_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"
DEFAULT_STATE_DIR = "/var/lib/auto-review"
DEFAULT_PATH = "/usr/bin:/bin"
READ_ONLY_DIRS = ("/usr", "/etc")
SHELLS = (
    "sh",
    "bash",
    "dash",
    "ash",
    "zsh",
    "ksh",
    "mksh",
    "csh",
    "tcsh",
    "fish",
    "busybox",
    "toybox",
)
SYSTEM_BIN_DIRS = ("/bin", "/usr/bin", "/sbin", "/usr/sbin", "/usr/local/bin")
UNSHARE_REFUSALS = (errno.EPERM, errno.EINVAL, errno.ENOSPC, errno.ENOSYS)
GIT_TIMEOUT_SECONDS = 30
INITIAL_USER_NS_MAP = [("0", "0", "4294967295")]


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", DEFAULT_PATH), "LC_ALL": "C"}
    return subprocess.run(
        ["git", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_SECONDS,
        check=False,
    )


def git() -> Outcome:
    """git runs; the detail is its version."""
    try:
        result = _git("--version")
    except FileNotFoundError:
        return False, "git not found on PATH"
    output = result.stdout.strip()
    if result.returncode != 0:
        return False, f"git --version exited {result.returncode}: {result.stderr.strip()}"
    return output.startswith("git version "), output


def ca_bundle() -> Outcome:
    """The CA bundle loads into Python's ssl and holds at least one CA certificate."""
    cafile = os.environ.get("SSL_CERT_FILE") or DEFAULT_CA_FILE
    try:
        context = ssl.create_default_context(cafile=cafile)
    except OSError as exc:  # ssl.SSLError included
        return False, f"{cafile}: {exc}"
    count = context.cert_store_stats()["x509_ca"]
    return count > 0, f"{count} CA certificates from {cafile}"


def git_https() -> Outcome:
    """git's HTTPS transport helper is installed and executable."""
    try:
        result = _git("--exec-path")
    except FileNotFoundError:
        return False, "git not found on PATH"
    helper = os.path.join(result.stdout.strip(), "git-remote-https")
    if result.returncode == 0 and os.path.isfile(helper) and os.access(helper, os.X_OK):
        return True, helper
    return False, f"{helper} is missing or not executable"


def _scratch_path(directory: str) -> str:
    return os.path.join(directory, f".auto-review-check-{os.getpid()}-{time.monotonic_ns()}")


def _create_file(path: str) -> int:
    """Create ``path``, write to it and remove it again; 0 or the errno that stopped it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        return exc.errno
    try:
        os.write(fd, b"auto-review check\n")
    except OSError as exc:
        return exc.errno
    finally:
        os.close(fd)
        os.unlink(path)
    return 0


def _writable(directory: str) -> Outcome:
    code = _create_file(_scratch_path(directory))
    if code:
        return False, f"{directory}: {syscalls.errno_name(code)}"
    return True, f"{directory}: created, wrote and removed a file"


def tmp_writable() -> Outcome:
    """/tmp takes a new file."""
    return _writable("/tmp")


def state_writable() -> Outcome:
    """The state dir takes a new file."""
    return _writable(os.environ.get("AUTO_REVIEW_STATE_DIR_INSIDE") or DEFAULT_STATE_DIR)


def _mounted_read_only(directory: str) -> bool:
    """statvfs's ST_RDONLY, or the "ro" option of the mount holding `directory` in
    /proc/self/mountinfo (gVisor's statvfs does not report the flag)."""
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
        return True
    best, options = "", []
    with open("/proc/self/mountinfo", encoding="utf-8") as lines:
        for line in lines:
            fields = line.split()
            point = fields[4]
            inside = directory == point or directory.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, options = point, fields[5].split(",")
    return "ro" in options


def rootfs_readonly() -> Outcome:
    """Creating a file under /usr and /etc fails with EROFS; EACCES counts only where the
    filesystem is also mounted read-only (gVisor checks permissions before the mount flag).
    """
    seen = []
    for directory in READ_ONLY_DIRS:
        code = _create_file(_scratch_path(directory))
        ro = code == errno.EACCES and _mounted_read_only(directory)
        seen.append((directory, code, ro))
    ok = all(code == errno.EROFS or ro for _, code, ro in seen)
    detail = ", ".join(
        f"{directory}: {syscalls.errno_name(code) if code else 'writable'}"
        + (" on a read-only mount" if ro else "")
        for directory, code, ro in seen
    )
    return ok, detail


def no_shell() -> Outcome:
    """No shell binary exists in the system bin dirs or on PATH."""
    dirs = [*SYSTEM_BIN_DIRS, *os.environ.get("PATH", "").split(os.pathsep)]
    searched: set[str] = set()
    found = []
    for directory in filter(None, dirs):
        real = os.path.realpath(directory)
        if real in searched:
            continue
        searched.add(real)
        found += [
            path
            for path in (os.path.join(directory, name) for name in SHELLS)
            if os.path.lexists(path)
        ]
    if found:
        return False, "found " + " ".join(found)
    return True, f"no shell in {len(searched)} directories"


def _uid_map() -> list[tuple[str, ...]] | None:
    try:
        with open("/proc/self/uid_map", encoding="ascii") as lines:
            return [tuple(line.split()) for line in lines if line.strip()]
    except OSError:
        return None


def uid() -> Outcome:
    """Not root, or root only inside a user namespace that is not the initial one."""
    ids = f"uid={os.getuid()} gid={os.getgid()}"
    if os.getuid() != 0:
        return True, ids
    uid_map = _uid_map()
    if uid_map is None:
        return False, f"{ids}, /proc/self/uid_map unreadable"
    if uid_map == INITIAL_USER_NS_MAP:
        return False, f"{ids} in the initial user namespace"
    return True, f"{ids} in a user namespace (uid_map {'; '.join(map(' '.join, uid_map))})"


def _proc_status() -> dict[str, str]:
    with open("/proc/self/status", encoding="utf-8") as lines:
        return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def capabilities() -> Outcome:
    """The effective, permitted and ambient capability sets are empty: from
    /proc/self/status, and from capget(2) and prctl(PR_CAP_AMBIENT) where a line is
    missing (gVisor has no CapAmb); both must agree where both answer."""
    status = _proc_status()
    kernel = syscalls.capget()
    kernel_sets = {"CapEff": kernel["effective"], "CapPrm": kernel["permitted"],
                   "CapAmb": syscalls.ambient_caps()}  # fmt: skip
    shown = []
    ok = True
    for key, value in kernel_sets.items():
        line = status.get(key)
        if line is not None and int(line, 16) != value:
            return False, f"{key}: /proc/self/status says {line}, the kernel {value:016x}"
        ok = ok and value == 0
        shown.append(f"{key}={value:016x}" + ("" if line is not None else " (syscall)"))
    return ok, " ".join(shown)


def no_new_privs() -> Outcome:
    """The no_new_privs bit is set: prctl(PR_GET_NO_NEW_PRIVS), and /proc/self/status
    agrees where it has the line (gVisor does not)."""
    value = syscalls.no_new_privs()
    line = _proc_status().get("NoNewPrivs")
    if line is not None and line != str(value):
        return False, f"NoNewPrivs={line} but prctl says {value}"
    return value == 1, f"NoNewPrivs={value}" + ("" if line is not None else " (prctl)")


def unshare() -> Outcome:
    """unshare(CLONE_NEWUSER) is refused."""
    code = syscalls.in_child(lambda: syscalls.unshare(syscalls.CLONE_NEWUSER))
    if code == 0:
        return False, "unshare(CLONE_NEWUSER) succeeded"
    return code in UNSHARE_REFUSALS, f"refused: {syscalls.errno_name(code)}"


def _mount_tmpfs() -> int:
    return syscalls.mount("tmpfs", "/tmp", "tmpfs", 0)


def _mount_tmpfs_privately() -> int:
    code = syscalls.unshare(syscalls.CLONE_NEWNS)
    if code == 0:
        code = syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    return code or _mount_tmpfs()


def mount() -> Outcome:
    """mount(tmpfs on /tmp) is refused with EPERM."""
    # Where a mount namespace can be made (a bare host run as root), the mount
    # is tried only inside a private one, so it can never cover the real /tmp.
    if syscalls.in_child(lambda: syscalls.unshare(syscalls.CLONE_NEWNS)) == 0:
        code = syscalls.in_child(_mount_tmpfs_privately)
        outcome = syscalls.errno_name(code) if code else "succeeded"
        return False, f"unshare(CLONE_NEWNS) succeeded; tmpfs mount in it: {outcome}"
    code = syscalls.in_child(_mount_tmpfs)
    if code == 0:
        return False, "mount(tmpfs, /tmp) succeeded"
    return code == errno.EPERM, f"refused: {syscalls.errno_name(code)}"


def ptrace() -> Outcome:
    """ptrace(PTRACE_TRACEME) is refused with EPERM."""
    code = syscalls.in_child(syscalls.ptrace_traceme)
    if code == 0:
        return False, "ptrace(PTRACE_TRACEME) succeeded"
    return code == errno.EPERM, f"refused: {syscalls.errno_name(code)}"


ITEMS: tuple[tuple[str, Callable[[], Outcome]], ...] = (
    ("git", git),
    ("ca-bundle", ca_bundle),
    ("git-https", git_https),
    ("tmp-writable", tmp_writable),
    ("state-writable", state_writable),
    ("rootfs-readonly", rootfs_readonly),
    ("no-shell", no_shell),
    ("uid", uid),
    ("capabilities", capabilities),
    ("no-new-privs", no_new_privs),
    ("unshare", unshare),
    ("mount", mount),
    ("ptrace", ptrace),
    ("network", boundary.network),
    ("abstract-sockets", boundary.abstract_sockets),
    ("vsock", boundary.vsock),
    ("host-fds", boundary.host_fds),
    ("pid1-environ", boundary.pid1_environ),
    ("not-dumpable", boundary.not_dumpable),
    ("dev-tmpfs", boundary.dev_tmpfs),
    ("pids-limit", boundary.pids_limit),
)
