"""The sandboxed commands' arguments, checked on the host before anything is unpacked.

A typo must not cost a cold start (unpacking the rootfs, starting a sandbox) only to be
refused by a program of another name. The gateway parses the same arguments again with
argparse (`configure(parser)` in payload/gateway/auto_review_gateway/commands/); these
tables mirror its parsers and tests/test_cli_grammar.py compares the two, so they cannot
drift. Choices are checked here; numbers, refs and URLs are the gateway's to judge.
Plain data and one loop: argparse would cost every warm start milliseconds.
"""

from __future__ import annotations

from launcher.errors import UsageError

LAUNCHER_COMMANDS = ("cache", "bundle", "doctor")
SEVERITIES = ("info", "low", "medium", "high", "critical")
FLAG = "flag"  # an option without a value
VALUE = "value"  # an option with one value (a tuple instead: the values allowed)

# command -> option -> FLAG, VALUE or the tuple of its choices
OPTIONS: dict[str, dict[str, str | tuple[str, ...]]] = {
    "check": {"--json": FLAG, "--debug": FLAG},
    "review": {
        "--repo": VALUE,
        "--path": VALUE,
        "--base": VALUE,
        "--head": VALUE,
        "--format": ("text", "json", "markdown"),
        "--max-diff-bytes": VALUE,
        "--post": FLAG,
        "--pr": VALUE,
        "--fail-on": SEVERITIES,
        "--debug": FLAG,
    },
    "serve": {"--listen": VALUE, "--debug": FLAG},
    "preflight": {"--json": FLAG, "--debug": FLAG},
    "webhook": {"--repo": VALUE, "--org": VALUE, "--url": VALUE, "--json": FLAG, "--debug": FLAG},
    "probe": {"--debug": FLAG},
}
ALIASES = {"gateway": "serve"}
REQUIRED = {"review": ("--base",)}  # options that must be given
ONE_OF = {"review": (("--repo", "--path"),), "webhook": (("--repo", "--org"),)}  # one of each
# probe's actions (its first positional argument) -> how many arguments each takes
ACTIONS = {"probe": {"exit": 1, "sleep": 1, "env": 0, "write": 1, "whoami": 0, "clone": 1,
                     "connect": 1, "abi": 0, "forks": 1, "alloc": 1, "flock": 1}}  # fmt: skip
# commands whose first positional argument is a verb and the only one: the verbs
VERBS = {"webhook": ("register", "list", "test")}
# what `auto-review --help` shows of each (probe is for the tests and the bench)
SYNOPSIS = {
    "check": "[--json]",
    "review": "(--repo URL | --path DIR) --base REF [--head REF] [--format text|json|markdown]"
    " [--max-diff-bytes N] [--post --pr OWNER/REPO#N] [--fail-on SEVERITY]",
    "serve": "[--listen ADDR:PORT]",
    "preflight": "[--json]",
    "webhook": "register|list|test (--repo OWNER/NAME | --org ORG) [--url URL] [--json]",
}
GLOBAL_FLAGS = ("-q", "--quiet", "-v", "--verbose", "--bare")


def check(argv: list[str]) -> None:
    """UsageError unless `argv` (a sandboxed command, then its arguments) is one the
    gateway accepts; `-h`/`--help` anywhere is left to the gateway's own help."""
    name = ALIASES.get(argv[0], argv[0]) if argv else ""
    if name not in OPTIONS:
        raise unknown_command(argv[0] if argv else "")
    options, given, positionals = OPTIONS[name], [], []
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-h", "--help"):
            return
        if arg == "--":
            positionals += list(args)
            break
        if not looks_like_option(arg):
            positionals.append(arg)
            continue
        option, eq, value = arg.partition("=")
        kind = options.get(option)
        if kind is None:
            raise unknown_option(name, option)
        if kind == FLAG:
            if eq:
                raise usage(name, f"{option} takes no value")
        else:
            if not eq:
                value = next(args, None)  # type: ignore[assignment]
                if value is None or looks_like_option(value):
                    raise usage(name, f"{option} needs a value")
            if kind != VALUE and value not in kind:
                raise usage(name, f"{option} {value!r} is not one of {', '.join(kind)}")
        given.append(option)
    check_presence(name, given)
    check_positionals(name, positionals)


def check_presence(name: str, given: list[str]) -> None:
    """The options `name` requires, and the groups of which exactly one is needed."""
    for option in REQUIRED.get(name, ()):
        if option not in given:
            raise usage(name, f"{option} is required")
    for group in ONE_OF.get(name, ()):
        present = [option for option in group if option in given]
        if not present:
            raise usage(name, f"needs one of {' or '.join(group)}")
        if len(present) > 1:
            raise usage(name, f"{' and '.join(present)} exclude each other")


def check_positionals(name: str, positionals: list[str]) -> None:
    """Only probe (an action, then its own) and the commands with VERBS (one verb) take
    positional arguments."""
    verbs = VERBS.get(name)
    if verbs is not None:
        if len(positionals) != 1 or positionals[0] not in verbs:
            got = repr(positionals[0]) if positionals else "none"
            raise usage(name, f"say one of {', '.join(verbs)} (got {got})")
        return
    actions = ACTIONS.get(name)
    if actions is None:
        if positionals:
            raise usage(name, f"unexpected argument {positionals[0]!r}")
        return
    if not positionals or positionals[0] not in actions:
        got = repr(positionals[0]) if positionals else "none"
        raise usage(name, f"the action must be one of {', '.join(actions)} (got {got})")
    wanted = actions[positionals[0]]
    if len(positionals) - 1 != wanted:
        raise usage(name, f"{positionals[0]} takes {wanted} argument(s)")


def looks_like_option(arg: str) -> bool:
    """As argparse sees it: a dash word that is not a negative number and not `-`."""
    if not arg.startswith("-") or arg == "-":
        return False
    try:
        float(arg)
    except ValueError:
        return True
    return False


def usage(command: str, message: str) -> UsageError:
    return UsageError(f"{command}: {message}", f"see: auto-review {command} --help")


def unknown_command(word: str) -> UsageError:
    """The one line for a command nobody has: the valid ones, and the nearest."""
    if word == "--debug":  # the gateway's option: the launcher passes it after the command
        return UsageError("--debug goes after the command", "auto-review COMMAND --debug ...")
    listed = [*SYNOPSIS, *LAUNCHER_COMMANDS]
    what = f"unknown option {word}" if word.startswith("-") else f"unknown command {word!r}"
    return UsageError(
        what + nearest(word, listed),
        f"the commands are {', '.join(listed)}; see: auto-review --help",
    )


def unknown_option(command: str, option: str) -> UsageError:
    """The one line for an option `command` does not take (a global flag: where it goes)."""
    if option in GLOBAL_FLAGS:
        return UsageError(
            f"{command}: {option} goes before the command", f"auto-review {option} {command} ..."
        )
    known = list(OPTIONS[command])
    return UsageError(
        f"{command}: unknown option {option}{nearest(option, known)}",
        f"{command} takes {', '.join(known) or 'no options'}; see: auto-review {command} --help",
    )


def nearest(word: str, candidates: list[str]) -> str:
    """' (did you mean X?)' when one candidate is close, else ''."""
    import difflib  # only on the way to an error

    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
