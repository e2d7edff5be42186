"""``preflight``: check the deployment from the gateway's side, before the first webhook.

It runs where ``serve`` runs (inside the sandbox, with the settings and secrets the
launcher passes ``serve``) and asks, one line each, with the fix for what fails:

* ``settings``: would ``serve`` start with them (the same :class:`serve.ServeConfig`);
* ``forge``, ``token``, ``scopes``: the forge answers (and its version), the token is
  valid and whose it is, and it may do what the gateway does (Forgejo:
  :mod:`forges.forgejo.access`; GitHub: :mod:`forges.github.access`);
* ``webhook secret``: at least 32 bytes that carry entropy (:func:`intake.auth.weak_secret`);
* ``model server``, ``model``, ``completion``: ``/v1/models`` answers and lists
  ``LLM_REASONING_MODEL``, and one tiny completion comes back under the strict schema
  (:mod:`review.llm.probe`); skipped without ``LLM_BASE_URL``.

Nothing is changed on the forge or the model server. No secret is printed: every line
is built from names, lengths and the servers' answers, and is redacted of every secret
value the gateway holds before it is written. Exit status 0 when nothing FAILs (a WARN
or SKIP does not), 6 (EXIT_CONFIG) when something does.
"""

from __future__ import annotations

import argparse
import json
import os

TYPE_CHECKING = False  # typing costs start-up time the other commands should not pay
if TYPE_CHECKING:
    from auto_review_gateway.core.checks import Check

NAME = "preflight"
HELP = "check the forge, the token and its scopes, the webhook secret and the model server"


def configure(parser: argparse.ArgumentParser) -> None:
    """``--json``, as ``check`` and the launcher's ``doctor`` have."""
    parser.add_argument("--json", action="store_true", help='print {"ok": ..., "items": [...]}')


def redact_secrets(text: str) -> str:
    """``text`` with every secret value the gateway holds replaced by ``***``."""
    from auto_review_gateway.core import hostlink
    from auto_review_gateway.forges.github import config as github_config

    values = [os.environ.get(name, "").strip() for name in hostlink.SECRET_NAMES]
    try:  # a GitHub token may come from the state dir's github.env
        values.append(github_config.settings(os.environ).get("GITHUB_TOKEN", ""))
    except Exception:
        pass  # redacting must not fail: what it can read, it redacts
    for value in values:
        for secret in (value, *value.splitlines()):
            if len(secret.strip()) >= 4:
                text = text.replace(secret.strip(), "***")
    return text


def settings_checks() -> list[Check]:
    """``settings``, then the forge's checks and the webhook secret's."""
    from auto_review_gateway.commands import serve
    from auto_review_gateway.core.checks import FAIL, PASS, Check
    from auto_review_gateway.core.model import ReviewError
    from auto_review_gateway.forges.github import client as github

    env = os.environ
    out = []
    try:
        config = serve.ServeConfig(env)
        forge = "GitHub" if config.github else "Forgejo"
        out.append(Check("settings", PASS, f"serve would start: {forge}, state dir set"))
    except serve.ConfigError as exc:
        fix = "set what the line names (README, 'Running the gateway for a forge')"
        out.append(Check("settings", FAIL, str(exc), fix))
    try:
        on_github = github.configured(env)
        if on_github:
            from auto_review_gateway.forges.github import access as github_access

            out += github_access.checks(github.GitHub(github.load_config(env)))
        else:
            from auto_review_gateway.forges.forgejo import access as forgejo_access
            from auto_review_gateway.forges.forgejo.config import load_config

            out += forgejo_access.checks(load_config(env))
    except ReviewError as exc:
        fix = "set FORGEJO_BASE_URL and AR_FORGEJO_TOKEN, or GitHub's settings"
        out.append(Check("forge", FAIL, " ".join(str(exc).split()), fix))
    return [*out, secret_check(env.get("WEBHOOK_SECRET", ""))]


def secret_check(value: str) -> Check:
    """The webhook secret's strength (its length and measure only)."""
    from auto_review_gateway.core.checks import FAIL, PASS, Check
    from auto_review_gateway.intake.auth import weak_secret

    fix = (
        "set WEBHOOK_SECRET to the output of `openssl rand -hex 32` and enter the same"
        " secret in the forge's webhook (auto-review webhook register does)"
    )
    secret = value.strip().encode("utf-8")
    if not secret:
        return Check("webhook secret", FAIL, "WEBHOOK_SECRET is not set", fix)
    why = weak_secret(secret)
    if why:
        return Check("webhook secret", FAIL, f"WEBHOOK_SECRET is weak: {why}", fix)
    return Check("webhook secret", PASS, f"{len(secret)} bytes, no weak pattern")


def run(args: argparse.Namespace) -> int:
    """Run every check, print them, return 0 or EXIT_CONFIG (see the module doc)."""
    from auto_review_gateway.core.escape import visible
    from auto_review_gateway.core.model import EXIT_CONFIG
    from auto_review_gateway.review.llm import probe

    items = settings_checks() + probe.checks(os.environ)
    failed = [item for item in items if item.failed]
    if args.json:
        doc = {"ok": not failed, "items": [item.as_dict() for item in items]}
        print(redact_secrets(json.dumps(doc, indent=2)))
    else:
        width = max(len(item.name) for item in items)
        for item in items:
            line = f"{item.state:<4} {item.name:<{width}} {item.detail}"
            if item.state != "PASS" and item.fix:
                line += f" -- fix: {item.fix}"
            print(visible(redact_secrets(line)))
        if failed:
            print(f"{len(failed)} problem(s): {', '.join(item.name for item in failed)}")
        else:
            print(f"ready: all {len(items)} checks pass")
    return EXIT_CONFIG if failed else 0
