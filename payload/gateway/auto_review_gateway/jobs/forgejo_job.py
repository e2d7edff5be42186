"""The production job of the gateway: review one pull request head and publish the result.

:func:`run_review_job` reads the PR's head from the forge when the job was queued
without one (a re-review comment: the webhook answers before any forge call), sets the
``auto_review`` commit status to pending, fetches the base branch and the head commit,
runs the review pipeline and posts the review with a success/failure status. Whatever goes
wrong after the pending status leaves an ``error`` status (best effort) and the
exception propagates to :class:`~auto_review_gateway.workers.Workers`, which records
it and may try the job again later.

Posting twice: the review carries a marker of the job (``job-<id>``), and a job that
runs again (a retry, or a restart after a crash between the post and the commit of
"done") finds its review on the PR and does not post it again.

Where the repository is fetched from: a clone URL under ``FORGEJO_BASE_URL`` as it is;
a clone URL naming the same repository (``/<owner>/<repo>.git``) on another host name
(Forgejo's ROOT_URL differs from the address the gateway uses) is rewritten to
``FORGEJO_BASE_URL/<owner>/<repo>.git``; any other URL is fetched as it is, without the
token. Plain ``http://`` is allowed only when ``FORGEJO_BASE_URL`` itself is http:// and
only to it.

Private repositories: the forge token goes to git as an ``http.<url>.extraHeader`` scoped
to ``FORGEJO_BASE_URL`` (scheme, host, port and path prefix). gitrepo builds git's whole
environment and command line itself, so the setting is put in the configuration of the
(not yet fetched) repository that :func:`gitrepo.clone` initializes and fetches into: a
repository's own config applies, and ``git init`` keeps it. It lives in the job's
private temporary directory, removed when the job ends. git sends that header with every
request of a fetch, to wherever a redirect sent the first one, so a fetch with the token
follows no redirect (:func:`pipeline.fetch`): the job fails, naming where it pointed.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import urllib.parse

from auto_review_gateway.core.model import EXIT_CLONE, ReviewError
from auto_review_gateway.forges.client import ForgeClient
from auto_review_gateway.forges.forgejo import client as forgejo
from auto_review_gateway.forges.forgejo.config import ForgejoConfig, load_config
from auto_review_gateway.jobs import commands, follow
from auto_review_gateway.jobs.history import PrHistory
from auto_review_gateway.jobs.spec import Job, JobRequest
from auto_review_gateway.review import gitrepo

STATUS_DESCRIPTION_CHARS = 100
_CONFIG_UNSAFE = frozenset('"\\\n\r\0')


def forge_base_url(config: ForgejoConfig) -> str:
    """The forge's web root (``FORGEJO_BASE_URL`` without ``/api/v1``)."""
    return config.base_url


def _default_port(scheme: str, port: int | None) -> int:
    return port if port is not None else {"https": 443, "http": 80}.get(scheme, 0)


def auth_scope(clone_url: str, base_url: str) -> str | None:
    """The URL prefix (``https://host[:port][/path]/``) the forge token may be sent to
    when fetching ``clone_url``, or None when ``clone_url`` is not on the forge at
    ``base_url`` (same scheme, host, port, under its path). The scheme is https, or
    http when ``base_url`` itself is http:// (the operator's choice)."""
    try:
        clone = urllib.parse.urlsplit(clone_url)
        base = urllib.parse.urlsplit(base_url)
        clone_port = _default_port(clone.scheme.lower(), clone.port)
        base_port = _default_port(base.scheme.lower(), base.port)
    except ValueError:
        return None
    scheme = base.scheme.lower()
    if scheme not in ("https", "http") or clone.scheme.lower() != scheme:
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
    scope = f"{scheme}://{netloc}{prefix}/"
    if any(c in _CONFIG_UNSAFE or ord(c) < 32 for c in scope):
        return None
    return scope


def _config_quote(value: str) -> str:
    """``value`` as a double-quoted git config value."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def prepare_auth(workdir: str, clone_url: str, config: ForgejoConfig) -> str | None:
    """Initialize the repository :func:`gitrepo.clone` will fetch into (``workdir``) with
    the forge token as an ``http.<forge>/.extraHeader``, when ``clone_url`` is on the
    forge. Returns the header it set (None: it set none)."""
    scope = auth_scope(clone_url, forge_base_url(config))
    if scope is None or any(c in _CONFIG_UNSAFE or ord(c) < 32 for c in config.token):
        return None
    return scoped_header(workdir, scope, f"Authorization: token {config.token}")


def scoped_header(workdir: str, scope: str, header: str) -> str:
    """Initialize the bare repository :func:`gitrepo.clone` fetches into (in ``workdir``)
    with ``header`` as ``http.<scope>.extraHeader``, its config readable by us only; the
    header. Both forges' jobs put their token there, never on a command line."""
    home = os.path.join(workdir, "home")
    git_dir = os.path.join(workdir, "repo.git")  # where gitrepo.clone puts it
    os.makedirs(home, exist_ok=True)
    proc = gitrepo.Repo(git_dir, home).git("init", "--quiet", "--bare")
    if proc.returncode != 0:
        raise ReviewError("git init failed", EXIT_CLONE)
    fd = os.open(os.path.join(git_dir, "config"), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, f'[http "{scope}"]\n\textraHeader = {_config_quote(header)}\n'.encode())
    finally:
        os.close(fd)
    return header


