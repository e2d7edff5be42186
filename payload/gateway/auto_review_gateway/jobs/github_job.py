"""The review job for a GitHub forge: :func:`run_github_job`, the counterpart of
:func:`forgejo_job.run_review_job` (both follow their PR the same way:
:mod:`follow`). Its statuses, review and summary go through the same steps as the
Forgejo job's. Its GitHub calls wait out rate limits within ``REVIEW_DEADLINE``.

Fetching: a clone URL under the GitHub web root (``github.com``, or the GHES host) gets
the token (the installation token for an App) as ``Authorization: Basic`` of
``x-access-token:<token>``, GitHub's documented way to use an installation token over
HTTPS, scoped to that web root in the job's own repository config (see :mod:`forgejo_job`);
a URL naming ``/<owner>/<repo>.git`` elsewhere is rewritten to the web root; anything
else is fetched as it is, without the token. A fetch with the token follows no redirect
(:func:`pipeline.fetch`).
"""

from __future__ import annotations

import base64
import sys
import threading

from auto_review_gateway.core.retry import Retry
from auto_review_gateway.forges.github import client as github
from auto_review_gateway.jobs import commands, follow, forgejo_job
from auto_review_gateway.jobs.history import PrHistory
from auto_review_gateway.jobs.spec import Job, JobRequest
from auto_review_gateway.review.gitrepo import Repo

# Seconds a job may wait on GitHub (rate limits, retries) before it gives up and goes
# back to the queue, due when the limit has passed (workers, retry_policy.server_wait).
REVIEW_DEADLINE = 900.0

_clients: dict[github.GitHubConfig, github.GitHub] = {}
_lock = threading.Lock()


def client(config: github.GitHubConfig | None = None) -> github.GitHub:
    """The process's client for ``config`` (default: from the environment), kept so
    that installation tokens stay cached across jobs."""
    config = github.load_config() if config is None else config
    with _lock:
        if config not in _clients:
            _clients[config] = github.GitHub(config)
        return _clients[config]


def short_client(config: github.GitHubConfig, timeout: float) -> github.GitHub:
    """A client for a request someone waits for: one try, ``timeout`` seconds, the
    process's cached installation tokens."""
    return github.GitHub(config, retry=lambda: Retry(1), timeout=timeout, auth=client(config).auth)


def clone_source(req: JobRequest, config: github.GitHubConfig) -> str:
    """The URL to fetch ``req``'s repository from (see the module doc)."""
    default = config.repo_clone_url(req.owner, req.repo)
    return forgejo_job.choose_clone_url(req, config.web_url, default)


def prepare_auth(workdir: str, url: str, config: github.GitHubConfig, token: str) -> str | None:
    """Put the token in the configuration of the repository :func:`gitrepo.clone` will
    fetch into, scoped to the web root, when ``url`` is under it. The header it set
    (None: it set none)."""
    scope = forgejo_job.auth_scope(url, config.web_url)
    if scope is None or not token or any(ord(c) < 33 or c in '"\\' for c in token):
        return None
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode("ascii")
    return forgejo_job.scoped_header(workdir, scope, f"Authorization: Basic {basic}")


def open_repo(req: JobRequest, gh: github.GitHub, work: str) -> Repo:
    """Fetch ``req``'s base branch and head commit into ``work`` (see the module doc)."""
    from auto_review_gateway.review import pipeline

    url = clone_source(req, gh.config)
    with pipeline.Reading():
        header = prepare_auth(work, url, gh.config, gh.token_for(req.owner, req.repo))
        return pipeline.fetch(url, req.base_ref, req.head_sha, work, header=header)


def run_github_job(job: Job, history: PrHistory | None = None) -> None:
    """Review ``job``'s pull request on GitHub and publish it (see the module doc)."""
    gh = client().within(REVIEW_DEADLINE)
    history = history or follow.default_history()
    asked = commands.before_review(job, gh, history)  # a command's job: run it
    if asked is None:
        return
    req = forgejo_job.resolve(asked, gh)
    if req is None:
        print(
            f"auto-review: job {job.id}: {job.request.pr} is closed: not reviewed",
            file=sys.stderr,
            flush=True,
        )
        return
    forge = follow.Forge(
        client=gh,
        name=gh.config.api_url,
        open_repo=lambda r, work: open_repo(r, gh, work),
        error_text=forgejo_job._error_description,
    )
    follow.Run(job, req, forge, history).run()


def abandon_github_job(job: Job) -> None:
    """Status error on a job the queue gave up on (see :func:`forgejo_job.abandon_review_job`)."""
    req = job.request
    if req.head_sha:
        why = f"auto-review gave up after {job.attempts} interrupted attempts"
        client().set_status(req.owner, req.repo, req.head_sha, "error", why)
