"""`doctor`'s checks of the directories a run writes: the cache, the state dir and the
run dir, probed by creating a file (a read-only filesystem fails that, even as root)."""

from __future__ import annotations

import os

from launcher import embedded
from launcher.cache.paths import check_level
from launcher.cache.root import cache_root, default_state_dir
from launcher.doctor.finding import Finding
from launcher.errors import ExitCode, LauncherError


def check_runtime_dir() -> Finding:
    """Where run state goes, as launcher.sandbox.rundirs decides it (a dir it would pass
    over warns)."""
    from launcher.sandbox import rundirs

    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if not xdg:
        return Finding(
            "runtime-dir", True, "XDG_RUNTIME_DIR unset: run state goes in the cache", blocker=False
        )
    problem = rundirs.xdg_problem(xdg)
    if problem is None:
        return Finding("runtime-dir", True, f"{xdg}/auto-review")
    return Finding(
        "runtime-dir",
        False,
        f"XDG_RUNTIME_DIR={xdg} is {problem}: run state goes in the cache instead",
        f"chmod 0700 {xdg}"
        if "mode" in problem
        else "unset XDG_RUNTIME_DIR or point it at a 0700 directory of yours",
        blocker=False,
    )


def probe_write(directory: str) -> str | None:
    """Create and remove a file in `directory`; None, or why it failed."""
    path = os.path.join(directory, f".auto-review-doctor-{os.getpid()}")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(path)
    return None


def nearest_existing(path: str) -> str:
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_cache() -> list[Finding]:
    root = cache_root()
    out = []
    if os.path.lexists(root):
        try:
            check_level(root, "cache root", root=True)
            problem = probe_write(root)
            out.append(
                Finding(
                    "cache",
                    problem is None,
                    root if problem is None else f"{root} is not writable: {problem}",
                    "set AUTO_REVIEW_CACHE_DIR to a writable directory"
                    " (e.g. on a read-only home: /var/tmp/auto-review)",
                    exit_code=ExitCode.CACHE_UNUSABLE,
                )
            )
        except LauncherError as exc:
            out.append(Finding("cache", False, exc.message, exc.fix or "", exit_code=exc.exit_code))
    else:
        parent = nearest_existing(root)
        problem = probe_write(parent)
        out.append(
            Finding(
                "cache",
                problem is None,
                f"{root} (will be created)"
                if problem is None
                else f"cannot create {root}: {parent} is not writable ({problem})",
                "set AUTO_REVIEW_CACHE_DIR to a writable directory",
                exit_code=ExitCode.CACHE_UNUSABLE,
            )
        )
    st = os.statvfs(nearest_existing(root))
    noexec = bool(st.f_flag & os.ST_NOEXEC)
    out.append(
        Finding(
            "cache-exec",
            not noexec,
            "filesystem is noexec" if noexec else "filesystem allows exec",
            "set AUTO_REVIEW_CACHE_DIR to a filesystem mounted without noexec",
            exit_code=ExitCode.CACHE_UNUSABLE,
        )
    )
    free = st.f_bavail * st.f_frsize
    try:
        need = int(embedded.manifest()["unpacked_size"])
    except LauncherError:
        need = 0
    out.append(
        Finding(
            "cache-space",
            free > need,
            f"{free >> 20} MiB free, {need >> 20} MiB needed",
            "free space or set AUTO_REVIEW_CACHE_DIR",
            exit_code=ExitCode.NO_SPACE,
        )
    )
    return out


def check_state() -> Finding:
    """The state dir (or the dir it will be created in) takes a new file."""
    path = os.environ.get("AUTO_REVIEW_STATE_DIR") or default_state_dir()
    target = path if os.path.isdir(path) else nearest_existing(path)
    problem = probe_write(target)
    return Finding(
        "state",
        problem is None,
        path if problem is None else f"{path}: {target} is not writable ({problem})",
        "set AUTO_REVIEW_STATE_DIR to a writable directory",
        exit_code=ExitCode.CACHE_UNUSABLE,
    )
