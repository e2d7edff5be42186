"""Every path of the cache, and the checks that make each level safe to trust.

    <root>/CACHEDIR.TAG
    <root>/v1/bundles/sha256-<hex>/              a version: rootfs/ bundle.json files.tsv .complete
    <root>/v1/bundles/sha256-<hex>.use.lock      shared while an instance runs it
    <root>/v1/bundles/sha256-<hex>.extract.lock  exclusive while it is unpacked
    <root>/v1/bundles/sha256-<hex>.labels        every version label this digest was seen with
    <root>/v1/code/<code id>/ (.use.lock, .extract.lock)   the launcher's code with bytecode
    <root>/v1/vendor/<module>-<abi>-<tag>/ (.extract.lock) native helpers (zstandard)
    <root>/v1/run/                               runtime state when XDG_RUNTIME_DIR is unusable
    <root>/v1/pins/sha256-<hex>                  persistent pins
    <root>/v1/.gc.lock
    <parent>/.tmp-<name>-*  <parent>/.trash-<name>-*     work and deletion dirs of any kind

Nothing outside this package builds a cache path. Imported on the warm path: os and
stat only.
"""

from __future__ import annotations

import errno
import os
import stat

from launcher.cache.root import (
    CODE,
    LAYOUT,
    MARKER,
    USE_LOCK,
    ancestor_problem,
    cache_root,
    owned_dir_problem,
)
from launcher.errors import CacheUnusable, NoSpace, SandboxFailed

CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by auto-review.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)
WORK_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
EXTRACT_LOCK = ".extract.lock"
LABELS = ".labels"
WRITABLE_FIX = "set AUTO_REVIEW_CACHE_DIR to a writable directory"
SPACE_FIX = "free some space or set AUTO_REVIEW_CACHE_DIR to a larger disk"
PREPARE_HINT = "run: auto-review cache prepare"


class Layout:
    """Names of everything under <root>/v1."""

    __slots__ = ("base", "bundles", "code", "gc_lock", "pins", "root", "run", "vendor")

    def __init__(self, root: str) -> None:
        self.root = root
        self.base = os.path.join(root, LAYOUT)
        self.bundles = os.path.join(self.base, "bundles")
        self.code = os.path.join(self.base, CODE)
        self.vendor = os.path.join(self.base, "vendor")
        self.run = os.path.join(self.base, "run")
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
        return self.version_dir(digest) + USE_LOCK

    def extract_lock(self, digest: str) -> str:
        return self.version_dir(digest) + EXTRACT_LOCK

    def labels(self, digest: str) -> str:
        return self.version_dir(digest) + LABELS

    def pin(self, digest: str) -> str:
        return os.path.join(self.pins, self.dirname(digest))

    def code_dir(self, ident: str) -> str:
        return os.path.join(self.code, ident)

    def vendor_dir(self, module: str, abi: str, tag: str) -> str:
        return os.path.join(self.vendor, f"{module}-{abi}-{tag}")


def is_published(final: str) -> bool:
    """True when the directory `final` carries its marker (and so is complete)."""
    return os.path.exists(os.path.join(final, MARKER))


def publish_lock(final: str) -> str:
    """The exclusive lock that guards publishing the directory `final`."""
    return final + EXTRACT_LOCK


def use_lock(final: str) -> str:
    """The shared lock held while the published directory `final` is in use."""
    return final + USE_LOCK


def work_prefix(name: str) -> str:
    """Prefix of the work dirs in which `name` is being built."""
    return f"{WORK_PREFIX}{name}-"


def fix_for(path: str, problem: str, root: bool) -> str:
    """What the user should do about a level that failed owned_dir_problem."""
    if problem.startswith("is writable"):
        return f"run: chmod go-w {path}"
    if root and problem == "is a symlink":
        return f"point AUTO_REVIEW_CACHE_DIR at the real directory ({os.path.realpath(path)})"
    if root:
        return "use a cache dir of your own: set AUTO_REVIEW_CACHE_DIR"
    return "remove the cache root and let auto-review create it again, or set AUTO_REVIEW_CACHE_DIR"


