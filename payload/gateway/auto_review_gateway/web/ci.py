"""``POST /reviews/ci``: a review request from a CI job, for the commit it tested.

For a CI job that wants a review of the commit it tested: ``Authorization: Bearer
<AR_CI_REVIEW_TOKEN>`` (404 when no token is configured, 401 when it does not match),
body ``{"owner", "repo", "pr_number", "head_sha", "force"}``. The PR is read from the
forge; if its head is no longer ``head_sha`` the answer is 409 with the current head. A PR
the forge does not know answers 404, a forge API failure 502; the rest of the answers
are :func:`intake.enqueue`'s.

Unlike a webhook, this handler asks the forge (``repoGetPullRequest``, one try, at most
FORGE_TIMEOUT seconds): the CI client waits for the answer, which says whether the
head it tested is still the PR's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from auto_review_gateway.core import httpjson
from auto_review_gateway.core.model import ReviewError
from auto_review_gateway.forges.forgejo import client as forgejo
from auto_review_gateway.forges.forgejo.config import ForgejoConfig
from auto_review_gateway.intake.auth import bearer_ok
from auto_review_gateway.intake.endpoint import Intake, Reply, enqueue
from auto_review_gateway.intake.fields import (
    BadRequest,
    parse_json,
    want_clone_url,
    want_name,
    want_number,
    want_obj,
    want_ref,
    want_sha,
)

FORGE_TIMEOUT = 10.0


class ForgeError(Exception):
    """The forge could not be asked; ``status`` is its HTTP status, if it answered."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


def get_pull(forge: ForgejoConfig, owner: str, repo: str, number: int) -> dict[str, Any]:
    """``repoGetPullRequest`` (GitHub: ``pulls/get``) once, with a short timeout: the PR
    JSON; ForgeError on failure."""
    timeout = min(forge.timeout, FORGE_TIMEOUT)
    if getattr(forge, "kind", "") == "github":
        from auto_review_gateway.jobs import github_job

        client: Any = github_job.short_client(forge, timeout)  # type: ignore[arg-type]
    else:
        client = forgejo.Forgejo(forge, retry=None, timeout=timeout)
    try:
        doc = client.get_pull_doc(owner, repo, number)
    except httpjson.HttpError as exc:
        raise ForgeError(str(exc), exc.status) from None
    except ReviewError as exc:
        raise ForgeError(str(exc), None) from None
    if not isinstance(doc, dict):
        raise ForgeError("the forge's pull request answer is not an object", None)
    return doc


def _forge_reply(intake: Intake, exc: ForgeError, owner: str, repo: str, number: int) -> Reply:
    if exc.status == 404:
        return Reply(404, {"error": f"pull request {owner}/{repo}#{number} not found"})
    intake.log(f"auto-review: forge lookup failed: {intake.safe(str(exc))}")
    return Reply(502, {"error": "the forge could not be asked", "detail": intake.safe(str(exc))})


def _fetch_pull(
    intake: Intake, owner: str, repo: str, number: int
) -> Reply | tuple[dict[str, Any], tuple[str, str, str]]:
    """The pull request from the forge and its (head sha, base ref, state), or the reply
    that says why it could not be had (404 unknown, 502 forge failure or bad answer)."""
    try:
        pull = get_pull(intake.forge, owner, repo, number)
    except ForgeError as exc:
        return _forge_reply(intake, exc, owner, repo, number)
    try:
        return pull, _pull_facts(pull)
    except BadRequest as exc:
        intake.log(f"auto-review: the forge's pull request answer is unusable: {exc}")
        return Reply(502, {"error": "the forge's pull request answer is unusable"})


def _pull_facts(pull: dict[str, Any]) -> tuple[str, str, str]:
    """(head sha, base ref, state) of a PR from the API."""
    head = want_obj(pull, "head", "pull_request")
    base = want_obj(pull, "base", "pull_request")
    state = pull.get("state") if isinstance(pull.get("state"), str) else "open"
    return want_sha(head.get("sha"), "head.sha"), want_ref(base.get("ref"), "base.ref"), state


def _api_clone_url(intake: Intake, pull: dict[str, Any], owner: str, repo: str) -> str:
    """``base.repo.clone_url`` of the PR, else ``<forge>/<owner>/<repo>.git``."""
    base = pull.get("base")
    base_repo = base.get("repo") if isinstance(base, dict) else None
    url = base_repo.get("clone_url") if isinstance(base_repo, dict) else None
    if isinstance(url, str) and url:
        try:
            return want_clone_url(url, "base.repo.clone_url")
        except BadRequest:
            pass
    return intake.forge.repo_clone_url(owner, repo)


def handle_ci(intake: Intake, headers: Mapping[str, str], raw: bytes) -> Reply:
    """``POST /reviews/ci``: authenticate, check the head is current, enqueue."""
    if not intake.ci_token:
        return Reply(404, {"error": "not found: /reviews/ci is disabled (no CI token set)"})
    if not bearer_ok(intake.ci_token, headers.get("Authorization")):
        return Reply(401, {"error": "missing or invalid token"}, {"WWW-Authenticate": "Bearer"})
    try:
        doc = parse_json(raw)
        owner = want_name(doc.get("owner"), "owner")
        repo = want_name(doc.get("repo"), "repo")
        number = want_number(doc.get("pr_number"), "pr_number")
        head_sha = want_sha(doc.get("head_sha"), "head_sha")
        force = doc.get("force", False)
        if not isinstance(force, bool):
            raise BadRequest("force must be true or false")
    except BadRequest as exc:
        return Reply(400, {"error": str(exc)})
    fetched = _fetch_pull(intake, owner, repo, number)
    if isinstance(fetched, Reply):
        return fetched
    pull, (current, base_ref, state) = fetched
    if current != head_sha:
        return Reply(409, {"error": "head moved", "head": current})
    if state == "closed":
        return Reply(409, {"error": "pull request is closed"})
    request = intake.job_request(
        owner=owner,
        repo=repo,
        pr_number=number,
        head_sha=head_sha,
        base_ref=base_ref,
        clone_url=_api_clone_url(intake, pull, owner, repo),
        reason="ci",
        delivery_id=None,
        force=force,
    )
    return enqueue(intake, request)
