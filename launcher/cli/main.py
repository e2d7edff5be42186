"""Command line of the single file.

`cache`, `bundle`, `doctor`, `--help` and `--version` belong to the launcher;
every other command runs in the sandbox. Its arguments are checked on the host
first (launcher.cli.grammar, a table of the gateway's parsers), so that a typo is
refused before anything is unpacked or started, then passed through unchanged.
The sandboxed path is dispatched without argparse to keep warm starts lean.
"""

from __future__ import annotations

import sys

from launcher import settings
from launcher.cli import grammar
from launcher.errors import ExitCode, LauncherError

GLOBAL_FLAGS = {"-q": "quiet", "--quiet": "quiet", "-v": "verbose", "--verbose": "verbose",
                "--bare": "bare"}  # fmt: skip


def split_globals(argv: list[str]) -> tuple[dict[str, bool], list[str]]:
    """Global flags -> options; the rest is the command and its arguments.

    Before the command they are always ours; after it, only for launcher commands
    (`cache prepare --quiet`): a sandboxed command's arguments pass through unchanged.
    """
    opts = {"quiet": False, "verbose": False, "bare": False}
    i = 0
    while i < len(argv) and argv[i] in GLOBAL_FLAGS:
        opts[GLOBAL_FLAGS[argv[i]]] = True
        i += 1
    rest = argv[i:]
    if rest and rest[0] in grammar.LAUNCHER_COMMANDS:
        for flag in [a for a in rest[1:] if a in GLOBAL_FLAGS]:
            opts[GLOBAL_FLAGS[flag]] = True
        rest = [rest[0], *(a for a in rest[1:] if a not in GLOBAL_FLAGS)]
    return opts, rest


def main(argv: list[str] | None = None) -> int:
    """Entry point of the zipapp; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    opts, rest = split_globals(argv)
    try:
        if not rest or rest[0] in ("-h", "--help", "help"):
            from launcher.cli.helptext import print_help

            print_help()
            return ExitCode.OK if rest else ExitCode.USAGE
        command = rest[0]
        if command == "--version":
            from launcher.cli.commands import print_version

            return print_version()
        if rest == ["cache", "prepare"]:  # every cold start's verb: no argparse, no cachecmd
            from launcher.cli.prepare import prepare

            return prepare(opts["quiet"])
        if command in grammar.LAUNCHER_COMMANDS:
            from launcher.cli.commands import run_launcher_command

            return run_launcher_command(rest, opts)
        check_before_cache(rest, opts)
        from launcher.sandbox.run import run_sandboxed

        return run_sandboxed(rest, opts)
    except LauncherError as exc:
        sys.stderr.write(exc.one_line() + "\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def check_before_cache(rest: list[str], opts: dict[str, bool]) -> None:
    """What a sandboxed command is refused for before the cache is touched (the bootstrap
    asks too, before it publishes the launcher's code): its arguments, the AUTO_REVIEW_*
    settings, and --bare on a host that is not a container. LauncherError for the first."""
    grammar.check(rest)
    settings.check()
    if opts["bare"] or settings.bare():
        from launcher.sandbox import container

        container.refuse_bare_on_a_host()
