"""The host state dir the gateway writes (bound at /var/lib/auto-review): found,
created 0700 and given to whoever writes it, but never taken over from someone else.
"""

from __future__ import annotations

import os
import stat

from launcher.cache.root import default_state_dir
from launcher.errors import CacheUnusable

STATE_MARKER = ".auto-review-state"  # written into a state dir we create
MARKER_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def state_dir(uid: int, gid: int, sandbox_uid: int) -> str:
    """The host state dir: 0700, owned by `uid`, whoever writes it (the sandbox user as
    root, ourselves rootless or bare).

    Its owner or mode is changed only on a dir this call created, one `uid` owns
    already, or one holding our marker (created by us in another mode): never an
    existing dir of someone else's that AUTO_REVIEW_STATE_DIR happens to name.
    """
    path = os.path.abspath(os.environ.get("AUTO_REVIEW_STATE_DIR") or default_state_dir())
    fix = "set AUTO_REVIEW_STATE_DIR to a new path (it is created) or a directory you own"
    created = False
    try:
        parent = os.path.dirname(path)
        os.makedirs(parent, mode=0o700, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
            created = True
            os.close(os.open(os.path.join(path, STATE_MARKER), MARKER_FLAGS, 0o600))
        except FileExistsError:
            pass
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise CacheUnusable(
            f"cannot open the state directory {path}: {exc.strerror}", fix
        ) from None
    try:
        st = os.fstat(fd)
        if st.st_uid not in (os.geteuid(), uid, sandbox_uid):
            raise CacheUnusable(f"state directory {path} is not a directory of yours", fix)
        change = (st.st_uid, st.st_gid) != (uid, gid) or st.st_mode & 0o077
        if change and not (created or st.st_uid == uid or _has_marker(fd)):
            raise CacheUnusable(
                f"state directory {path} is owned by uid {st.st_uid} and was not"
                f" created by auto-review: not taking it over for uid {uid}",
                fix,
            )
        try:
            if st.st_mode & 0o077:
                os.fchmod(fd, 0o700)
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.fchown(fd, uid, gid)
        except OSError as exc:
            raise CacheUnusable(
                f"cannot give the state directory {path} to uid {uid}: {exc.strerror}", fix
            ) from None
    finally:
        os.close(fd)
    return path


def _has_marker(dir_fd: int) -> bool:
    """Whether the dir holds our marker, a regular file of this euid (not one planted)."""
    try:
        st = os.stat(STATE_MARKER, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