def check_level(path: str, what: str, root: bool = False) -> None:
    """Refuse a cache level that is a symlink, not ours, or group/other-writable."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise CacheUnusable(
            f"{what} {path} vanished", "check what else manages this directory"
        ) from None
    problem = owned_dir_problem(st)
    if problem:
        raise CacheUnusable(f"{what} {path} {problem}", fix_for(path, problem, root))


def check_root_parent(root: str) -> None:
    """Refuse a root that someone else could replace through an ancestor directory."""
    problem = ancestor_problem(root)
    if problem:
        raise CacheUnusable(
            f"the cache root {root} is not safe: {problem}, so others can replace the cache",
            "set AUTO_REVIEW_CACHE_DIR below directories only you (or root) can write",
        )


def ensure_level(path: str, what: str, root: bool = False) -> None:
    """Create `path` as 0700 if missing (parents must exist and be checked), then check it."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise map_os_error(exc, f"cannot create {what} {path}") from None
    check_level(path, what, root)


def make_private_dirs(path: str, what: str) -> None:
    """Create `path` and missing parents as 0700 (outside the cache: run dirs), then check it."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise map_os_error(exc, f"cannot create {what} {path}") from None
    except RecursionError:  # os.makedirs recurses once per missing level
        raise CacheUnusable(f"{what} {path[:80]}... is too deep", "choose a shorter path") from None
    check_level(path, what)


def map_os_error(exc: OSError, doing: str) -> CacheUnusable | NoSpace:
    """The launcher error for an OSError met while writing the cache."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(f"{doing}: no space left on the device", SPACE_FIX)
    return CacheUnusable(f"{doing}: {exc.strerror or exc}", WRITABLE_FIX)


def open_layout(create: bool = True) -> Layout:
    """The cache layout with root, v1 and bundles checked (created 0700 when `create`).

    CACHEDIR.TAG goes into v1/, and into the root only when this call created it: a
    root that was an existing directory (say $HOME) must not be tagged for exclusion
    from backups."""
    layout = Layout(cache_root())
    check_root_parent(layout.root)
    if create:
        created = not os.path.lexists(layout.root)
        try:
            os.makedirs(os.path.dirname(layout.root), mode=0o700, exist_ok=True)
        except OSError as exc:
            raise map_os_error(exc, f"cannot create the cache root {layout.root}") from None
        except RecursionError:  # os.makedirs recurses once per missing level
            raise CacheUnusable(
                f"the cache root {layout.root[:80]}... is too deep", "choose a shorter path"
            ) from None
        ensure_level(layout.root, "cache root", root=True)
        ensure_level(layout.base, "cache directory")
        ensure_level(layout.bundles, "cache directory")
        for where in (layout.base, layout.root) if created else (layout.base,):
            tag = os.path.join(where, "CACHEDIR.TAG")
            if not os.path.exists(tag):
                try:
                    write_new_file(tag, CACHEDIR_TAG.encode())
                except OSError as exc:
                    raise map_os_error(exc, f"cannot write {tag}") from None
    else:
        check_level(layout.root, "cache root", root=True)
    return layout


def existing_layout() -> Layout | None:
    """The layout if the cache root exists (root and v1 checked); never creates anything."""
    layout = Layout(cache_root())
    if not os.path.lexists(layout.root):
        return None
    check_root_parent(layout.root)
    check_level(layout.root, "cache root", root=True)
    if os.path.lexists(layout.base):
        check_level(layout.base, "cache directory")
    return layout


def read_small_file(path: str, limit: int) -> bytes | None:
    """At most `limit` bytes of a regular file, opened without following a symlink or
    blocking on a FIFO; None when it is missing or not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, left = [], limit
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_new_file(path: str, data: bytes) -> None:
    """Write a small file atomically (temp + rename), mode 0600."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        os.unlink(tmp)  # whatever a killed writer (or anyone) left under this name
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def refuse_noexec(path: str, consequence: str) -> None:
    """SandboxFailed when `path` is on a filesystem mounted noexec, saying `consequence`."""
    if os.statvfs(path).f_flag & os.ST_NOEXEC:
        raise SandboxFailed(
            f"the cache {path} is on a filesystem mounted noexec: {consequence}",
            "set AUTO_REVIEW_CACHE_DIR to a directory on a filesystem mounted without noexec",
        )
