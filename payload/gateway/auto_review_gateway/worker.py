"""The production job of the gateway: review one pull request head and publish the result.

:func:`run_review_job` sets the ``auto_review`` commit status to pending, fetches the
base branch and the head commit, reviews the change (built-in rules, plus the LLM when
``LLM_BASE_URL`` is set) and posts the review with a success/failure status. Whatever
goes wrong after the pending status leaves an ``error`` status (best effort) and the
exception propagates to :class:`~auto_review_gateway.jobs.Workers`, which records it.

Re-running after a crash: the job queue completes a job once, but a crash after the
review is posted and before the job is marked done runs the job again on restart, which
posts a second review. The function returns right after the final status, so that
window is the time of one SQLite commit.

Private repositories: the forge token goes to git as an ``http.<url>.extraHeader`` scoped
to ``FORGEJO_BASE_URL`` (scheme, host, port and path prefix), only when the clone URL is
an HTTPS URL under it. gitrepo builds git's whole environment and command line itself, so
the setting is put in the configuration of the (not yet fetched) repository that
:func:`gitrepo.clone` initializes and fetches into: a repository's own config applies,
and ``git init`` keeps it. It lives in the job's private temporary directory, removed
when the job ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse

from auto_review_gateway import forgejo, gitrepo
from auto_review_gateway.jobs import Job, JobRequest
from auto_review_gateway.model import EXIT_CLONE, Review, ReviewError

STATUS_DESCRIPTION_CHARS = 100
_CONFIG_UNSAFE = frozenset('"\\\n\r\0')


def forge_base_url(config: forgejo.ForgejoConfig) -> str:
    """The forge's web root (``FORGEJO_BASE_URL`` without ``/api/v1``)."""
    return (
        config.api_url[: -len("/api/v1")] if config.api_url.endswith("/api/v1") else config.api_url
    )


def _default_port(scheme: str, port: int | None) -> int:
    return port if port is not None else {"https": 443, "http": 80}.get(scheme, 0)


def auth_scope(clone_url: str, base_url: str) -> str | None:
    """The URL prefix (``https://host[:port][/path]/``) the forge token may be sent to
    when fetching ``clone_url``, or None when ``clone_url`` is not an HTTPS URL on the
    forge at ``base_url`` (same scheme, host, port, under its path)."""
    try:
        clone = urllib.parse.urlsplit(clone_url)
        base = urllib.parse.urlsplit(base_url)
        clone_port = _default_port(clone.scheme.lower(), clone.port)
        base_port = _default_port(base.scheme.lower(), base.port)
    except ValueError:
        return None
    if clone.scheme.lower() != "https" or base.scheme.lower() != "https":
        return None
    if not base.hostname or (clone.hostname or "").lower() != base.hostname.lower():
        return None
    if clone_port != base_port:
        return None
    prefix = base.path.rstrip("/")
    if prefix and clone.path != prefix and not clone.path.startswith(prefix + "/"):
        return None
    host = base.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if base.port is None else f"{host}:{base.port}"
    scope = f"https://{netloc}{prefix}/"
    if any(c in _CONFIG_UNSAFE or ord(c) < 32 for c in scope):
        return None
    return scope


def _config_quote(value: str) -> str:
    """``value`` as a double-quoted git config value."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def prepare_auth(workdir: str, clone_url: str, config: forgejo.ForgejoConfig) -> bool:
    """Initialize the repository :func:`gitrepo.clone` will fetch into (``workdir``) with
    the forge token as an ``http.<forge>/.extraHeader``, when ``clone_url`` is on the
    forge. Returns whether it did."""
    scope = auth_scope(clone_url, forge_base_url(config))
    if scope is None or any(c in _CONFIG_UNSAFE or ord(c) < 32 for c in config.token):
        return False
    home = os.path.join(workdir, "home")
    git_dir = os.path.join(workdir, "repo.git")  # where gitrepo.clone puts it
    os.makedirs(home, exist_ok=True)
    proc = gitrepo.Repo(git_dir, home).git("init", "--quiet", "--bare")
    if proc.returncode != 0:
        raise ReviewError("git init failed", EXIT_CLONE)
    path = os.path.join(git_dir, "config")
    header = _config_quote(f"Authorization: token {config.token}")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, f'[http "{scope}"]\n\textraHeader = {header}\n'.encode())
    finally:
        os.close(fd)
    return True


def review_request(req: JobRequest, config: forgejo.ForgejoConfig) -> Review | None:
    """Fetch and review the change of ``req``: the Review, or None when the repository's
    ``.auto_review.yaml`` disables reviews. ReviewError on failure."""
    from auto_review_gateway import builtin_rules, context, repoconfig, review_cmd

    work = tempfile.mkdtemp(prefix="auto-review-job-")
    try:
        with review_cmd._Reading():
            prepare_auth(work, req.clone_url, config)
            repo = gitrepo.clone(req.clone_url, req.base_ref, req.head_sha, work)
            repo_config = repoconfig.load(review_cmd._config_text(repo))
            if not repo_config.enabled:
                return None
            ctx = context.build(
                repo, repo.base, repo.head, repo_config, review_cmd.DEFAULT_MAX_DIFF_BYTES
            )
        findings = builtin_rules.review(ctx)
        reviewers = ["builtin"]
        if os.environ.get("LLM_BASE_URL"):
            llm_findings, model = review_cmd._llm_review(ctx)
            findings += llm_findings
            reviewers.append(f"llm:{model}")
        return Review(
            base=repo.base,
            head=repo.head,
            reviewer="+".join(reviewers),
            findings=review_cmd._ordered(findings),
            files_reviewed=len(ctx.files),
            truncated=ctx.truncated,
            skipped=ctx.skipped,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _error_description(exc: BaseException, clone_url: str) -> str:
    if isinstance(exc, ReviewError):
        detail = gitrepo.redact(" ".join(str(exc).split()), clone_url)
    else:
        detail = f"internal error ({type(exc).__name__})"  # details go to the log only
    return f"auto-review failed: {detail[:STATUS_DESCRIPTION_CHARS]}"


def run_review_job(job: Job) -> None:
    """Review ``job``'s pull request head and publish it: status pending, the review, then
    success (verdict pass/warn) or failure (fail). Any exception leaves status error (best
    effort) and is re-raised. Needs ``FORGEJO_BASE_URL`` and ``AR_FORGEJO_TOKEN``."""
    req = job.request
    config = forgejo.load_config()
    publication = forgejo.Publication(req.pr, req.head_sha, config=config)  # status pending
    try:
        review = review_request(req, config)
    except BaseException as exc:
        publication.error(_error_description(exc, req.clone_url))
        raise
    if review is None:
        try:
            forgejo.set_status(
                req.owner,
                req.repo,
                req.head_sha,
                "success",
                "auto-review is disabled by .auto_review.yaml",
                config=config,
            )
        except BaseException as exc:
            publication.error(_error_description(exc, req.clone_url))
            raise
        return
    publication.finish(review)  # on failure it sets status error itself, then raises


def abandon_review_job(job: Job) -> None:
    """Set status error on a job the queue gave up on (interrupted too many times):
    ``Workers(on_abandoned=abandon_review_job)``. Raises ReviewError if posting fails."""
    req = job.request
    forgejo.set_status(
        req.owner,
        req.repo,
        req.head_sha,
        "error",
        f"auto-review gave up after {job.attempts} interrupted attempts",
    )
