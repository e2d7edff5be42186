"""Where the cache lives, what its paths are called, and whether its root is safe to use.

Imported on the warm path: only os and stat.
"""

from __future__ import annotations

import os
import stat

from launcher.errors import CacheUnusable

APP = "auto-review"
LAYOUT = "v1"
MARKER = ".complete"
CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by auto-review.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)


def _xdg(var: str, fallback: str) -> str:
    value = os.environ.get(var, "").strip()
    if value and os.path.isabs(value):
        return value
    return os.path.join(os.path.expanduser("~"), fallback)


def default_cache_root() -> str:
    """platformdirs' Linux user cache dir for auto-review ($XDG_CACHE_HOME or ~/.cache).

    Computed here rather than by importing platformdirs (several ms) because this
    runs on every warm start; tests assert it equals platformdirs.user_cache_dir.
    """
    return os.path.join(_xdg("XDG_CACHE_HOME", ".cache"), APP)


def default_state_dir() -> str:
    """platformdirs' Linux user state dir for auto-review ($XDG_STATE_HOME or ~/.local/state)."""
    return os.path.join(_xdg("XDG_STATE_HOME", ".local/state"), APP)


def cache_root() -> str:
    """AUTO_REVIEW_CACHE_DIR, else the user cache dir."""
    return os.environ.get("AUTO_REVIEW_CACHE_DIR") or default_cache_root()


class Layout:
    """Names of everything under <root>/v1."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.base = os.path.join(root, LAYOUT)
        self.bundles = os.path.join(self.base, "bundles")
        self.vendor = os.path.join(self.base, "vendor")
        self.pins = os.path.join(self.base, "pins")
        self.gc_lock = os.path.join(self.base, ".gc.lock")

    @staticmethod
    def dirname(digest: str) -> str:
        """'sha256:<hex>' -> 'sha256-<hex>'."""
        return digest.replace(":", "-", 1)

    def version_dir(self, digest: str) -> str:
        return os.path.join(self.bundles, self.dirname(digest))

    def rootfs(self, digest: str) -> str:
        return os.path.join(self.version_dir(digest), "rootfs")

    def marker(self, digest: str) -> str:
        return os.path.join(self.version_dir(digest), MARKER)

    def use_lock(self, digest: str) -> str:
        return self.version_dir(digest) + ".use.lock"

    def extract_lock(self, digest: str) -> str:
        return self.version_dir(digest) + ".extract.lock"


def check_owned_dir(path: str, what: str) -> None:
    """Refuse a directory that is a symlink, not ours, or group/other-writable."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise CacheUnusable(
            f"{what} {path} vanished", "check what else manages this directory"
        ) from None
    if stat.S_ISLNK(st.st_mode):
        raise CacheUnusable(
            f"{what} {path} is a symlink",
            f"point AUTO_REVIEW_CACHE_DIR at the real directory ({os.path.realpath(path)})",
        )
    if not stat.S_ISDIR(st.st_mode):
        raise CacheUnusable(f"{what} {path} is not a directory", "remove it or choose another")
    if st.st_uid != os.geteuid():
        raise CacheUnusable(
            f"{what} {path} is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})",
            "use a cache dir of your own: set AUTO_REVIEW_CACHE_DIR",
        )
    if st.st_mode & 0o022:
        raise CacheUnusable(
            f"{what} {path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})",
            f"run: chmod go-w {path}",
        )


def make_private_dir(path: str, what: str) -> None:
    """Create `path` (and missing parents) as 0700, then check it is safe."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except PermissionError:
        raise CacheUnusable(
            f"cannot create {what} {path}: permission denied",
            "set AUTO_REVIEW_CACHE_DIR to a writable directory",
        ) from None
    except OSError as exc:
        raise CacheUnusable(
            f"cannot create {what} {path}: {exc.strerror}",
            "set AUTO_REVIEW_CACHE_DIR to a writable directory",
        ) from None
    check_owned_dir(path, what)


def open_layout(create: bool = True) -> Layout:
    """The cache layout, with its root checked (and created when `create`)."""
    layout = Layout(cache_root())
    if create:
        make_private_dir(layout.root, "cache root")
        for path in (layout.base, layout.bundles):
            make_private_dir(path, "cache directory")
        tag = os.path.join(layout.root, "CACHEDIR.TAG")
        if not os.path.exists(tag):
            write_new_file(tag, CACHEDIR_TAG.encode())
    else:
        check_owned_dir(layout.root, "cache root")
    return layout


def write_new_file(path: str, data: bytes) -> None:
    """Write a small file atomically (temp + rename), mode 0600."""
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)
