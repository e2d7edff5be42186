"""``webhook register|list|test``: the forge's webhook to the gateway, through the forge's
API, with the settings and secrets ``serve`` gets (the forge from ``FORGEJO_BASE_URL`` /
``AR_FORGEJO_TOKEN`` or ``GITHUB_TOKEN``; the shared secret ``WEBHOOK_SECRET``).

* ``register --repo OWNER/NAME | --org ORG --url URL``: the gateway's hook (its URL's
  path is ``/webhooks/forgejo`` or ``/webhooks/github``) with exactly README's events,
  JSON, active, the secret. Idempotent: none yet, it is created; one that already has
  that URL, events and state is left alone ("unchanged": nothing is sent); otherwise it
  is edited in place (a changed ``--url`` updates the same hook). A weak secret is
  refused (:func:`intake.auth.weak_secret`).
* ``list``: every hook of the repository or organisation, the gateway's marked.
* ``test``: the forge sends a test delivery to the gateway's hook, and the gateway's
  answer is reported: on GitHub the ``ping`` GitHub delivers and its ``status_code``
  from the hook's deliveries; Forgejo's API says nothing of deliveries, so after asking
  Forgejo for its test delivery (``repoTestHook``) this command sends the same signed
  test delivery (a ``push``, as Forgejo's "Test Delivery") to the hook's URL itself and
  reports what the gateway answered: 200 means the URL and the secret match.

Exit status: 0 done (``test``: the gateway accepted the delivery); 1 the gateway did not
(its status is printed); 2 bad arguments; 6 a missing or weak setting (or a GitHub App,
whose one webhook is set in the App's settings); 7 the forge refused a call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

NAME = "webhook"
HELP = "register, list or test the forge's webhook to the gateway (--repo or --org)"
VERBS = ("register", "list", "test")
PING_TRIES = 20  # GitHub delivers a ping within seconds: this many looks, PING_WAIT apart
PING_WAIT = 0.5

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    """The verb, where (``--repo`` or ``--org``), the gateway's ``--url``, ``--json``."""
    parser.add_argument("verb", choices=VERBS, help="register, list or test")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--repo", metavar="OWNER/NAME", help="a repository's webhooks")
    where.add_argument("--org", metavar="ORG", help="a Forgejo organisation's webhooks")
    parser.add_argument(
        "--url", metavar="URL", help="register: the gateway's https://HOST/webhooks/FORGE URL"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _say(args: argparse.Namespace, lines: list[str], doc: dict[str, Any]) -> None:
    """``doc`` as JSON, or each of ``lines`` on a line of its own, escaped (a forge's
    text can hold no newline or terminal control that reaches the terminal)."""
    from auto_review_gateway.commands.preflight import redact_secrets
    from auto_review_gateway.core.escape import visible

    if args.json:
        print(redact_secrets(json.dumps(doc, indent=2)))
    for line in [] if args.json else lines:
        print(visible(redact_secrets(line)))


def _hooks(args: argparse.Namespace) -> Any:
    """The forge's hooks object for ``--repo`` / ``--org``, from serve's settings."""
    from auto_review_gateway.core.model import EXIT_CONFIG, EXIT_USAGE, ReviewError
    from auto_review_gateway.forges.github import client as github

    if github.configured(os.environ):
        config = github.load_config(os.environ)
        if config.app_id:
            raise ReviewError(
                "a GitHub App has one webhook, set in the App's settings (README, GitHub)"
                " -- fix: set it there, or use GITHUB_TOKEN for repository webhooks",
                EXIT_CONFIG,
            )
        if args.org is not None:
            raise ReviewError("--org is for Forgejo organisations -- fix: --repo", EXIT_USAGE)
        from auto_review_gateway.forges.github.hooks import Hooks as GitHubHooks

        return GitHubHooks(github.GitHub(config), args.repo)
    from auto_review_gateway.forges.forgejo.config import load_config
    from auto_review_gateway.forges.forgejo.hooks import Hooks as ForgejoHooks

    return ForgejoHooks(load_config(os.environ), repo=args.repo, org=args.org)


def gateway_url(url: str, path: str) -> bool:
    """Whether a hook's ``url`` points at a gateway: an http(s) URL, nothing in it a
    URL may not hold (space, control characters), its path ending in ``path``."""
    import urllib.parse

    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        return False
    parts = urllib.parse.urlsplit(url)
    return parts.scheme in ("http", "https") and parts.path.endswith(path)


def _ours(hooks: Any) -> list[dict[str, Any]]:
    """The summaries of the hooks that point at the gateway (:func:`gateway_url`)."""
    return [
        summary
        for summary in map(hooks.summary, hooks.list())
        if gateway_url(summary["url"], hooks.path)
    ]


def register(args: argparse.Namespace, hooks: Any) -> int:
    """Create the gateway's hook, or bring it to ``--url``, README's events, active."""
    import urllib.parse

    from auto_review_gateway.commands.preflight import secret_check
    from auto_review_gateway.core import httpjson
    from auto_review_gateway.core.model import EXIT_CONFIG, EXIT_USAGE, ReviewError

    path = hooks.path
    if not args.url:
        raise ReviewError(f"register needs --url https://HOST{path}", EXIT_USAGE)
    httpjson.check_url(args.url, what="--url", exit_code=EXIT_USAGE)
    if not urllib.parse.urlsplit(args.url).path.endswith(path):
        raise ReviewError(f"--url must end in {path}, the gateway's endpoint", EXIT_USAGE)
    secret = secret_check(os.environ.get("WEBHOOK_SECRET", ""))
    if secret.failed:
        raise ReviewError(f"{secret.detail} -- fix: {secret.fix}", EXIT_CONFIG)
    value = os.environ["WEBHOOK_SECRET"].strip()
    ours = _ours(hooks)
    if not ours:
        action, hook = "created", hooks.summary(hooks.create(args.url, value))
    elif hooks.matches(ours[0], args.url):
        action, hook = "unchanged", ours[0]
    else:
        action, hook = "updated", hooks.summary(hooks.edit(ours[0]["id"], args.url, value))
    where = args.repo or args.org
    text = f"{action} hook {hook['id']} on {where}: {hook['url']} ({', '.join(hook['events'])})"
    _say(args, [text], {"action": action, "hook": hook})
    return 0


def list_hooks(args: argparse.Namespace, hooks: Any) -> int:
    """Every hook, the gateway's marked."""
    summaries = [hooks.summary(h) for h in hooks.list()]
    for s in summaries:
        s["gateway"] = gateway_url(s["url"], hooks.path)
    lines = [
        f"{s['id']} {'active' if s['active'] else 'inactive'} {s['url']}"
        f" {','.join(s['events'])}{' (the gateway)' if s['gateway'] else ''}"
        for s in summaries
    ]
    _say(args, lines or [f"no webhooks on {args.repo or args.org}"], {"hooks": summaries})
    return 0


def test(args: argparse.Namespace, hooks: Any) -> int:
    """Have the forge deliver a test to the gateway's hook; report the gateway's answer."""
    from auto_review_gateway.core.model import EXIT_CONFIG, ReviewError

    ours = _ours(hooks)
    where = args.repo or args.org
    if not ours:
        raise ReviewError(
            f"no webhook of the gateway on {where} -- fix: auto-review webhook register"
            f" --{'repo' if args.repo else 'org'} {where} --url https://HOST{hooks.path}",
            EXIT_CONFIG,
        )
    hook = ours[0]
    if hooks.forge == "github":
        status, answer, how = _github_ping(hooks, hook["id"])
    else:
        asked = hooks.trigger(hook["id"])
        status, answer = _signed_test_delivery(hook["url"], where)
        how = ("Forgejo sent its test delivery; " if asked else "") + "a signed test delivery"
    ok = status is not None and 200 <= status < 300
    shown = "no answer yet" if status is None else f"HTTP {status}"
    text = f"hook {hook['id']} {hook['url']}: {how}: the gateway answered {shown}"
    if answer:
        text += f" {json.dumps(answer)[:200]}"
    _say(args, [text], {"hook": hook, "status": status, "answer": answer, "ok": ok})
    return 0 if ok else 1


def _github_ping(hooks: Any, hook_id: int) -> tuple[int | None, Any, str]:
    """``repos/ping-webhook``, then the new ``ping`` among the hook's deliveries."""
    import time

    before = {d.get("id") for d in hooks.deliveries(hook_id)}
    hooks.trigger(hook_id)
    for _ in range(PING_TRIES):
        for delivery in hooks.deliveries(hook_id):
            if delivery.get("id") not in before and delivery.get("event") == "ping":
                code = delivery.get("status_code")
                answer = {"status": delivery.get("status")}
                return (code if isinstance(code, int) else None), answer, "GitHub's ping"
        time.sleep(PING_WAIT)
    return None, None, "GitHub's ping (not delivered yet: see the hook's Recent Deliveries)"


def _signed_test_delivery(url: str, where: str) -> tuple[int | None, Any]:
    """A ``push`` shaped as Forgejo's test delivery, signed with ``WEBHOOK_SECRET``."""
    import hashlib
    import hmac
    import uuid

    from auto_review_gateway.core import httpjson
    from auto_review_gateway.core.model import EXIT_POST

    zero = "0" * 40
    body = {"ref": "refs/heads/main", "before": zero, "after": zero, "commits": [],
            "total_commits": 0, "repository": {"full_name": where}}  # fmt: skip
    raw = json.dumps(body).encode("utf-8")  # the bytes httpjson sends for this body
    key = os.environ.get("WEBHOOK_SECRET", "").strip().encode("utf-8")
    signature = hmac.new(key, raw, hashlib.sha256).hexdigest()
    delivery = str(uuid.uuid4())
    headers = {"X-Forgejo-Event": "push", "X-Forgejo-Event-Type": "push",
               "X-Forgejo-Delivery": delivery, "X-Forgejo-Signature": signature,
               "X-Gitea-Event": "push", "X-Gitea-Delivery": delivery,
               "X-Gitea-Signature": signature}  # fmt: skip
    try:
        return httpjson.request(
            "POST", url, body=body, headers=headers, timeout=10, exit_code=EXIT_POST,
            accept_status=range(400, 600),
        )  # fmt: skip
    except httpjson.HttpError as exc:
        return exc.status, {"error": str(exc)}


def run(args: argparse.Namespace) -> int:
    """Run the verb; one line and the exit status of any refusal (see the module doc)."""
    from auto_review_gateway.commands.preflight import redact_secrets
    from auto_review_gateway.core.escape import visible
    from auto_review_gateway.core.model import ReviewError

    try:
        hooks = _hooks(args)
        return {"register": register, "list": list_hooks, "test": test}[args.verb](args, hooks)
    except ReviewError as exc:
        message = visible(redact_secrets(" ".join(str(exc).split())))
        print(f"auto-review: webhook {args.verb}: {message}", file=sys.stderr, flush=True)
        return exc.exit_code
