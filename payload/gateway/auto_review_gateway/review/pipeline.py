"""The review pipeline, the one path both ``review`` and the service take:
repository -> ``.auto_review.yaml`` -> diff -> context -> reviewers -> findings -> verdict.

:func:`review_repo` runs it on a repository whose base and head are resolved (a clone
or a local checkout); it returns the :class:`~auto_review_gateway.core.model.Review` whose
verdict is computed from the findings, or None when the repository disables reviews.
Errors are ReviewErrors naming their cause (exit codes in ``core/model.py``).
"""

from __future__ import annotations

import os

from auto_review_gateway.core.httperror import HttpError
from auto_review_gateway.core.model import (
    EXIT_CLONE,
    EXIT_CONFIG,
    EXIT_REVIEWER,
    Finding,
    RepoConfig,
    Review,
    ReviewContext,
    ReviewError,
    severity_rank,
)
from auto_review_gateway.review.budgets import DEFAULT_MAX_DIFF_BYTES

# What a model sees of the whole PR, as context, in an incremental review.
WHOLE_PR_CONTEXT_BYTES = 64 * 1024

TYPE_CHECKING = False
if TYPE_CHECKING:
    from auto_review_gateway.review.gitrepo import Repo
    from auto_review_gateway.review.llm.reviewer import Outcome


class Reading:
    """Turns an OSError or ValueError while reading the repository into a clean exit."""

    def __enter__(self) -> None:
        pass

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if isinstance(exc, (OSError, ValueError)):
            raise ReviewError(f"could not read the repository: {exc}", EXIT_CLONE) from None


def fetch(
    url: str,
    base: str,
    head: str,
    workdir: str,
    *,
    header: str | None = None,
    allow_http: bool = False,
) -> Repo:
    """:func:`gitrepo.clone` of ``url``, following no redirect when the fetch carries a
    credential: ``header``, the token the caller put in the repository's config as an
    ``extraHeader``, or ``user:token@`` in the URL (git would send either to wherever a
    redirect points). A refused redirect is an HttpError (EXIT_CLONE, not transient) that
    names the origin it pointed to."""
    from auto_review_gateway.core import redirect
    from auto_review_gateway.review import gitrepo

    try:
        return gitrepo.clone(
            url, base, head, workdir, allow_http=allow_http, follow_redirects=header is None
        )
    except ReviewError as exc:
        status = redirect.refused_status(str(exc))
        if status is None or (header is None and not redirect.has_userinfo(url)):
            raise
        origin = redirect.redirect_origin(url, header)
    where = f"redirected to {origin}" if origin else f"answered HTTP {status} (a redirect)"
    message = (
        f"could not fetch {gitrepo.redact(url)}: the server {where}; "
        "auto-review does not follow redirects with the token"
    )
    raise HttpError(message, EXIT_CLONE, status, transient=False)


