"""The worker's side of the commands in PR comments (the webhook's side, and the job's
``reason`` that carries a command, are :mod:`auto_review_gateway.forges.commands`).

:func:`run_command` checks that the comment's author may command the bot, applies the
command and answers it visibly with a reply comment:

* who may: on GitHub, an ``author_association`` at least ``GITHUB_MIN_ASSOCIATION``
  (read from the webhook's payload, carried by the job); on Forgejo, ``write``, ``admin``
  or ``owner`` in the collaborator permission API (``repoGetRepoPermissions``; the bot's
  account must be an admin of the repository to ask about others), each answer cached
  :data:`PERMISSION_TTL` seconds. Anyone else gets a one-line refusal, at most one per
  PR every ``history.REFUSAL_INTERVAL`` seconds (:meth:`PrHistory.may_refuse`), so a
  stranger cannot make the bot flood a PR;
* ``help`` (and any unknown word): the list of commands; ``pause`` / ``resume``: no
  automatic reviews of the PR until resumed (:meth:`PrHistory.set_paused`), confirmed
  in one line; ``re-review`` / ``full-review``: confirmed in one line, and the review to
  run is returned (reason ``command:re-review`` / ``command:full-review``: the latter
  reviews the whole PR, ignoring what was reviewed before).

:func:`before_review` is what a forge's job calls first: a command's job goes to
:func:`run_command`, and the review it may ask for goes on to :mod:`follow`, which
skips the automatic reviews (a ``pull_request`` webhook, ``/reviews/ci``) of a paused
PR.

A job runs at least once (``jobs/queue.py``): one that runs again after a crash between
its reply and its completion answers again; pausing twice is harmless.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from auto_review_gateway.core import httpjson
from auto_review_gateway.core.prstate import PrKey
from auto_review_gateway.forges.commands import COMMANDS, Command, bot_name, parse_reason
from auto_review_gateway.forges.github.webhooks import association_ok
from auto_review_gateway.jobs.history import PrHistory
from auto_review_gateway.jobs.spec import Job, JobRequest

PERMISSION_TTL = 60.0  # seconds a Forgejo permission answer is trusted
WRITERS = frozenset({"write", "admin", "owner"})

_DOES = {
    "re-review": "review what changed since the last review (the current head)",
    "full-review": "review the whole pull request again, ignoring earlier reviews",
    "pause": "no automatic reviews of this pull request until `resume`",
    "resume": "review new pushes automatically again",
    "help": "this list",
}


class Permissions:
    """Forgejo's answers to "may this user write here?", each kept ``ttl`` seconds of
    ``clock``; safe to share between the workers' threads."""

    def __init__(
        self, ttl: float = PERMISSION_TTL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """An empty cache."""
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str, str, str], tuple[float, bool]] = {}

    def may_write(self, client: Any, owner: str, repo: str, login: str) -> bool:
        """Whether ``login`` may write to ``owner/repo`` (asked of ``client``, a Forgejo
        client, unless a fresh answer is cached). HttpError when the forge will not say."""
        where = getattr(getattr(client, "config", None), "api_url", "")
        key = (where, owner.lower(), repo.lower(), login.lower())
        now = self.clock()
        with self._lock:
            known = self._known.get(key)
            if known is not None and now - known[0] < self.ttl:
                return known[1]
        allowed = client.permission(owner, repo, login) in WRITERS
        with self._lock:
            if len(self._known) > 10_000:  # a bound, not a policy: old answers go
                self._known.clear()
            self._known[key] = (now, allowed)
        return allowed


PERMISSIONS = Permissions()  # the process's cache


def help_text(bot: str, paused: bool) -> str:
    """The reply to ``help``: every command (each in a code span, so that the bot's own
    comment commands nothing) and whether the PR is paused."""
    rows = "\n".join(f"| `@{bot} {word}` | {_DOES[word]} |" for word in COMMANDS)
    state = "paused" if paused else "on"
    return (
        f"Commands for {bot}, in a comment on this pull request (one per comment; people"
        f" who may write to the repository). Automatic reviews here: **{state}**.\n\n"
        f"| command | what it does |\n| --- | --- |\n{rows}\n"
    )


def _allowed(command: Command, client: Any, req: JobRequest, permissions: Permissions) -> bool:
    if command.association is not None:  # GitHub: the payload said
        minimum = getattr(getattr(client, "config", None), "min_association", "COLLABORATOR")
        return association_ok(command.association, minimum)
    if not hasattr(client, "permission"):
        return False
    return permissions.may_write(client, req.owner, req.repo, command.login)


def _refusal(command: Command, bot: str, why: str) -> str:
    return f"@{command.login}: {why}; `{command.word}` was not done ({bot})."


def run_command(
    job: Job,
    client: Any,
    history: PrHistory,
    key: PrKey,
    *,
    bot: str | None = None,
    permissions: Permissions = PERMISSIONS,
) -> JobRequest | None:
    """Run the command ``job`` carries on ``key`` and answer it on the PR (see the module
    doc); the review to run (re-review, full-review), else None. A job whose reason is
    no command is returned unchanged."""
    req = job.request
    command = parse_reason(req.reason)
    if command is None:
        if req.reason in ("command:re-review", "command:full-review"):
            return req  # a command already run: its review
        if req.reason.startswith("command:"):
            _log(f"job {job.id}: {req.pr}: unusable command reason: not run")
            return None
        return req
    bot = bot_name(os.environ) if bot is None else bot
    try:
        allowed = _allowed(command, client, req, permissions)
        why = "only people who may write to this repository can command the bot"
    except httpjson.HttpError as exc:
        if exc.status not in (401, 403):
            raise
        allowed = False
        why = "the bot cannot check who may write here (its account needs admin on the repository)"
        _log(f"job {job.id}: {req.pr}: the forge refused the permission check (HTTP {exc.status})")
    if not allowed:
        if history.may_refuse(key):
            client.create_comment(req.owner, req.repo, req.pr_number, _refusal(command, bot, why))
        _log(f"job {job.id}: {req.pr}: {command.word} by {command.login} refused")
        return None
    if command.word == "help":
        text = help_text(bot, history.load(key).paused)
    elif command.word in ("pause", "resume"):
        pause = command.word == "pause"
        was = history.set_paused(key, pause)
        if pause:
            text = "Already paused." if was else "Paused: no automatic reviews of this PR."
            text += f" `@{bot} resume` resumes them; `@{bot} re-review` still reviews."
        else:
            text = "Resumed: new pushes are reviewed." if was else "Not paused: nothing to resume."
    else:
        text = (
            "Reviewing the whole pull request again."
            if command.word == "full-review"
            else "Reviewing the changes since the last review."
        )
    client.create_comment(req.owner, req.repo, req.pr_number, f"@{command.login}: {text}")
    if command.word in ("re-review", "full-review"):
        return dataclasses.replace(req, reason=f"command:{command.word}")
    return None


def pr_key(client: Any, req: JobRequest) -> PrKey:
    """The history's key of ``req``'s PR: the forge is its API URL (as ``follow.Run``'s)."""
    return PrKey(client.config.api_url, req.owner, req.repo, req.pr_number)


def before_review(job: Job, client: Any, history: PrHistory) -> JobRequest | None:
    """What a forge's job runs first: for a command's job, the command (the review it
    asks for, or None); any other job's request as it is (whether a paused PR is
    reviewed is :mod:`follow`'s to say)."""
    if not job.request.reason.startswith("command:"):
        return job.request
    return run_command(job, client, history, pr_key(client, job.request))


def _log(line: str) -> None:
    print(f"auto-review: {line}", file=sys.stderr, flush=True)
