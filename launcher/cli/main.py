"""Command line of the single file.

`cache`, `bundle`, `doctor`, `--help` and `--version` belong to the launcher;
every other command runs in the sandbox with its arguments passed through
unchanged. The sandboxed path is dispatched without argparse to keep warm
starts lean.
"""

from __future__ import annotations

import sys

from launcher import settings
from launcher.errors import ExitCode, LauncherError

LAUNCHER_COMMANDS = ("cache", "bundle", "doctor")
GLOBAL_FLAGS = {"-q": "quiet", "--quiet": "quiet", "-v": "verbose", "--verbose": "verbose",
                "--bare": "bare"}  # fmt: skip
SANDBOX_COMMANDS = {
    "check": "self-test of the sandbox (git, CA bundle, read-only root, no shell, no caps)",
    "review": "review a pull request or a local checkout",
    "serve": "run the webhook gateway",
}

HELP = """\
usage: auto-review [-q|--quiet] [-v|--verbose] [--bare] COMMAND [ARGS...]

Pull-request review gateway in one file; the gateway runs sandboxed under an
OCI runtime (runc, crun, youki or gVisor's runsc) from a read-only rootfs cached
on first run.

Sandboxed commands (run inside the rootfs, arguments passed through):
{sandboxed}

Launcher commands (run on the host):
  cache       prepare | list | gc | clear | verify | pin | unpin | path
  bundle      info [--json] | export --oci DIR | --docker-archive FILE | --seccomp FILE
  doctor      check this host, then start a sandbox to prove it [--json]

Options:
  -q, --quiet    no progress bar while unpacking
  -v, --verbose  say which runtime and cache are used
  --bare         run without the sandbox (only inside a container); also AUTO_REVIEW_BARE=1
  --version      print the launcher and bundle version
  -h, --help     this help

Environment: AUTO_REVIEW_CACHE_DIR, AUTO_REVIEW_STATE_DIR, AUTO_REVIEW_BUNDLE (pin a
version), AUTO_REVIEW_RUNTIME, AUTO_REVIEW_CA_FILE, AUTO_REVIEW_BARE;
GITHUB_APP_PRIVATE_KEY_FILE (a host file: the GitHub App's key, sent in as a secret).
"""


def print_help() -> None:
    sandboxed = "\n".join(f"  {name:<11} {text}" for name, text in SANDBOX_COMMANDS.items())
    sys.stdout.write(HELP.format(sandboxed=sandboxed))


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
    if rest and rest[0] in LAUNCHER_COMMANDS:
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
            print_help()
            return ExitCode.OK if rest else ExitCode.USAGE
        command = rest[0]
        if command == "--version":
            from launcher.cli.commands import print_version

            return print_version()
        if command in LAUNCHER_COMMANDS:
            from launcher.cli.commands import run_launcher_command

            return run_launcher_command(rest, opts)
        if command.startswith("-"):
            raise_usage(f"unknown option {command}")
        settings.check()
        from launcher.sandbox.run import run_sandboxed

        return run_sandboxed(rest, opts)
    except LauncherError as exc:
        sys.stderr.write(exc.one_line() + "\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def raise_usage(message: str) -> None:
    from launcher.errors import UsageError

    raise UsageError(message, "see: auto-review --help")
