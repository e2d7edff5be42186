"""The launcher's own code, unpacked into <cache>/v1/code/<code id>/ with bytecode.

zipimport compiles every module of the launcher on every start (it never caches
bytecode), which costs more than everything else on the warm path. Like shiv, we
unpack our code once, through the cache's publish protocol (so 16 starting
launchers compile it once, not 16 times); the bootstrap imports from that copy
when each level of it is a private directory of ours, holding the code's use lock
shared so `cache clear` never deletes code a starting launcher imports from.
"""

from __future__ import annotations

import os
import sys

from launcher.cache import locks
from launcher.cache.paths import Layout, ensure_level, is_published, use_lock
from launcher.errors import LauncherError

_held: list[int] = []  # use-lock fds of the code dirs this process imports from


def code_id() -> str | None:
    """The id build.py gave this launcher's code (None when run from a source tree)."""
    try:
        from launcher._embedded import CODE_ID
    except ImportError:
        return None
    return CODE_ID


def hold_in_use(code_dir: str) -> bool:
    """Hold `code_dir`'s use lock shared until exit (or release()); True if it is still
    published once held (a `cache clear` may have removed it just before)."""
    try:
        _held.append(locks.hold(use_lock(code_dir), shared=True, quiet=True))
    except (LauncherError, OSError):
        return False
    return is_published(code_dir)


def release() -> None:
    """Stop holding our code dirs (before `cache clear` removes them too: whatever is
    imported after that comes from the zip, which stays on the package path)."""
    while _held:
        os.close(_held.pop())


def fill_code(work: str) -> None:
    """Write launcher/**.py from the zip into `work` and compile it for this interpreter
    (py_compile writes even under PYTHONDONTWRITEBYTECODE)."""
    import py_compile

    from launcher import embedded

    for name, _size, _crc in embedded.list_members("launcher/"):
        if not name.endswith(".py"):
            continue
        dest = os.path.join(work, name)
        os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
        with open(dest, "wb") as fh:
            fh.write(embedded.read_member(name))
        try:
            py_compile.compile(dest, doraise=True)
        except py_compile.PyCompileError as exc:
            raise OSError(f"cannot compile {name}: {exc.msg}") from None


def publish_early() -> str | None:
    """Publish the code dir before anything else is imported from the zip (the
    bootstrap's first run): every later import then comes from bytecode, and of 16
    launchers starting at once one compiles while the others wait. Silent: a cache
    that cannot be used is reported by the command itself."""
    from launcher.cache.paths import open_layout

    try:
        return publish_code(open_layout(create=True), quiet=True, warn=False)
    except (LauncherError, OSError):
        return None


def publish_code(layout: Layout, quiet: bool = False, warn: bool = True) -> str | None:
    """The published code dir of this launcher (publishing it now if needed), or None
    when that is not possible: the launcher then keeps running from the zip."""
    ident = code_id()
    if ident is None:
        return None
    target = layout.code_dir(ident)
    if is_published(target):
        return target
    try:
        ensure_level(layout.code, "cache directory")
        from launcher.cache import publish

        publish.publish(
            target, fill_code, waiting_for="finish unpacking its launcher code", quiet=quiet
        )
    except (LauncherError, OSError) as exc:
        if warn:
            text = exc.one_line() if isinstance(exc, LauncherError) else str(exc)
            sys.stderr.write(f"auto-review: warning: cannot cache the launcher code: {text}\n")
        return None
    return target


def use_for_later_imports(layout: Layout, quiet: bool = False) -> None:
    """Publish the code dir and import the launcher modules not loaded yet from it."""
    target = publish_code(layout, quiet)
    if target is None or not hold_in_use(target):
        return
    import launcher
    import launcher.cache

    for package, sub in ((launcher, "launcher"), (launcher.cache, "launcher/cache")):
        path = os.path.join(target, sub)
        if path not in package.__path__:
            package.__path__.insert(0, path)