def config_text(repo: Repo, sha: str | None = None) -> str | None:
    """``.auto_review.yaml`` at ``sha`` (default: the base, whose rules a PR is reviewed
    by: a PR cannot switch off or narrow its own review) as text, None when there is none."""
    from auto_review_gateway.review import repoconfig

    sha = repo.base if sha is None else sha
    try:
        size = repo.size_at(sha, repoconfig.FILENAME)
    except FileNotFoundError:
        return None
    if size > repoconfig.MAX_FILE_BYTES:
        raise ReviewError(f"{repoconfig.FILENAME}: larger than 64 KiB", EXIT_CONFIG)
    try:
        return repo.file_at(sha, repoconfig.FILENAME).decode("utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise ReviewError(f"{repoconfig.FILENAME}: not UTF-8 text", EXIT_CONFIG) from None


def ordered(findings: list[Finding]) -> list[Finding]:
    """Without exact duplicates, by path, line, severity (worst first), rule."""
    return sorted(
        set(findings), key=lambda f: (f.path, f.line, -severity_rank(f.severity), f.rule, f.message)
    )


def llm_review(ctx: ReviewContext) -> Outcome:
    """The LLM reviewer's outcome (findings, model name, files it did not review, findings
    its verifier dropped); ReviewError(EXIT_REVIEWER) on failure."""
    try:
        from auto_review_gateway.review.llm import reviewer as llm
    except ImportError as exc:
        raise ReviewError(
            f"LLM_BASE_URL is set but the LLM reviewer is missing: {exc}", EXIT_REVIEWER
        ) from None
    try:
        return llm.run(ctx)
    except ReviewError:
        raise  # it names its own cause (EXIT_REVIEWER, or EXIT_CONFIG for a bad setting)
    except Exception as exc:
        raise ReviewError(
            f"the LLM reviewer failed: {type(exc).__name__}: {exc}", EXIT_REVIEWER
        ) from None


def base_config(repo: Repo) -> RepoConfig:
    """The base's ``.auto_review.yaml`` (defaults when it has none)."""
    from auto_review_gateway.review import repoconfig

    with Reading():
        return repoconfig.load(config_text(repo))


def config_changed(repo: Repo) -> bool:
    """True when the PR's head has another ``.auto_review.yaml`` than its base (the
    change takes effect once merged)."""
    from auto_review_gateway.review import repoconfig

    def blob(sha: str) -> str | None:
        proc = repo.git("rev-parse", "--verify", "--quiet", f"{sha}:{repoconfig.FILENAME}")
        return proc.stdout.strip().decode() if proc.returncode == 0 else None

    with Reading():
        return blob(repo.base) != blob(repo.head)


def only_skippable(repo: Repo, config: RepoConfig) -> list[str] | None:
    """The PR's changed paths when every one matches ``skip_paths`` (a lock-file or
    generated-code PR that needs no review), else None."""
    from auto_review_gateway.review import context, repoconfig

    with Reading():
        paths = repo.changed_paths(repo.merge_base(), repo.head)
    globs = repoconfig.skip_paths(config)
    if paths and all(context.ignored(p, globs) for p in paths):
        return paths
    return None


def context_of(
    repo: Repo,
    max_diff_bytes: int,
    *,
    since: str | None = None,
    config: RepoConfig | None = None,
    title: str = "",
    description: str = "",
) -> ReviewContext | None:
    """The base's config and the diff (from ``since`` when given, else the merge base) as
    a context, with the PR's ``title`` and ``description`` when the caller has them and
    ``repo`` to read the code around the change from; None when the base's config
    disables reviews."""
    from auto_review_gateway.review import context

    config = base_config(repo) if config is None else config
    if not config.enabled:
        return None
    with Reading():
        ctx = context.build(repo, repo.base, repo.head, config, max_diff_bytes, since=since)
        if since is not None and os.environ.get("LLM_BASE_URL"):
            whole = min(max_diff_bytes, WHOLE_PR_CONTEXT_BYTES)
            ctx.whole = context.build(repo, repo.base, repo.head, config, whole)
    ctx.title, ctx.description, ctx.source = title, description, repo
    return ctx


def review_context(ctx: ReviewContext, *, model: bool = True) -> Review:
    """Run the reviewers on ``ctx`` (built-in rules, plus the LLM when ``LLM_BASE_URL``
    is set and ``model``) and assemble the Review."""
    from auto_review_gateway.review import builtin_rules

    findings = builtin_rules.review(ctx)
    reviewers = ["builtin"]
    outcome = None
    if model and os.environ.get("LLM_BASE_URL") and ctx.files:
        outcome = llm_review(ctx)
        findings += outcome.findings
        reviewers.append(f"llm:{outcome.model}")
    return Review(
        base=ctx.base,
        head=ctx.head,
        reviewer="+".join(reviewers),
        findings=ordered(findings),
        files_reviewed=len(ctx.files),
        truncated=ctx.truncated,
        skipped=ctx.skipped,
        too_large=[(f.path, f.too_large) for f in ctx.files if f.too_large],
        not_reviewed=outcome.not_reviewed if outcome else [],
        dropped=outcome.dropped if outcome else [],
        usage=outcome.usage if outcome else {},
        walkthrough=outcome.walkthrough if outcome else {},
    )


def review_repo(
    repo: Repo,
    max_diff_bytes: int = DEFAULT_MAX_DIFF_BYTES,
    *,
    title: str = "",
    description: str = "",
) -> Review | None:
    """The whole pipeline on ``repo`` (``title`` and ``description``: the PR's, when the
    caller has them): its Review, or None when it disables reviews."""
    ctx = context_of(repo, max_diff_bytes, title=title, description=description)
    return None if ctx is None else review_context(ctx)
