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
        self.errored = False  # status error set: the failure was reported on the PR
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
        self.post(review)
        self.conclude(review)

    def post(self, review: Review) -> None:
        """Post ``review`` (once per run: see ``key``); on failure status error, raised."""
        with self._or_error():
            self.client.post_review(self.owner, self.repo, self.index, review, key=self.key)

    def conclude(self, review: Review, description: str | None = None) -> None:
        """The final status: failure for a fail verdict, else success; ``description``
        (default: the review's summary line)."""
        final = "failure" if review.verdict == "fail" else "success"
        with self._or_error():
            self._status(final, review.summary if description is None else description)

    def status(self, state: str, description: str) -> None:
        """Set the final status to ``state`` (a run that did not review: paused, skipped)."""
        with self._or_error():
            self._status(state, description)

    def _or_error(self) -> _OrError:
        return _OrError(self)

    def error(self, description: str) -> None:
        """Status error, best effort: the failure that led here is the one to report."""
        self.errored = True
        try:
            self._status("error", description)
        except ReviewError:
            pass


class _OrError:
    """A step of a publication: any failure leaves status error; a ReviewError is raised
    as a posting failure on this PR (see :meth:`Publication._failure`)."""

    def __init__(self, publication: Publication) -> None:
        self.publication = publication

    def __enter__(self) -> None:
        pass

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is None:
            return
        self.publication.error("auto-review could not post its review")
        if isinstance(exc, ReviewError):
            raise self.publication._failure(exc) from None
