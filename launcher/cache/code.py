"""The launcher's own code, compiled once into <cache>/v1/code/<code id>/launcher.zip.

zipimport compiles every module of the launcher on every start (it never caches
bytecode), which costs more than everything else on the warm path. Like shiv, we
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

from launcher.cache import locks
from launcher.cache.paths import Layout, ensure_level, is_published
from launcher.cache.root import held_code, hold_code, prefer
from launcher.errors import LauncherError

_gave_up: list[bool] = []  # [True] once a failure to publish the code dir was said


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
    change under a code id): the build's own where it was made for this interpreter
    (same magic, same source hash), else compiled here. Written explicitly, so
    PYTHONDONTWRITEBYTECODE cannot make every start compile again."""
    import _imp
    import importlib.util
    import marshal
    import zipfile

    from launcher import embedded
    from launcher.cache.root import CODE_ARCHIVE

    flags = (0b01).to_bytes(4, "little")  # hash-based, check_source off (PEP 552)
    archive = os.path.join(work, CODE_ARCHIVE)
    members = {name for name, _size, _crc in embedded.list_members("launcher/")}
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(members):
            if not name.endswith(".py"):
                continue
            source = embedded.read_member(name)
            pyc = importlib.util.MAGIC_NUMBER + flags + importlib.util.source_hash(source)
            built = embedded.read_member(name + "c") if name + "c" in members else b""
            shown = os.path.join(final, CODE_ARCHIVE, name)  # what tracebacks name
            if built[:4] + built[8:16] == pyc[:4] + pyc[8:16]:  # this interpreter, this source
                # the build compiled it as "launcher/x.py", a name relative to whatever
                # the working dir is: tracebacks would show that dir's file's lines
                code = marshal.loads(built[16:])
                _imp._fix_co_filename(code, shown)  # as importlib's SourceLoader does
            else:
                try:
                    code = compile(source, shown, "exec", dont_inherit=True)
                except (SyntaxError, ValueError) as exc:
                    raise OSError(f"cannot compile {name}: {exc}") from None
            built = pyc + marshal.dumps(code)
            zf.writestr(name, source)
            zf.writestr(name + "c", built)
    os.chmod(archive, 0o400)


def zip_has_bytecode() -> bool:
    """Whether the single file carries the launcher's bytecode for this interpreter
    (build.py compiles it for the build host's python3): imports from the zip then
    compile nothing, and a cold start writes the code dir in a thread beside its unpack
    instead of before everything else (launcher.cache.warm)."""
    loader = getattr(sys.modules.get("__main__"), "__loader__", None)
    try:
        head = loader.get_data("launcher/__init__.pyc")[:4]  # type: ignore[union-attr]
    except (OSError, AttributeError):
        return False
    import _frozen_importlib_external  # loaded at every start: the import system's own

    return head == _frozen_importlib_external.MAGIC_NUMBER


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
    when that is not possible: the launcher then keeps running from the zip. A failure
    is said once: later calls of the same process return None without trying again."""
    ident = code_id()
    if ident is None or _gave_up:
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


class PublishAlongside:
    """Publish the code dir in a thread (during a cold start's unpack): `start()`, then
    `wait()`. A cache that cannot take it leaves the zip in charge, as publish_code does;
    any other exception of the thread is raised by `wait()`."""

    def __init__(self, layout: Layout) -> None:
        import threading

        self.failed: list[BaseException] = []
        self.started = True
        self.thread = threading.Thread(
            target=self._run, args=(layout,), name="auto-review-code", daemon=True
        )

    def _run(self, layout: Layout) -> None:
        try:
            publish_code(layout, quiet=True)
        except BaseException as exc:  # raised in the caller's thread by wait()
            self.failed.append(exc)

    def start(self) -> None:
        try:
            self.thread.start()
        except RuntimeError:  # "can't start new thread" under a memory limit: the code
            self.started = False  # dir is an optimisation, the unpack goes on without it

    def wait(self) -> None:
        """Wait for the thread; raise what it raised, unless an exception is on its way
        (then a wait of the thread for the code dir's lock stops first)."""
        if not self.started:
            return
        if sys.exc_info()[0] is not None:
            locks.abandon_waits()
        self.thread.join()
        if self.failed and sys.exc_info()[0] is None:
            raise self.failed[0]


def use_for_later_imports(layout: Layout, quiet: bool = False) -> None:
    """Publish the code dir and import the launcher modules not loaded yet from it."""
    target = publish_code(layout, quiet)
    if target is not None and hold_code(target):  # the bootstrap's way: held, then used
        prefer(target)
