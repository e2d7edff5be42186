"""Where the cache root is, and the one ownership rule every cache level must pass.

The zipapp's bootstrap imports this module from the zip before anything else, to
find the launcher's cached code, hold it in use and import from it (prefer): keep
it tiny and dependent on os, stat, sys and fcntl only.
"""

from __future__ import annotations

import os
import stat
import sys

APP = "auto-review"
LAYOUT = "v1"
MARKER = ".complete"
CODE = "code"
CODE_ARCHIVE = "launcher.zip"  # inside a code dir: the launcher with unchecked-hash bytecode
USE_LOCK = ".use.lock"

held_code: list[int] = []  # use-lock fds of the code dirs this process imports from


def _xdg(var: str, fallback: str) -> str:
    value = os.environ.get(var, "").strip()
    if value and os.path.isabs(value):
        return value
    return os.path.join(os.path.expanduser("~"), fallback)


def default_cache_root() -> str:
    """platformdirs' Linux user cache dir for auto-review ($XDG_CACHE_HOME or ~/.cache).

    Computed here rather than by importing platformdirs (+26 ms from bytecode) because
    this runs on every warm start; a test asserts it equals platformdirs.user_cache_dir.
    """
    return os.path.join(_xdg("XDG_CACHE_HOME", ".cache"), APP)


def default_state_dir() -> str:
    """platformdirs' Linux user state dir for auto-review ($XDG_STATE_HOME or ~/.local/state)."""
    return os.path.join(_xdg("XDG_STATE_HOME", ".local/state"), APP)


def cache_root() -> str:
    """AUTO_REVIEW_CACHE_DIR made absolute (the runtime resolves paths against its own
    cwd), else the user cache dir."""
    given = os.environ.get("AUTO_REVIEW_CACHE_DIR", "").strip()
    return os.path.abspath(given) if given else default_cache_root()


def owned_dir_problem(st: os.stat_result) -> str | None:
    """Why an lstat result is not a cache level we may trust, or None if it is.

    A level must be a real directory (not a symlink), owned by the effective uid, and
    not writable by group or others: anyone else who can write a level can replace
    what is below it.
    """
    if stat.S_ISLNK(st.st_mode):
        return "is a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
    if st.st_mode & 0o022:
        return f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


_safe_ancestors: set[str] = set()  # roots whose ancestors passed (the bootstrap checks first)


def ancestor_problem(path: str) -> str | None:
    """Why someone other than us or root could replace `path` through one of its
    ancestors (/ down to its parent), or None. As OpenSSH's StrictModes: each must be
    owned by root or us and not writable by others unless sticky; group-writable only
    when the group is our own primary group (the user-private-group scheme)."""
    if path in _safe_ancestors:
        return None
    uid, gid = os.geteuid(), os.getegid()
    parts = os.path.abspath(path).split(os.sep)[1:-1]
    current = os.sep
    for part in ["", *parts]:
        current = os.path.join(current, part) if part else current
        try:
            st = os.stat(current)  # symlinked ancestors are judged by what they name
        except OSError:
            return None  # not there yet: creating it reports the problem
        sticky = st.st_mode & stat.S_ISVTX
        if st.st_uid not in (0, uid):
            return f"{current} is owned by uid {st.st_uid}"
        if not sticky and (st.st_mode & 0o002 or (st.st_mode & 0o020 and st.st_gid != gid)):
            return f"{current} is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
    _safe_ancestors.add(path)
    return None


_bytecode: list[bool] = []  # has_bytecode()'s answer, once per process


def has_bytecode() -> bool:
    """Whether the single file carries the launcher's bytecode for this interpreter
    (build.py compiles it with the build host's python3 and stores it uncompressed):
    imports from the zip then neither compile nor inflate, and no code dir is made.
    Here, not in launcher.embedded: the bootstrap asks before it chooses where the
    launcher's modules come from, and this module is imported from the zip anyway."""
    if not _bytecode:
        loader = getattr(sys.modules.get("__main__"), "__loader__", None)
        try:
            head = loader.get_data("launcher/__init__.pyc")[:4]  # type: ignore[union-attr]
        except (OSError, AttributeError):
            head = b""
        import _frozen_importlib_external  # loaded at every start: the import system's own

        _bytecode.append(head == _frozen_importlib_external.MAGIC_NUMBER)
    return _bytecode[0]


def code_levels(code_id: str) -> list[str]:
    """The cache levels down to the launcher's cached code, root first (the bootstrap
    checks each with owned_dir_problem before importing from the last)."""
    root = cache_root()
    base = os.path.join(root, LAYOUT)
    code = os.path.join(base, CODE)
    return [root, base, code, os.path.join(code, code_id)]


def hold_code(code: str) -> bool:
    """Hold `code`'s use lock shared, before anything is imported from it: `cache clear`
    removes a code dir while it holds that lock exclusive. Without waiting (busy: the
    zip stays in charge), never through a symlink, only a regular file still at its path
    (launcher.cache.locks's rules). True if held and `code` is still published."""
    import fcntl  # loaded on the warm path anyway (launcher.cache.locks)

    path = code + USE_LOCK
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_CREAT
    try:
        fd = os.open(path, flags, 0o600)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            if os.lstat(path).st_ino == st.st_ino and os.path.exists(os.path.join(code, MARKER)):
                held_code.append(fd)
                return True
    except OSError:
        pass
    os.close(fd)
    return False


def prefer(code: str) -> None:
    """Import the launcher's modules not loaded yet from `code`, then from the zip: every
    launcher package imported so far (more than launcher and launcher.cache when a run
    that started from the zip publishes its code) looks in the code's archive first."""
    archive = os.path.join(code, CODE_ARCHIVE)
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] == "launcher" and hasattr(module, "__path__"):
            module.__path__.insert(0, os.path.join(archive, *name.split(".")))


def forget(code: str) -> None:
    """Undo prefer(): the code dir went away before we held it."""
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] == "launcher" and hasattr(module, "__path__"):
            module.__path__[:] = [p for p in module.__path__ if not p.startswith(code + os.sep)]