def clone_source(req: JobRequest, config: ForgejoConfig) -> str:
    """The URL to fetch ``req``'s repository from (see the module doc)."""
    return choose_clone_url(req, config.base_url, config.repo_clone_url(req.owner, req.repo))


def choose_clone_url(req: JobRequest, forge_url: str, forge_clone_url: str) -> str:
    """``req``'s clone URL when it is on the configured forge (it gets the token); the
    forge's own URL of that repository when the clone URL names the same owner/repo on
    another host (or there is none); else the clone URL as given (fetched anonymously)."""
    if req.clone_url and auth_scope(req.clone_url, forge_url) is not None:
        return req.clone_url
    wanted = f"/{req.owner}/{req.repo}.git".lower()
    try:
        path = urllib.parse.urlsplit(req.clone_url).path.lower() if req.clone_url else ""
    except ValueError:
        path = ""
    if not req.clone_url or path.endswith(wanted):
        return forge_clone_url
    return req.clone_url


def open_repo(req: JobRequest, config: ForgejoConfig, work: str) -> gitrepo.Repo:
    """Fetch the base branch and head commit of ``req`` into ``work``, with the token
    when the repository is on the forge. ReviewError on failure."""
    from auto_review_gateway.review import pipeline

    url = clone_source(req, config)
    allow_http = config.plain_http and auth_scope(url, config.base_url) is not None
    with pipeline.Reading():
        header = prepare_auth(work, url, config)
        return pipeline.fetch(
            url, req.base_ref, req.head_sha, work, header=header, allow_http=allow_http
        )


def resolve(req: JobRequest, forge: ForgeClient) -> JobRequest | None:
    """``req`` with the PR's current head and base read from the forge when it was queued
    without them; None when the PR is closed."""
    if req.head_sha and req.base_ref:
        return req
    pull = forge.get_pull(req.owner, req.repo, req.pr_number)
    if pull.state == "closed":
        return None
    return dataclasses.replace(req, head_sha=pull.head_sha, base_ref=pull.base_ref)


def _error_description(exc: BaseException, clone_url: str) -> str:
    if isinstance(exc, ReviewError):
        detail = gitrepo.redact(" ".join(str(exc).split()), clone_url)
    else:
        detail = f"internal error ({type(exc).__name__})"  # details go to the log only
    return f"auto-review failed: {detail[:STATUS_DESCRIPTION_CHARS]}"


def run_review_job(job: Job, history: PrHistory | None = None) -> None:
    """Review ``job``'s pull request head and publish it, following the PR
    (:mod:`follow`): status pending, the new findings' review, the summary, the final
    status. Any exception leaves status error (best effort) and is re-raised. Needs
    ``FORGEJO_BASE_URL`` and ``AR_FORGEJO_TOKEN``."""
    config = load_config()
    client = forgejo.Forgejo(config)
    history = history or follow.default_history()
    asked = commands.before_review(job, client, history)  # a command's job: run it
    if asked is None:
        return
    req = resolve(asked, client)
    if req is None:
        print(f"auto-review: job {job.id}: {job.request.pr} is closed: not reviewed",
              file=sys.stderr, flush=True)  # fmt: skip
        return
    forge = follow.Forge(
        client=client,
        name=config.api_url,
        open_repo=lambda r, work: open_repo(r, config, work),
        error_text=_error_description,
    )
    follow.Run(job, req, forge, history).run()


def abandon_review_job(job: Job) -> None:
    """Set status error on a job the queue gave up on (interrupted too many times):
    ``Workers(on_abandoned=abandon_review_job)``. Raises ReviewError if posting fails."""
    req = job.request
    if not req.head_sha:
        return  # queued without a head: no commit to mark
    forgejo.set_status(
        req.owner,
        req.repo,
        req.head_sha,
        "error",
        f"auto-review gave up after {job.attempts} interrupted attempts",
    )
