"""auto-review: the single file. Runs the launcher from inside this zipapp.

build.py writes this module as the zipapp's __main__.py, with CODE_ID filled in.
The zip carries the launcher's bytecode for the interpreter it was built with. On any
other, zipimport would compile every module on every start, so the launcher prefers
its code compiled once into the cache (launcher.cache.code), when every level of it
is a private directory of ours; it holds that code's use lock shared so that
`cache clear` cannot delete it while this process still imports from it. The zip
stays on the package path behind the cached copy, so a missing file falls back to it.
"""

from __future__ import annotations

import os
import sys

if sys.version_info < (3, 10):  # noqa: UP036 -- the message is for older interpreters
    sys.exit("auto-review: needs Python 3.10 or newer -- run it with python3.10+")
CODE_ID = "@CODE_ID@"


def cached_code(code_id: str) -> str | None:
    """The launcher's code unpacked in the cache, if every level of it is ours."""
    from launcher.cache.root import MARKER, ancestor_problem, code_levels, owned_dir_problem

    levels = code_levels(code_id)
    if ancestor_problem(levels[0]):
        return None  # the launcher refuses such a root with the reason
    for path in levels:
        try:
            if owned_dir_problem(os.lstat(path)):
                return None
        except OSError:
            return None
    code = levels[-1]
    return code if os.path.exists(os.path.join(code, MARKER)) else None


def will_unpack(argv: list[str]) -> bool:
    """Whether this command uses the cache (`cache prepare`, or a sandboxed command the
    command line will not refuse first): only then is the code published before the
    first import; `--help`, a typo, a bad setting, `bundle info` or `cache path` create
    nothing."""
    from launcher import settings
    from launcher.cli.main import check_before_cache, split_globals
    from launcher.errors import LauncherError

    opts, rest = split_globals(argv)
    if not rest or rest[0] in ("bundle", "doctor", "help") or rest[0].startswith("-"):
        return False
    try:
        if rest[0] != "cache":
            check_before_cache(rest, opts)
        elif rest[1:] == ["prepare"]:
            settings.check()
        else:
            return False
    except LauncherError:
        return False
    return True


def use_cached_code() -> None:
    """Prefer the cached code and hold it in use, or leave the zip in charge. A zip
    with this interpreter's bytecode stays in charge: its imports compile nothing."""
    from launcher.cache.root import has_bytecode

    if has_bytecode():
        return
    code = cached_code(CODE_ID)
    if code is None:
        if not will_unpack(sys.argv[1:]):
            return
        from launcher.cache.code import publish_early

        code = publish_early()
        if code is None or cached_code(CODE_ID) != code:
            return  # the zip stays in charge (and the command reports a bad cache)
    from launcher.cache.root import hold_code, prefer

    if hold_code(code):  # before any import from it: `cache clear` may be removing it
        prefer(code)


# Preformatted: when memory has run out there may be none left to build a message.
OUT_OF_MEMORY = (
    b"auto-review: out of memory (a limit such as ulimit -v or a cgroup's memory.max was"
    b" reached) -- raise it: a cold start needs about 64 MB of memory and 300 MB of"
    b" address space\n"
)


def memory_ran_out(exc: BaseException | None) -> bool:
    """Whether `exc` or one it arose from is memory (or a thread) the OS refused."""
    for _ in range(16):
        if exc is None:
            return False
        if isinstance(exc, MemoryError) or "can't start new thread" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


READER_GONE = 120  # our output's reader went away: the code Python's own exit gives


def leave(code: int | None) -> None:
    """Exit with `code` once the command is done, without the interpreter's teardown.

    Freeing every module and object of the run took 6.6 ms after a cold start and 1.4 ms
    after a warm one (from the last atexit handler to the parent's wait, median of 15),
    for nothing: every thread of the launcher is a daemon or joined by then, and no file
    object is left open. So: the atexit handlers, what Python buffers, then os._exit.
    Output that cannot be flushed (a closed pipe) ends with 120, as Python's exit does."""
    import atexit

    atexit._run_exitfuncs()
    code = int(code or 0)
    for stream in (sys.stdout, sys.stderr):
        # None: the fd was closed when Python started (`>&-`); each one is flushed even
        # when the other fails, as Python's own exit does.
        if stream is None or getattr(stream, "closed", False):
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or READER_GONE
    os._exit(code)


def stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll says POLLERR), so a
    BrokenPipeError came from our output, not from a bug writing elsewhere."""
    import select

    try:
        poller = select.poll()
        poller.register(1, 0)
        return any(events & select.POLLERR for _fd, events in poller.poll(0))
    except (OSError, ValueError):
        return False


if __name__ == "__main__":
    try:
        use_cached_code()
        from launcher.cli.main import main

        status = main()
    except Exception as exc:  # the launcher's own errors are one line already (main)
        if isinstance(exc, BrokenPipeError) and stdout_reader_gone():
            os._exit(READER_GONE)  # `| head` has read enough: nothing to say
        if memory_ran_out(exc):
            os.write(2, OUT_OF_MEMORY)
            sys.exit(71)  # EX_OSERR, as a fork that fails
        # A bug, or memory that ran out in another thread (leaving, say, a module half
        # imported): one line all the same, and what to try.
        what = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
        line = f"auto-review: internal error ({what}) -- if a memory limit is set (ulimit -v),"
        os.write(2, f"{line} raise it; otherwise report this line\n".encode(errors="replace"))
        sys.exit(70)  # EX_SOFTWARE
    leave(status)
