"""The reconciler: webhooks lost while every replica was down are caught up.

Every ``AR_RECONCILE_INTERVAL`` seconds (600 by default; 0 turns it off) one replica
(the PostgreSQL store's :meth:`~pg_queue.PgJobQueue.reconcile_turn`: an advisory lock
and the time of the last round, so N replicas make one round per interval) lists the
open pull requests of the repositories the gateway has seen (or ``AR_RECONCILE_REPOS``,
``owner/repo,...``) and queues every head that never had a job, as a webhook would
have (drafts skipped, the same dedup key: a head a webhook queued meanwhile is a
duplicate). A round makes at most ``max_calls`` API calls (pages of 50), so a forge
with many repositories is covered over several rounds' worth of budget rather than
hammered; the client honours ``Retry-After`` and a round that meets an error ends
there, to be tried again at the next interval.

Forgejo and Gitea only, with the PostgreSQL store: a single host with SQLite is down
for the same minutes as its queue, and GitHub redelivers failed deliveries on request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from auto_review_gateway.core import names
from auto_review_gateway.jobs.spec import JobRequest

DEFAULT_INTERVAL = 600.0
MAX_CALLS = 50  # forge API calls per round
PAGE = 50  # Forgejo's largest page (setting.API.MaxResponseItems)
WIP_PREFIXES = ("WIP:", "[WIP]")  # as forges/forgejo/webhooks.py: a draft is not reviewed


class PullLister(Protocol):
    """What the reconciler needs of the forge's client."""

    def open_pulls(self, owner: str, repo: str, page: int, limit: int) -> list[dict[str, Any]]:
        """One page of the open pull requests."""
        ...


def parse_repos(text: str) -> list[tuple[str, str]]:
    """``owner/repo,owner/repo`` as pairs; ValueError naming the first bad entry."""
    out = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        owner, sep, repo = item.partition("/")
        if not sep or not names.is_name(owner) or not names.is_name(repo):
            raise ValueError(f"{item!r} is not OWNER/REPO")
        out.append((owner, repo))
    return out


def _head(pull: dict[str, Any]) -> tuple[int, str, str] | None:
    """(number, head SHA, base ref) of a reviewable pull request, None for a draft, a
    closed one or a malformed object."""
    number, head, base = pull.get("number"), pull.get("head"), pull.get("base")
    if not isinstance(number, int) or not isinstance(head, dict) or not isinstance(base, dict):
        return None
    sha, ref = head.get("sha"), base.get("ref")
    title = pull.get("title")
    draft = pull.get("draft") is True or (
        isinstance(title, str) and title.lstrip().upper().startswith(WIP_PREFIXES)
    )
    if draft or pull.get("state") != "open" or not names.is_sha(sha) or not isinstance(ref, str):
        return None
    return number, str(sha).lower(), ref


class Reconciler:
    """A thread that runs a round every ``interval`` seconds (when it gets the turn)."""

    def __init__(
        self,
        store: Any,
        forge: PullLister,
        clone_url: Callable[[str, str], str],
        *,
        interval: float,
        repos: Sequence[tuple[str, str]] = (),
        max_calls: int = MAX_CALLS,
        log: Callable[[str], None],
    ) -> None:
        """``store``: a :class:`pg_queue.PgJobQueue`; ``clone_url(owner, repo)``: where the
        job fetches from; ``repos`` empty: those the store's jobs named."""
        self.store, self.forge, self.clone_url = store, forge, clone_url
        self.interval, self.repos, self.max_calls = interval, list(repos), max_calls
        self._log = log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)

    def start(self) -> None:
        """Run rounds in the background until :meth:`stop`."""
        self._thread.start()

    def stop(self) -> None:
        """No more rounds (a round in progress ends at its next API call)."""
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(min(self.interval, 60.0) / 4):
            try:
                if self.store.reconcile_turn(self.interval):
                    queued = self.round()
                    if queued:
                        self._log(f"auto-review: reconciler queued {queued} missed head(s)")
            except Exception as exc:  # the next interval tries again
                self._log(f"auto-review: reconciler round failed: {type(exc).__name__}: {exc}")

    def round(self) -> int:
        """List the open pull requests, queue the heads never seen; how many were queued."""
        calls = queued = 0
        for owner, repo in self.repos or self.store.repositories():
            page = 1
            while calls < self.max_calls and not self._stop.is_set():
                pulls = self.forge.open_pulls(owner, repo, page, PAGE)
                calls += 1
                for pull in pulls:
                    found = _head(pull)
                    if found is None or self.store.known_head(owner, repo, found[0], found[1]):
                        continue
                    request = JobRequest(
                        owner=owner,
                        repo=repo,
                        pr_number=found[0],
                        head_sha=found[1],
                        base_ref=found[2],
                        clone_url=self.clone_url(owner, repo),
                        reason="reconcile",
                    )
                    if self.store.submit(request).status == "accepted":
                        queued += 1
                if len(pulls) < PAGE:
                    break
                page += 1
        return queued
