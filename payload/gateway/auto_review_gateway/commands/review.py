"""``review``: review the change from a base to a head commit once, print it, maybe post it.

``--post --pr OWNER/REPO#N`` posts it to the pull request: on GitHub when GitHub is
configured (``GITHUB_TOKEN`` or ``GITHUB_APP_ID``, see ``forges/github/config.py``), else on
Forgejo (``FORGEJO_BASE_URL``, ``AR_FORGEJO_TOKEN``). Either way the commit status is
pending before the review runs, then the review (inline comments on diff lines) and
status success or failure; a reviewer that fails leaves status error.

Exit status: 0 when the review ran (whatever it found), else the EXIT_* code of
the failure (see model.py): 2 usage, 3 could not clone or read the repository,
4 bad ref, 5 reviewer failed, 6 bad .auto_review.yaml or environment, 7 posting
failed, 70 an internal error (a bug; ``--debug`` adds its traceback); and 8
(EXIT_FINDINGS) with ``--fail-on SEVERITY`` when a finding is at or above that
severity (after the review was printed and posted), which is how a CI job gates on it.
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

# Every command module is imported to build the parser: this one keeps its
# heavier imports (tempfile, shutil, the pipeline) inside the functions.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from auto_review_gateway.core.model import Review
    from auto_review_gateway.forges.publication import Publication
    from auto_review_gateway.review.gitrepo import Repo

NAME = "review"
HELP = "review the change between two commits of a repository and print the result"
FORMATS = ("text", "json", "markdown")
DEFAULT_MAX_DIFF_BYTES = 4 * 1024 * 1024  # the same as review/budgets.py's
SEVERITIES = ("info", "low", "medium", "high", "critical")  # model.SEVERITIES, not imported
EXIT_FINDINGS = 8  # --fail-on: a finding at or above the severity; beside model's EXIT_*


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``review``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--repo", metavar="URL", help="HTTPS URL of the repository to fetch")
    source.add_argument("--path", metavar="DIR", help="a local checkout, read in place (read-only)")
    parser.add_argument("--base", required=True, metavar="REF", help="branch, tag or SHA")
    parser.add_argument(
        "--head", default="HEAD", metavar="REF", help="branch, tag or SHA (default: HEAD)"
    )
    parser.add_argument("--format", choices=FORMATS, default="text", help="default: text")
    parser.add_argument(
        "--max-diff-bytes",
        type=_positive,
        default=DEFAULT_MAX_DIFF_BYTES,
        metavar="N",
        help="cap on the diff read, applied at file boundaries (default: 4 MiB)",
    )
    parser.add_argument(
        "--post",
        action="store_true",
        help="post the review to the pull request: on GitHub if GITHUB_TOKEN or "
        "GITHUB_APP_ID is set, else on Forgejo (FORGEJO_BASE_URL, AR_FORGEJO_TOKEN)",
    )
    parser.add_argument("--pr", metavar="OWNER/REPO#N", help="the pull request to post to")
    parser.add_argument(
        "--fail-on",
        choices=SEVERITIES,
        metavar="SEVERITY",
        help=f"exit {EXIT_FINDINGS} when a finding is at or above SEVERITY (one of"
        f" {', '.join(SEVERITIES)}; high: what makes the verdict fail), for CI",
    )


def run(args: argparse.Namespace) -> int:
    """Run the review and print it; return 0, or print one error line and return its code."""
    from auto_review_gateway.core.escape import visible
    from auto_review_gateway.core.model import ReviewError
    from auto_review_gateway.review.gitrepo import redact

    try:
        return _review(args)
    except ReviewError as exc:
        # visible(): the message may quote a server's or a repository's words
        print(f"auto-review: error: {visible(redact(str(exc), args.repo or ''))}", file=sys.stderr)
        return exc.exit_code


def _review(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from auto_review_gateway.review import gitrepo, pipeline
    from auto_review_gateway.review.pipeline import Reading as _Reading

    if args.path is not None:
        with _Reading():
            repo = gitrepo.open_path(args.path, args.base, args.head)
        return _review_repo(repo, args)
    with _Reading():
        work = tempfile.mkdtemp(prefix="auto-review-")
    try:
        with _Reading():
            repo = pipeline.fetch(args.repo, args.base, args.head, work)
        return _review_repo(repo, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _review_repo(repo: Repo, args: argparse.Namespace) -> int:
    from auto_review_gateway.core.model import ReviewError
    from auto_review_gateway.review import pipeline, render

    ctx = pipeline.context_of(repo, args.max_diff_bytes)
    if ctx is None:
        print(render.render_disabled(repo.base, repo.head, args.format))
        return 0
    publication = _start_post(args.pr, repo.head) if args.post else None
    try:
        review = pipeline.review_context(ctx)
    except ReviewError as exc:
        if publication:
            publication.error(f"auto-review failed: {str(exc)[:100]}")
        raise
    print(render.render(review, args.format), flush=True)
    if publication:
        publication.finish(review)
    return gate(review, args.fail_on)


def gate(review: Review, fail_on: str | None) -> int:
    """EXIT_FINDINGS if `fail_on` is given and a finding is at or above it, else 0."""
    from auto_review_gateway.core.model import severity_rank

    if fail_on is None:
        return 0
    floor = severity_rank(fail_on)
    hits = [f for f in review.findings if severity_rank(f.severity) >= floor]
    if not hits:
        return 0
    print(
        f"auto-review: {len(hits)} finding(s) at or above {fail_on} (--fail-on {fail_on})",
        file=sys.stderr,
    )
    return EXIT_FINDINGS


def _start_post(pr: str | None, head: str) -> Publication:
    """Check --pr and the forge settings, and set the pending status, before reviewing:
    on GitHub when it is configured, else on Forgejo."""
    from auto_review_gateway.core.model import EXIT_USAGE, ReviewError
    from auto_review_gateway.forges.forgejo import client as forgejo
    from auto_review_gateway.forges.forgejo import config as forgejo_config
    from auto_review_gateway.forges.github import config as github_config
    from auto_review_gateway.forges.publication import Publication

    if not pr:
        raise ReviewError("--post needs --pr OWNER/REPO#N", EXIT_USAGE)
    if github_config.configured():
        from auto_review_gateway.forges.github import client as github

        return Publication(pr, head, github.GitHub(github_config.load_config()))
    config = forgejo_config.load_config()
    if config.warning():
        print(f"auto-review: {config.warning()}", file=sys.stderr, flush=True)
    return Publication(pr, head, forgejo.Forgejo(config))
