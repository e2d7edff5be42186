"""What the command line accepts, refuses and explains, before anything is unpacked.

The launcher checks a sandboxed command's arguments on the host from a table
(launcher/cli/grammar.py) that must say what the gateway's own argparse parsers say;
the help lists every option and the same environment variables as README; a typo or a
bad setting is one line and a distinct exit code on a cold cache that stays empty.
Real single file for what a user runs; the gateway's parsers imported as they are.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_app

from launcher.cli import commands, grammar

sys.path.insert(0, str(ROOT / "payload" / "gateway"))
from auto_review_gateway import cli as gateway_cli

VERBS = "check, review, serve, preflight, webhook, cache, bundle, doctor"


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """name -> parser of each subcommand (aliases included)."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def grammar_of(parser: argparse.ArgumentParser) -> dict:
    """What grammar.py keeps of one gateway command, read from its argparse parser."""
    options: dict[str, object] = {}
    required: list[str] = []
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        [name] = action.option_strings  # one spelling each: the table has no short forms
        if action.nargs == 0:
            options[name] = grammar.FLAG
        elif action.choices is not None:
            options[name] = tuple(action.choices)
        else:
            assert action.nargs is None, f"{name}: the table knows one value or none"
            options[name] = grammar.VALUE
        if action.required:
            required.append(name)
    one_of = [
        tuple(a.option_strings[0] for a in group._group_actions)
        for group in parser._mutually_exclusive_groups
        if group.required
    ]
    assert all(g.required for g in parser._mutually_exclusive_groups), "only required groups"
    actions = {
        name: sum(1 for a in sub._actions if not a.option_strings)
        for name, sub in subparsers(parser).items()
    }
    verbs = [
        tuple(a.choices)
        for a in parser._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
    ]
    return {"options": options, "required": tuple(required), "one_of": tuple(one_of),
            "actions": actions, "verbs": verbs[0] if verbs else None}  # fmt: skip


def test_the_hosts_table_says_what_the_gateways_parsers_say() -> None:
    choices = subparsers(gateway_cli.build_parser())
    own = {name: parser.prog.rsplit(" ", 1)[1] for name, parser in choices.items()}
    assert {name for name, canonical in own.items() if name == canonical} == set(grammar.OPTIONS)
    assert {name: c for name, c in own.items() if name != c} == grammar.ALIASES
    for name in grammar.OPTIONS:
        seen = grammar_of(choices[name])
        assert seen["options"] == grammar.OPTIONS[name], name
        assert seen["required"] == grammar.REQUIRED.get(name, ()), name
        assert seen["one_of"] == grammar.ONE_OF.get(name, ()), name
        assert seen["actions"] == grammar.ACTIONS.get(name, {}), name
        assert seen["verbs"] == grammar.VERBS.get(name), name


def test_a_changed_gateway_option_breaks_the_comparison() -> None:
    """Control: the comparison above sees a drift."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--since", metavar="REF")
    assert grammar_of(parser)["options"] != grammar.OPTIONS["check"]


def test_every_option_has_help_and_the_gateway_says_auto_review() -> None:
    parsers = [gateway_cli.build_parser(), commands.build_parser()]
    while parsers:
        parser = parsers.pop()
        assert parser.prog.startswith("auto-review"), parser.prog
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers += list(action.choices.values())
            elif action.dest != "help":
                assert action.help, f"{parser.prog} {action.dest}: no help text"


@pytest.mark.parametrize(
    "args",
    [("chek",), ("check", "--jsn"), ("review", "--path", ".", "--base", "main", "--fromat", "x"),
     ("review", "--base", "main"), ("serve", "extra"), ("--nope",)],
    ids=["verb", "option", "review-option", "required", "extra", "flag"],
)  # fmt: skip
def test_a_typo_on_a_cold_cache_creates_nothing(app: Path, tmp_path: Path, args: tuple) -> None:
    cache = tmp_path / "cache"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AUTO_REVIEW_CACHE_DIR": str(cache),
           "AUTO_REVIEW_STATE_DIR": str(tmp_path / "state")}  # fmt: skip
    result = run_app(app, *args, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("auto-review: ") and "gateway" not in line
    if args[0] in ("chek", "--nope"):
        assert VERBS in line
    else:
        assert f"auto-review {args[0]} --help" in line
    assert not cache.exists() and not (tmp_path / "state").exists()


def test_a_typo_names_the_nearest_verb_and_option(app: Path, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "AUTO_REVIEW_CACHE_DIR": str(tmp_path / "cache")}
    assert "(did you mean check?)" in run_app(app, "chek", env=env).stderr
    assert "(did you mean --json?)" in run_app(app, "check", "--jsn", env=env).stderr
    placed = run_app(app, "check", "--bare", env=env).stderr
    assert "--bare goes before the command" in placed and "auto-review --bare check" in placed
    debug = run_app(app, "--debug", "check", env=env)  # the gateway's option goes after
    assert debug.returncode == 2 and "--debug goes after the command" in debug.stderr


def test_a_bad_setting_is_78_at_once(app: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AUTO_REVIEW_CACHE_DIR": str(cache)}
    for name, value in (("AUTO_REVIEW_LOCK_TIMEOUT", "abc"), ("AUTO_REVIEW_BARE", "yes"),
                        ("AUTO_REVIEW_HOST_LOOPBACK", "true"), ("AUTO_REVIEW_NETWORK", "bridge"),
                        ("AUTO_REVIEW_CONTAINER_ID", "-x")):  # fmt: skip
        for args in (("check",), ("cache", "prepare")):
            result = run_app(app, *args, env={**base, name: value})
            assert result.returncode == 78, (name, args, result.stderr)
            [line] = result.stderr.splitlines()
            assert f"{name}={value!r}" in line and " -- " in line  # the value, then the fix
            assert not cache.exists(), (name, args)


def readme_names() -> set[str]:
    """Every variable README documents: the names in the first cell of a table row (its
    environment table) and every `NAME=value` it shows (the Configure lists, examples)."""
    text = (ROOT / "README.md").read_text()
    cells = re.findall(r"^\| ([^|]*`[A-Z][^|]*)\|", text, re.M)
    rows = {name for cell in cells for name in re.findall(r"`([A-Z][A-Z0-9_]+)", cell)}
    settings = re.findall(r"(?<![\w$])([A-Z][A-Z0-9]*_[A-Z0-9_]+)=", text)
    return rows | set(settings)


def test_help_and_readme_list_the_same_variables(app: Path) -> None:
    from launcher.sandbox.gateway_env import ALLOWED

    shown = run_app(app, "--help").stdout
    env_part = shown.split("\nEnvironment (on the host):\n", 1)[1].split("\nExit codes:")[0]
    in_help = set(re.findall(r"\b[A-Za-z][A-Za-z0-9_]*_[A-Za-z0-9_]+\b|\bTZ\b", env_part))
    assert set(ALLOWED) <= in_help  # what the launcher passes in is what help names
    in_help = {name.upper() for name in in_help}  # README names https_proxy as HTTPS_PROXY
    documented = readme_names()
    assert in_help == documented, (
        f"only in --help: {sorted(in_help - documented)};"
        f" only in README: {sorted(documented - in_help)}"
    )


def test_help_names_every_option_of_every_command(app: Path) -> None:
    shown = run_app(app, "--help").stdout
    options = {o for table in grammar.OPTIONS.values() for o in table}
    parsers = [commands.build_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers += list(action.choices.values())
                options |= set(action.choices)
            else:
                options |= {o for o in action.option_strings if o.startswith("--")}
    options -= {"--help", "probe"}
    assert {o for o in options if o not in shown} == set()
