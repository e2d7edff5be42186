"""A review that follows its pull request's life, the same on every forge: the job's
steps once the forge's job (``forgejo_job``, ``github_job``) has said how to reach it.

1. **Paused** (``@bot pause``): an automatic review (a push, a CI call) is not run; the
   status says so, the summary too.
2. **The base's rules.** ``.auto_review.yaml`` is read at the PR's base commit: a PR
   cannot switch off, narrow or rewrite its own review; one that changes the file is
   told in the summary that the change takes effect after merge.
3. **Trivial PRs** (every changed file matches ``skip_paths``: lock files, vendored or
   generated code) get a success status and no review, no model call.
4. **Incremental.** When the PR's last reviewed head is an ancestor of the new head,
   only the changes since it are reviewed (kept to the PR's own files); after a
   force-push, an unknown history or ``@bot full-review``, the whole PR.
5. **No repeats.** A finding is known by its fingerprint (path, rule, the normalised
   text of its line, ``core/prstate.py``): one already posted on the PR is not posted
   again; an open one whose line is gone from the head is resolved. The inline review
   carries the new findings only, and is posted only when there are some.
6. **One summary**, edited in place (``forges/summary.py``), and the commit status,
   which counts every finding still open, not only the new ones.

A job runs at least once (``queue.py``): every step above can be repeated. The review
carries the job's marker and is not posted twice; the history is recorded once per job
(and this job's own findings are never "already posted" to it); the summary is found
again on the PR when its id was not remembered.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from auto_review_gateway.core.model import Finding, ReviewContext, ReviewError
from auto_review_gateway.core.prstate import (
    PrKey,
    PrState,
    ReviewEntry,
    TrackedFinding,
    fingerprint,
)
from auto_review_gateway.forges.publication import Publication
from auto_review_gateway.forges.summary import render_summary, upsert_summary
from auto_review_gateway.jobs.history import PrHistory
from auto_review_gateway.jobs.spec import Job, JobRequest
from auto_review_gateway.review import pipeline
from auto_review_gateway.review.gitrepo import Repo

MAX_LINE_FILE_BYTES = 2 * 1024 * 1024  # a file read for its lines (fingerprints)
MAX_TRACKED = 500  # new findings remembered per review (the rest are posted, not tracked)
_pr_locks: dict[PrKey, threading.Lock] = {}
_pr_locks_guard = threading.Lock()


def pr_lock(key: PrKey) -> threading.Lock:
    """One lock per PR in this process: two jobs of one PR (AR_REVIEW_CONCURRENCY > 1)
    run one after the other, each seeing what the other recorded."""
    with _pr_locks_guard:
        return _pr_locks.setdefault(key, threading.Lock())


@dataclasses.dataclass(frozen=True)
class Forge:
    """How one forge's job reaches its PR: the client (a ForgeClient with comments),
    the forge's name in the history, how to fetch the repository into a directory, and
    how to say an error in a status."""

    client: Any
    name: str
    open_repo: Callable[[JobRequest, str], Repo]
    error_text: Callable[[BaseException, str], str]


_default: list[PrHistory] = []


def default_history() -> PrHistory:
    """The history of a job run without one (a test, a one-off run): a private file of
    this process, so that its jobs still follow their PRs."""
    if not _default:
        directory = tempfile.mkdtemp(prefix="auto-review-history-")
        _default.append(PrHistory(os.path.join(directory, "history.sqlite3")))
    return _default[0]


def bot_name() -> str:
    """The name comments mention (``AR_BOT_NAME``, default auto-review)."""
    return os.environ.get("AR_BOT_NAME", "").strip().lstrip("@") or "auto-review"


class HeadLines:
    """The head's lines of the files findings point at, read once each, bounded."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self._lines: dict[str, list[str]] = {}

    def lines(self, path: str) -> list[str]:
        """``path``'s lines at head ([] when it is gone or too large to read)."""
        if path not in self._lines:
            try:
                if self.repo.size_at(self.repo.head, path) > MAX_LINE_FILE_BYTES:
                    raise FileNotFoundError(path)
                text = self.repo.file_at(self.repo.head, path).decode("utf-8", "replace")
                self._lines[path] = text.splitlines()
            except (FileNotFoundError, ValueError):
                self._lines[path] = []
        return self._lines[path]

    def fingerprint(self, finding: Finding) -> str:
        """The finding's fingerprint (its line's text at head)."""
        lines = self.lines(finding.path)
        text = lines[finding.line - 1] if 0 < finding.line <= len(lines) else ""
        return fingerprint(finding.path, finding.rule, text)

    def still_there(self, tracked: TrackedFinding, renames: dict[str, str]) -> bool:
        """Whether some line of the head still has ``tracked``'s fingerprint, in its file
        or in what it was renamed to (a renamed line keeps the path it was found at)."""
        for path in dict.fromkeys((tracked.path, renames.get(tracked.path, tracked.path))):
            for line in self.lines(path):
                if fingerprint(tracked.path, tracked.rule, line) == tracked.fingerprint:
                    return True
        return False


