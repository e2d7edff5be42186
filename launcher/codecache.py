"""The launcher's own code, unpacked into <cache>/v1/code/<code id>/ with bytecode.

zipimport compiles every module of the launcher on every start (it never caches
bytecode), which costs more than everything else on the warm path. Like shiv,
we unpack our code once; the zipapp's __main__ imports from that copy when each
level of it is a private directory of ours, and from the zip otherwise.
"""

from __future__ import annotations

import os
import sys

from launcher.layout import MARKER, Layout, make_private_dir


def code_id() -> str | None:
    """The id build.py gave this launcher's code (None when run from a source tree)."""
    try:
        from launcher._embedded import CODE_ID
    except ImportError:
        return None
    return CODE_ID


def code_dir(layout: Layout, ident: str) -> str:
    return os.path.join(layout.base, "code", ident)


def publish(layout: Layout) -> str | None:
    """Unpack launcher/*.py from the zip into the code dir and compile it, atomically.

    Compiled explicitly (py_compile writes even under PYTHONDONTWRITEBYTECODE) for
    this interpreter; another Python version compiles its own on first import.
    """
    ident = code_id()
    if ident is None:
        return None
    target = code_dir(layout, ident)
    if os.path.exists(os.path.join(target, MARKER)):
        return target
    import py_compile
    import shutil
    import tempfile

    from launcher import embedded

    parent = os.path.dirname(target)
    make_private_dir(parent, "cache directory")
    work = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        for name, _size, _crc in embedded.list_members("launcher/"):
            if name.endswith(".py"):
                dest = os.path.join(work, name)
                os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
                with open(dest, "wb") as fh:
                    fh.write(embedded.read_member(name))
                py_compile.compile(dest, doraise=True)
        with open(os.path.join(work, MARKER), "wb"):
            pass
        try:
            os.rename(work, target)
        except OSError:
            pass  # another launcher published the same code first
    except (OSError, py_compile.PyCompileError) as exc:
        sys.stderr.write(f"auto-review: warning: cannot cache the launcher code: {exc}\n")
        return None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def use_for_later_imports(layout: Layout) -> None:
    """Publish the code dir and import the launcher modules not loaded yet from it."""
    target = publish(layout)
    if target is None:
        return
    import launcher

    package_dir = os.path.join(target, "launcher")
    if package_dir not in launcher.__path__:
        launcher.__path__.insert(0, package_dir)
