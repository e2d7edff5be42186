"""`auto-review --help`: every command, every option and every environment variable.

The environment list is the one README's "Environment" table and its "Configure"
lists document (tests/test_cli_grammar.py compares the two); the variables passed into
the sandbox come from the allowlist that passes them (launcher.sandbox.gateway_env).
Imported only when help is asked for.
"""

from __future__ import annotations

import sys
import textwrap

from launcher.cli.grammar import SYNOPSIS

DESCRIPTIONS = {
    "check": "self-test inside the sandbox; exit 1 if an item fails",
    "review": "review a pull request or a local checkout",
    "serve": "run the webhook gateway",
    "preflight": "check forge, token, scopes, webhook secret, model",
    "webhook": "register, list or test the forge's webhook",
}

# The launcher's own settings (read on the host), in README's order.
LAUNCHER_ENV = (
    ("AUTO_REVIEW_CACHE_DIR", "cache root (default ~/.cache/auto-review)"),
    ("AUTO_REVIEW_STATE_DIR", "state dir, bound at /var/lib/auto-review"),
    ("AUTO_REVIEW_BUNDLE", "run a cached version: label, digest or prefix"),
    ("AUTO_REVIEW_RUNTIME", "runc, crun, youki, runsc, or an absolute path"),
    ("AUTO_REVIEW_CA_FILE", "a PEM file added to the CA bundle inside"),
    ("AUTO_REVIEW_BARE", "1: as --bare (containers only); force: anywhere"),
    ("AUTO_REVIEW_LOCK_TIMEOUT", "seconds to wait for another unpacking (300)"),
    ("AUTO_REVIEW_NETWORK", "isolated (default, slirp4netns) or host"),
    ("AUTO_REVIEW_HOST_LOOPBACK", "1: reach this host's 127.0.0.1 as 10.0.2.2"),
    ("AUTO_REVIEW_CONTAINER_ID", "a fixed container name for a service"),
    ("AR_GATEWAY_BIND", "serve's ADDR:PORT (127.0.0.1:8080), as --listen"),
    ("GITHUB_APP_PRIVATE_KEY_FILE", "the GitHub App's key file, sent in as a secret"),
)

HELP = """\
usage: auto-review [-q|--quiet] [-v|--verbose] [--bare] COMMAND [ARGS...]

Pull-request review gateway in one file; the gateway runs sandboxed under an
OCI runtime (runc, crun, youki or gVisor's runsc) from a read-only rootfs cached
on first run.

Sandboxed commands (run inside the rootfs; `auto-review COMMAND --help` explains
each option):
{sandboxed}

Launcher commands (run on the host):
  cache       prepare | path | list [--json] | verify [VERSION] | pin VERSION |
              unpin VERSION | gc [--keep N] [--older-than DAYS] [--dry-run] |
              clear [--dry-run]
              (gc keeps pinned versions; clear removes them, and their pins)
  bundle      info [--json] | sbom | export (--oci DIR [--zstd] |
              --docker-archive FILE | --seccomp FILE)
  doctor      check this host, then start a sandbox to prove it [--json]

Options:
  -q, --quiet    no progress bar while unpacking
  -v, --verbose  say which runtime and cache are used
  --bare         no sandbox: only inside a container (AUTO_REVIEW_BARE)
  --version      print the launcher and bundle version
  --debug        after a sandboxed command: an internal error's traceback too
  -h, --help     this help

Environment (on the host):
{launcher_env}

Passed into the sandbox (the gateway's settings, README "Running the gateway"):
{passed}

Exit codes: 0 done; 1 Python too old; 2 bad usage; 65 payload corrupt; 66 no
such version; 69 no runtime; 71 the sandbox cannot start; 73 cache or state dir
unusable; 74 no space; 75 in use or a lock timed out; 78 a bad setting. A
sandboxed command's own code passes through (check: 1 when an item fails;
review: 3-8; 70 an internal error; see README, "Exit codes").
"""


def help_text() -> str:
    """The whole help, as printed."""
    from launcher.sandbox.gateway_env import ALLOWED

    sandboxed = []
    for name, synopsis in SYNOPSIS.items():
        sandboxed.append(f"  {name:<12}{DESCRIPTIONS[name]}")
        sandboxed += textwrap.wrap(
            synopsis,
            80,
            initial_indent=" " * 14,
            subsequent_indent=" " * 14,
            break_on_hyphens=False,
        )
    width = max(len(name) for name, _ in LAUNCHER_ENV) + 4
    launcher_env = "\n".join(
        textwrap.fill(f"  {name:<{width - 2}}{text}", 80, subsequent_indent=" " * width)
        for name, text in LAUNCHER_ENV
    )
    ours = {name for name, _ in LAUNCHER_ENV}
    passed = textwrap.fill(
        ", ".join(name for name in ALLOWED if name not in ours),
        80,
        initial_indent="  ",
        subsequent_indent="  ",
        break_on_hyphens=False,
    )
    return HELP.format(
        sandboxed="\n".join(sandboxed), launcher_env=launcher_env, passed=passed
    )  # fmt: skip


def print_help() -> None:
    """Write the help to stdout."""
    sys.stdout.write(help_text())
