"""A delegated cgroup v2 subtree, where the host gives a rootless launcher one: the
sandbox's memory and pids then get a cgroup limit on the whole sandbox, as in root
mode, instead of the per-process rlimits.

Delegated means what systemd means by it (`Delegate=yes` on a service or scope, and
the user manager's own subtree): the cgroup directory and its `cgroup.procs` and
`cgroup.subtree_control` belong to our uid, and systemd marks it with the extended
attribute `user.delegate=1` (systemd's CGROUP_DELEGATION.md). We use a cgroup only
when it carries that mark: a cgroup that merely happens to be writable may be managed
by someone else, and we never reorganise a tree that is not ours.

The kernel's "no internal processes" rule (cgroup-v2.rst) forbids enabling the memory
controller for the children of a cgroup that holds processes itself. So, as systemd's
document prescribes, the launcher first moves itself into a leaf of the delegated
cgroup (LEAF), enables memory and pids for the subtree, and the runtime creates the
sandbox's own cgroup beside it (config.json's `linux.cgroupsPath`). Under systemd's
`DelegateSubgroup=` the launcher already starts in such a leaf, and the delegated
cgroup is its parent.
"""

from __future__ import annotations

import errno
import os

ROOT = "/sys/fs/cgroup"
LEAF = "auto-review.launcher"
CONTROLLERS = ("memory", "pids")


class Delegation:
    """A delegated cgroup found for this process: `base` is its path in the hierarchy
    ("/system.slice/x.service"); `inside` whether we sit in it (not in a leaf yet)."""

    __slots__ = ("base", "inside")

    def __init__(self, base: str, inside: bool) -> None:
        self.base, self.inside = base, inside

    def directory(self, root: str = ROOT) -> str:
        return root + self.base


def own_cgroup(proc_file: str = "/proc/self/cgroup") -> str | None:
    """This process's cgroup on the unified hierarchy ("0::/path"), or None."""
    try:
        with open(proc_file, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("0::"):
                    path = line[3:].rstrip("\n")
                    # "/../x": our cgroup lies outside our cgroup namespace's root, so
                    # the path is not one under ROOT (and ROOT + path would leave it)
                    parts = path.split("/")[1:]
                    ok = path.startswith("/") and "." not in parts and ".." not in parts
                    return path if ok else None
    except OSError:
        return None
    return None


def is_delegated(directory: str) -> bool:
    """Whether `directory` is a cgroup delegated to us: marked by its manager, and ours."""
    try:
        mark = os.getxattr(directory, "user.delegate")
        st = os.stat(directory)
    except OSError:
        return False
    return mark.strip() == b"1" and st.st_uid == os.geteuid()


def find(root: str = ROOT, proc_file: str = "/proc/self/cgroup") -> Delegation | None:
    """The delegated cgroup this process may use, or None (no cgroup v2, not delegated)."""
    if not os.path.exists(os.path.join(root, "cgroup.controllers")):
        return None  # v1 or hybrid: the unified hierarchy is not at ROOT
    own = own_cgroup(proc_file)
    if own is None or own == "/":
        return None
    if is_delegated(root + own):
        return Delegation(own, inside=True)
    parent = os.path.dirname(own)
    if parent != "/" and is_delegated(root + parent):  # our leaf, or DelegateSubgroup=
        return Delegation(parent, inside=False)
    return None


def missing_controllers(found: Delegation, root: str = ROOT) -> list[str]:
    """Which of CONTROLLERS the delegated cgroup cannot hand to its children."""
    try:
        with open(os.path.join(found.directory(root), "cgroup.controllers")) as fh:
            available = fh.read().split()
    except OSError:
        return list(CONTROLLERS)
    return [c for c in CONTROLLERS if c not in available]


def obstacle(found: Delegation, root: str = ROOT) -> str | None:
    """Why prepare() would fail here, found by looking only (for doctor), or None."""
    missing = missing_controllers(found, root)
    if missing:
        return f"{found.base} has no {' or '.join(missing)} controller to delegate"
    try:
        with open(os.path.join(found.directory(root), "cgroup.procs")) as fh:
            others = [pid for pid in fh.read().split() if pid != str(os.getpid())]
    except OSError as exc:
        return f"cannot read {found.base}/cgroup.procs: {exc.strerror}"
    if others:
        return f"{found.base} holds other processes, so its children get no controllers"
    # what prepare() and the runtime write: moving a process needs write access to the
    # common ancestor's cgroup.procs too (cgroup-v2.rst, "Delegation Containment")
    files = ["cgroup.procs", "cgroup.subtree_control"]
    if found.inside and os.path.isdir(os.path.join(found.directory(root), LEAF)):
        files.append(f"{LEAF}/cgroup.procs")  # ours from an earlier run, or someone else's
    for name in files:
        if not os.access(os.path.join(found.directory(root), name), os.W_OK):
            return f"{found.base}/{name} is not ours to write"
    return None


class NotUsable(Exception):
    """The delegated cgroup cannot take the sandbox: the message says why (`errno`: the
    failed write's, if one failed)."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


def prepare(found: Delegation, name: str, root: str = ROOT) -> str:
    """Make the delegated cgroup ready for a sandbox cgroup called `name` and return
    that cgroup's path for config.json. Raises NotUsable (nothing is left changed but
    our own move into the leaf, which is harmless)."""
    missing = missing_controllers(found, root)
    if missing:
        raise NotUsable(f"{found.base} has no {' or '.join(missing)} controller to delegate")
    if name == LEAF:  # AUTO_REVIEW_CONTAINER_ID may name it: the sandbox would join us
        raise NotUsable(f"the container id {name} is the launcher's own cgroup")
    base = found.directory(root)
    enter_leaf(found, root)
    control = os.path.join(base, "cgroup.subtree_control")
    try:
        with open(control) as fh:
            enabled = fh.read().split()
    except OSError as exc:  # the cgroup went away since find()
        raise NotUsable(f"cannot read {control}: {exc.strerror}") from None
    wanted = [f"+{c}" for c in CONTROLLERS if c not in enabled]
    if wanted:
        try:
            _write(control, " ".join(wanted))
        except NotUsable as exc:
            if exc.errno == errno.EBUSY:  # processes other than ours sit in the base
                raise NotUsable(
                    f"{found.base} holds other processes, so its children get no controllers"
                ) from None
            raise
    return f"{found.base}/{name}"


def enter_leaf(found: Delegation, root: str = ROOT) -> None:
    """Move this process into the delegated cgroup's leaf LEAF, if it sits in the
    delegated cgroup itself (NotUsable when it cannot). Also for doctor, before it
    starts its own sandbox: that child must not find doctor beside it in the base."""
    if not found.inside:
        return
    leaf = os.path.join(found.directory(root), LEAF)
    try:
        os.mkdir(leaf, 0o755)
    except FileExistsError:
        pass
    except OSError as exc:
        raise NotUsable(f"cannot make {found.base}/{LEAF}: {exc.strerror}") from None
    _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
    found.inside = False


def _write(path: str, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        reason = "busy" if exc.errno == errno.EBUSY else exc.strerror
        raise NotUsable(f"cannot write {path}: {reason}", exc.errno) from None
