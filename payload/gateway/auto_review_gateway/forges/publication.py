"""One pull request's review on its way to its forge (:class:`Publication`): the same
order on Forgejo and GitHub, for the server's jobs and for ``review --post``.

The ``auto_review`` status is pending from construction; :meth:`Publication.finish`
posts the review, then the final status (success for a pass or warn verdict, failure
for fail); :meth:`Publication.error` marks the run as failed, best effort. A bad
``OWNER/REPO#N`` (EXIT_USAGE) is found before anything is sent, and no message the
caller sees carries one of the client's tokens.
"""

from __future__ import annotations

from auto_review_gateway.core import httpjson
from auto_review_gateway.core.model import EXIT_POST, Review, ReviewError
from auto_review_gateway.forges.client import ForgeClient, parse_pr


class Publication:
    """See the module doc. ``key`` names one run of one job: a review of that run
    already on the pull request is not posted again."""

    def __init__(self, pr: str, sha: str, client: ForgeClient, *, key: str | None = None) -> None:
        self.owner, self.repo, self.index = parse_pr(pr)
        self.client = client
        self.sha = sha
        self.key = key
        try:
            self._status("pending", "auto-review is reviewing")
        except ReviewError as exc:
            self.error("auto-review could not post its review")
            raise self._failure(exc) from None

    def _redact(self, text: str) -> str:
        for secret in self.client.secrets():
            text = text.replace(secret, "***")
        return text

    def _failure(self, exc: ReviewError) -> httpjson.HttpError:
        """``exc`` as a posting failure on this PR, keeping whether it is transient (only
        an HTTP failure may be: a refused name or an unusable answer stays refused)."""
        where = f"{self.owner}/{self.repo}#{self.index}"
        return httpjson.HttpError(
            self._redact(f"posting the review to {where} failed: {exc}"),
            EXIT_POST,
            getattr(exc, "status", None),
            transient=getattr(exc, "transient", False),
            retry_after=getattr(exc, "retry_after", None),  # a rate limit's wait, for
            min_wait=getattr(exc, "min_wait", None),  # the queue's retry (retry_policy)
        )

    def _status(self, state: str, description: str) -> None:
        self.client.set_status(self.owner, self.repo, self.sha, state, self._redact(description))

    def finish(self, review: Review) -> None:
        """Post the review, then status success (verdict pass/warn) or failure (fail)."""
        try:
            self.client.post_review(self.owner, self.repo, self.index, review, key=self.key)
            final = "failure" if review.verdict == "fail" else "success"
            self._status(final, review.summary)
        except ReviewError as exc:
            self.error("auto-review could not post its review")
            raise self._failure(exc) from None
        except BaseException:  # a bug or an interrupt: never leave the status pending
            self.error("auto-review could not post its review")
            raise

    def error(self, description: str) -> None:
        """Status error, best effort: the failure that led here is the one to report."""
        try:
            self._status("error", description)
        except ReviewError:
            pass