def walkthrough(ctx: ReviewContext, said: dict[str, str]) -> list[tuple[str, str]]:
    """(path, one line on its change): the diff's statistics, and the model's line on
    the file when it said one (``said``)."""
    out = []
    for change in ctx.files:
        if change.too_large:
            out.append((change.path, f"{change.status}, too large to review"))
            continue
        removed = sum(1 for h in change.hunks for line in h.lines if line.startswith("-"))
        moved = f" (from {change.old_path})" if change.old_path != change.path else ""
        what = "binary" if change.binary else f"+{len(change.added)} -{removed}"
        line = f"{change.status}{moved}, {what}"
        out.append((change.path, f"{line}: {said[change.path]}" if change.path in said else line))
    return out


class Run:
    """One job's review of its PR (see the module doc)."""

    def __init__(self, job: Job, req: JobRequest, forge: Forge, history: PrHistory) -> None:
        self.job, self.req, self.forge, self.history = job, req, forge, history
        self.key = PrKey(forge.name, req.owner, req.repo, req.pr_number)
        self.state = PrState()  # loaded when the job holds the PR (run)
        self.notes: list[str] = []
        self.walk: list[tuple[str, str]] = []

    def _summary(self) -> None:
        state = self.history.load(self.key)
        body = render_summary(state, self.walk, self.notes, bot_name())
        client, req = self.forge.client, self.req
        written = upsert_summary(
            client, req.owner, req.repo, req.pr_number, state.summary_comment_id, body
        )
        if written != state.summary_comment_id:
            self.history.set_summary_comment(self.key, written)

    def _about(self) -> tuple[str, str]:
        """The PR's title and description, for a model to read (none without one; best
        effort: a forge that will not say costs the review nothing)."""
        if not os.environ.get("LLM_BASE_URL"):
            return "", ""
        req = self.req
        try:
            pull = self.forge.client.get_pull(req.owner, req.repo, req.pr_number)
        except ReviewError:
            return "", ""
        return pull.title, pull.body

    def _unreviewed(self, publication: Publication, kind: str, note: str, status: str) -> None:
        entry = ReviewEntry(self.job.id, kind, "", self.req.head_sha, note=note)
        self.history.record(self.key, entry)
        self._summary()
        publication.status("success", status)

    def run(self) -> None:
        """Review the PR's head and publish: review, history, summary, status."""
        req = self.req
        if req.reason == "pull_request:closed":
            self.history.closed(self.key)  # forgotten after the retention; nothing to post
            return
        with pr_lock(self.key):
            self.state = self.history.load(self.key)
            self._run()

    def _run(self) -> None:
        req = self.req
        publication = Publication(req.pr, req.head_sha, self.forge.client, key=f"job-{self.job.id}")
        work = tempfile.mkdtemp(prefix="auto-review-job-")
        try:
            # Paused: no review but one a person asked for (a command).
            if self.state.paused and not req.reason.startswith("command:"):
                # No @mention in what is posted: the summary says how to resume, in code.
                why = "reviews are paused on this PR"
                return self._unreviewed(publication, "paused", why, f"auto-review: {why}")
            self._review(self.forge.open_repo(req, work), publication)
        except BaseException as exc:
            if not publication.errored:  # a publishing step reports its own failure
                publication.error(self.forge.error_text(exc, req.clone_url))
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _review(self, repo: Repo, publication: Publication) -> None:
        config = pipeline.base_config(repo)
        if pipeline.config_changed(repo):
            self.notes.append(
                "`.auto_review.yaml` changes in this PR: reviews follow the base branch's "
                "file, so the change takes effect after merge."
            )
        if not config.enabled:
            why = "disabled by .auto_review.yaml on the base branch"
            return self._unreviewed(publication, "disabled", why, f"auto-review is {why}")
        # Only lock files, vendored or generated code: the built-in rules (a secret, a
        # debugger call) still run; the model is not asked.
        trivial = pipeline.only_skippable(repo, config)
        if trivial is not None:
            self.notes.append(f"Only files in `skip_paths` changed ({len(trivial)}): the "
                              "model was not asked, the built-in rules ran.")  # fmt: skip
        full = self.req.reason == "command:full-review"
        mine = self.job.id
        previous = None if full else self.state.last_reviewed_head(but=mine)
        since = None
        if previous and previous != repo.head and repo.is_ancestor(previous, repo.head):
            # A merge of the base branch brings lines the PR did not write: whole review.
            since = None if repo.has_merges(previous, repo.head) else previous
        title, description = self._about()
        ctx = pipeline.context_of(repo, pipeline.DEFAULT_MAX_DIFF_BYTES, since=since,
                                  config=config, title=title, description=description)  # fmt: skip
        assert ctx is not None  # enabled: checked above
        review = pipeline.review_context(ctx, model=trivial is None)
        self.walk = walkthrough(ctx, review.walkthrough)
        lines = HeadLines(repo)
        # Known: posted by another job and still open (a finding fixed, then brought
        # back, is posted again). This job's own are never "known" to it: a run again
        # posts under the same marker, which the forge client finds.
        earlier = [t for t in self.state.open_findings() if t.job_id != mine]
        known = {t.fingerprint for t in earlier}
        new: dict[str, Finding] = {}
        for finding in review.findings:
            fp = lines.fingerprint(finding)
            if fp not in known:
                new.setdefault(fp, finding)
        renames = repo.renames(previous or ctx.merge_base, repo.head) if earlier else {}
        resolved = [t.fingerprint for t in earlier if not lines.still_there(t, renames)]
        posted = dataclasses.replace(review, findings=list(new.values()))
        if posted.findings:
            publication.post(posted)
        tracked = [
            TrackedFinding(fp, f.path, f.line, f.severity, f.rule, f.message, job_id=mine)
            for fp, f in list(new.items())[:MAX_TRACKED]
        ]
        # Open now: what was open (this job's own, recorded by an earlier run of it,
        # included) less what is resolved, and the new ones. The status counts them all.
        open_now = {t.fingerprint: t for t in self.state.open_findings()}
        open_now.update((t.fingerprint, t) for t in tracked)
        for fp in resolved:
            open_now.pop(fp, None)
        carried = [
            Finding(t.path, t.line, t.severity, t.rule, t.message) for t in open_now.values()
        ]
        overall = dataclasses.replace(review, findings=pipeline.ordered(carried))
        kind = "skipped" if trivial is not None else "incremental" if since else "full"
        entry = ReviewEntry(
            mine, kind, since or ctx.merge_base, repo.head, files=len(ctx.files),
            new=len(new), resolved=len(resolved), verdict=overall.verdict,
            note="the model was not asked: only skip_paths files" if trivial else "",
        )  # fmt: skip
        self.history.record(self.key, entry, tracked, resolved)
        self._summary()
        why = " (model skipped: only skip_paths files)" if trivial else ""
        publication.conclude(
            overall, f"{overall.summary} ({len(new)} new, {len(resolved)} resolved){why}"
        )
