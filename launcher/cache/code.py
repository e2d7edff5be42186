"""The launcher's own code, compiled once into <cache>/v1/code/<code id>/launcher.zip.

The single file carries the launcher's bytecode for the interpreter it was built with
(stored uncompressed: an import from it costs no more than one from the code dir). On
any other interpreter zipimport compiles every module of the launcher on every start
(it never caches bytecode), which costs more than everything else on the warm path,
so there, before anything else is imported (launcher.bootstrap), like shiv, we
compile our code once, through the cache's publish protocol (so 16 starting
launchers compile it once, not 16 times), into one stored zip of sources and
unchecked-hash .pyc files that zipimport loads without compiling: one file to
write and sync instead of two per module. The bootstrap imports from it when each
level of it is a private directory of ours, holding the code's use lock shared so
`cache clear` never deletes code a starting launcher imports from.
"""

from __future__ import annotations

import os
import sys

from launcher import embedded
from launcher.cache.paths import Layout, ensure_level, is_published
from launcher.cache.root import has_bytecode, held_code, hold_code, prefer
from launcher.errors import LauncherError

_gave_up: list[bool] = []  # [True] once a failure to publish the code dir was said
MAX_SOURCE = 1 << 20  # the longest launcher module is 24 KB


def code_id() -> str | None:
    """The id build.py gave this launcher's code (None when run from a source tree)."""
    try:
        from launcher._embedded import CODE_ID
    except ImportError:
        return None
    return CODE_ID


def release() -> None:
    """Stop holding our code dirs (before `cache clear` removes them too: whatever is
    imported after that comes from the zip, which stays on the package path)."""
    while held_code:
        os.close(held_code.pop())


def fill_code(work: str, final: str) -> None:
    """Write launcher.zip into `work`: launcher/**.py from the single file and, beside
    each, its bytecode for this interpreter (hash-based, unchecked: the sources never
    change under a code id), compiled under the name tracebacks show. Written
    explicitly, so PYTHONDONTWRITEBYTECODE cannot make every start compile again."""
    import importlib.util
    import marshal
    import zipfile

    from launcher.cache.root import CODE_ARCHIVE

    flags = (0b01).to_bytes(4, "little")  # hash-based, check_source off (PEP 552)
    archive = os.path.join(work, CODE_ARCHIVE)
    members = {name for name, _size, _crc in embedded.list_members("launcher/")}
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(members):
            if not name.endswith(".py"):
                continue
            source = embedded.read_member(name, MAX_SOURCE)
            shown = os.path.join(final, CODE_ARCHIVE, name)  # what tracebacks name
            try:
                code = compile(source, shown, "exec", dont_inherit=True)
            except (SyntaxError, ValueError) as exc:
                raise OSError(f"cannot compile {name}: {exc}") from None
            pyc = importlib.util.MAGIC_NUMBER + flags + importlib.util.source_hash(source)
            zf.writestr(name, source)
            zf.writestr(name + "c", pyc + marshal.dumps(code))
    os.chmod(archive, 0o400)


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
    when the zip has this interpreter's bytecode (it needs none) or a code dir is not
    possible: the launcher then keeps running from the zip. A failure
    is said once: later calls of the same process return None without trying again."""
    ident = code_id()
    if ident is None or _gave_up or has_bytecode():
        return None
    target = layout.code_dir(ident)
    if is_published(target):
        return target
    try:
        ensure_level(layout.code, "cache directory")
        from launcher.cache import publish

        publish.publish(
            target,
            lambda work: fill_code(work, target),
            waiting_for="finish unpacking its launcher code",
            quiet=quiet,
        )
    except (LauncherError, OSError) as exc:
        if warn:
            _gave_up.append(True)
            text = exc.one_line() if isinstance(exc, LauncherError) else str(exc)
            sys.stderr.write(f"auto-review: warning: cannot cache the launcher code: {text}\n")
        return None
    return target


def use_for_later_imports(layout: Layout, quiet: bool = False) -> None:
    """Publish the code dir and import the launcher modules not loaded yet from it."""
    target = publish_code(layout, quiet)
    if target is not None and hold_code(target):  # the bootstrap's way: held, then used
        prefer(target)
