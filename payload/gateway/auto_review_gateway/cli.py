"""Command-line dispatch: one subcommand per module listed in COMMANDS.

A command module provides ``NAME``, ``HELP``, ``configure(parser)`` that adds
its arguments, and ``run(args) -> int`` that returns the exit status; optionally
``ALIASES``, other names of the command. Adding a subcommand is adding its
module (in ``commands/``) to the import and to COMMANDS.

The last resort: an exception no command expected (a bug, or input that found one)
ends in one line on stderr and exit EXIT_INTERNAL (70), never in a traceback, unless
``--debug`` asks for it. Either way no credential the gateway holds is printed.
"""

import argparse
import os
import sys
import traceback

from auto_review_gateway import __version__
from auto_review_gateway.commands import check, preflight, probe, review, serve, webhook
from auto_review_gateway.core import hostlink, trust
from auto_review_gateway.core.model import EXIT_INTERNAL

COMMANDS = (check, preflight, probe, review, serve, webhook)
MAX_MESSAGE_CHARS = 300
DEBUG_HELP = "on an internal error, print the traceback too (secrets redacted)"


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command in COMMANDS, each dispatching to its module's ``run``."""
    # prog: the name users type (the single file runs these commands in its sandbox).
    # No abbreviations: the launcher checks arguments on the host by their full names.
    parser = argparse.ArgumentParser(
        prog="auto-review",
        description="auto-review gateway (runs inside the sandbox)",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = commands.add_parser(
            command.NAME,
            aliases=getattr(command, "ALIASES", ()),
            help=command.HELP,
            description=command.HELP,
            allow_abbrev=False,
        )
        command.configure(sub)
        # after the command too (`review --debug`); SUPPRESS keeps a `--debug` given
        # before the command from being reset by the subcommand's default
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        sub.set_defaults(run=command.run)
    return parser


def redact(text: str, url: str = "") -> str:
    """``text`` without the credentials the gateway holds: the secrets the launcher passed
    (each line of a multi-line one too), a GitHub token from the state dir, and any URL's
    ``user:token@`` (``url``'s as well)."""
    from auto_review_gateway.review.gitrepo import redact as redact_urls

    values = [os.environ.get(name, "") for name in hostlink.SECRET_NAMES]
    try:  # a token may also come from the state dir's github.env
        from auto_review_gateway.forges.github import config as github_config

        values.append(github_config.settings(os.environ).get("GITHUB_TOKEN", ""))
    except Exception:
        pass  # redacting must not fail: what it can read, it redacts
    secrets: set[str] = set()
    for value in values:
        secrets.add(value.strip())
        secrets.update(line.strip() for line in value.splitlines() if len(line.strip()) >= 16)
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    return redact_urls(text, url)


def internal_error(exc: BaseException, *, debug: bool, url: str = "") -> int:
    """Report ``exc``, which no command expected: the traceback only with ``debug``, then
    one line naming it; both redacted and escaped. Returns EXIT_INTERNAL."""
    from auto_review_gateway.core.escape import visible

    if debug:
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        for line in "".join(lines).splitlines():
            sys.stderr.write(visible(redact(line, url)) + "\n")
    detail = redact(" ".join(f"{type(exc).__name__}: {exc}".split()), url)
    if len(detail) > MAX_MESSAGE_CHARS:
        detail = detail[: MAX_MESSAGE_CHARS - 1] + "…"
    hint = "" if debug else " (--debug shows where)"
    sys.stderr.write(f"auto-review: internal error: {visible(detail)}{hint}\n")
    sys.stderr.flush()
    return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv[1:]) and run the command; usage errors exit 2,
    an exception no command expected EXIT_INTERNAL (see the module doc)."""
    args = None
    try:
        hostlink.attach()  # the launcher's secrets and lifeline, before any command runs
        trust.apply_extra_ca()  # bare runs and the image: no launcher bound the CA file in
        args = build_parser().parse_args(argv)
        return args.run(args)
    except Exception as exc:
        debug = bool(getattr(args, "debug", False))
        return internal_error(exc, debug=debug, url=getattr(args, "repo", None) or "")
