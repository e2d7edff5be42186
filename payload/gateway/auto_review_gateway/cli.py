"""Command-line dispatch: one subcommand per module listed in COMMANDS.

A command module provides ``NAME``, ``HELP``, ``configure(parser)`` that adds
its arguments, and ``run(args) -> int`` that returns the exit status; optionally
``ALIASES``, other names of the command. Adding a subcommand is adding its
module (in ``commands/``) to the import and to COMMANDS.
"""

import argparse

from auto_review_gateway import __version__
from auto_review_gateway.commands import check, probe, review, serve
from auto_review_gateway.core import hostlink, trust

COMMANDS = (check, probe, review, serve)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command in COMMANDS, each dispatching to its module's ``run``."""
    parser = argparse.ArgumentParser(
        prog="gateway", description="auto-review gateway (runs inside the sandbox)"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = commands.add_parser(
            command.NAME,
            aliases=getattr(command, "ALIASES", ()),
            help=command.HELP,
            description=command.HELP,
        )
        command.configure(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv[1:]) and run the command; usage errors exit 2."""
    hostlink.attach()  # the launcher's secrets and lifeline, before any command runs
    trust.apply_extra_ca()  # bare runs and the image: no launcher bound the CA file in
    args = build_parser().parse_args(argv)
    return args.run(args)
