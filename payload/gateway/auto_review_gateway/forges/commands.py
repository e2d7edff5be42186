"""The ``issue_comment`` rule both forges share: a new comment on an open pull request
that mentions ``@<AR_BOT_NAME>`` and says ``re-review``, by an author the forge accepts,
queues a forced review of the PR's current head.

The head is read from the forge when the job runs, not here: a webhook's answer must
reach the forge within its delivery timeout (a few seconds), so this makes no forge call.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from auto_review_gateway.intake.endpoint import Intake, Reply, enqueue
from auto_review_gateway.intake.fields import (
    BadRequest,
    want_clone_url,
    want_number,
    want_obj,
    want_repository,
)

_RE_REVIEW = re.compile(r"\bre-review\b", re.IGNORECASE)


def mentions_re_review(body: str, bot_name: str) -> bool:
    """True if ``body`` mentions ``@bot_name`` (as a whole user name) and says ``re-review``."""
    mention = re.compile(rf"(?<![\w@/.-])@{re.escape(bot_name)}(?![\w-])", re.IGNORECASE)
    return bool(mention.search(body)) and bool(_RE_REVIEW.search(body))


def re_review_comment(
    intake: Intake,
    doc: dict[str, Any],
    delivery: str | None,
    *,
    on_pull: Callable[[dict[str, Any], dict[str, Any]], bool],
    author_refusal: Callable[[Intake, dict[str, Any]], str | None],
    owner_keys: tuple[str, ...],
) -> Reply:
    """An ``issue_comment`` delivery: enqueue a forced review, or say why not.

    The forge supplies what differs: ``on_pull(issue, doc)``, whether the comment is on
    a pull request; ``author_refusal(intake, comment)``, why its author may not ask
    (None if they may); ``owner_keys``, where ``repository.owner`` keeps its name.
    """
    if doc.get("action") != "created":
        return Reply(200, {"ignored": "only new comments are read"})
    issue = want_obj(doc, "issue", "payload")
    if not on_pull(issue, doc):
        return Reply(200, {"ignored": "comment on an issue, not a pull request"})
    comment = want_obj(doc, "comment", "payload")
    body = comment.get("body")
    if not isinstance(body, str) or not mentions_re_review(body, intake.bot_name):
        return Reply(200, {"ignored": "comment does not ask for a re-review"})
    refusal = author_refusal(intake, comment)
    if refusal is not None:
        return Reply(200, {"ignored": refusal})
    if issue.get("state") == "closed":
        return Reply(200, {"ignored": "pull request is closed"})
    owner, repo, repository = want_repository(doc, owner_keys)
    number = want_number(issue.get("number"), "issue.number")
    try:
        clone_url = want_clone_url(repository.get("clone_url"), "repository.clone_url")
    except BadRequest:
        clone_url = intake.forge.repo_clone_url(owner, repo)
    # Queued without a head: the worker reads the PR's current head when it runs.
    request = intake.job_request(
        owner=owner,
        repo=repo,
        pr_number=number,
        head_sha="",
        base_ref="",
        clone_url=clone_url,
        reason="issue_comment:re-review",
        delivery_id=delivery,
        force=True,
    )
    return enqueue(intake, request)
