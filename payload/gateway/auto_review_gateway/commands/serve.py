"""``serve`` (alias ``gateway``): the webhook gateway, until SIGTERM or SIGINT.

Configuration comes from the environment only (the launcher passes the documented
names into the sandbox):

=========================  ========================================================
``WEBHOOK_SECRET``         required: HMAC-SHA256 key of the forge's webhook signatures
``FORGEJO_BASE_URL``       required: the forge (``https://host[/prefix]``)
``AR_FORGEJO_TOKEN``       required: the bot's API token
``GITHUB_TOKEN``           GitHub instead of Forgejo (or ``GITHUB_APP_ID``, see ``forges/github``)
``AR_GATEWAY_BIND``        ``HOST:PORT`` or ``[IPV6]:PORT`` (127.0.0.1:8080); ``--listen`` wins
``AR_CI_REVIEW_TOKEN``     enables ``POST /reviews/ci``; at least 32 characters
``AR_REVIEW_CONCURRENCY``  reviews run at once, and model requests in flight (default 2)
``AR_QUEUE_MAX``           pending jobs before webhooks get 503 (default 100)
``AR_BOT_NAME``            the user name PR comment commands mention (default auto-review)
``AR_TRIGGER``             ``webhook`` (default): PR webhooks start reviews; ``ci``: they
                           are recorded only, reviews start from ``/reviews/ci`` and commands
``AR_SHUTDOWN_GRACE``      seconds running reviews get to finish on SIGTERM (default 30)
``AR_REQUEST_TIMEOUT``     seconds a client gets to send a whole request (default 10)
``AR_QUEUE_URL``           ``postgresql://...``: a job store shared by N replicas
``AR_QUEUE_LEASE``         seconds a replica's claim holds without a heartbeat (60)
``AR_QUEUE_POLL_INTERVAL`` seconds an idle worker waits between looks (default 1)
``AR_RECONCILE_INTERVAL``  seconds between the reconciler's rounds (600; 0: off)
``AR_RECONCILE_REPOS``     ``owner/repo,...`` it lists (default: those seen)
=========================  ========================================================

The job queue is ``jobs.sqlite3`` in the state dir (:func:`names.state_dir`), or the
PostgreSQL database ``AR_QUEUE_URL`` names (:mod:`auto_review_gateway.jobs.pg_queue`);
the URL's password comes through the launcher's secrets pipe like every secret. Once
listening it prints ``auto-review: serving on http://HOST:PORT`` (the real port when
bound to port 0), or, when the launcher forwards a host port in, the address the host
listens on (``AUTO_REVIEW_HOST_LISTEN``, set by the launcher). An ``http://``
``FORGEJO_BASE_URL`` is logged as a warning at start.

Exit status: 0 after a graceful stop on SIGTERM or SIGINT (the listening socket is
closed at once, running reviews get ``AR_SHUTDOWN_GRACE`` seconds, pending jobs stay
queued for the next start; a second signal exits at once with 128+N); 6 (EXIT_CONFIG)
for missing or bad configuration, with one line naming the variables, never their
values; 8 (EXIT_DATABASE) when the job database cannot be used (unreachable, a wrong
password, a newer schema), with one line saying why and the fix; 1 if the server cannot
start (e.g. the address is in use).

Over 300 lines: the settings and the whole start and stop sequence of the gateway (store,
workers, server, signals), in the order they run.
"""

from __future__ import annotations

import argparse
import os
import sys

NAME = "serve"
ALIASES = ("gateway",)
HELP = "run the webhook gateway (Forgejo/Gitea webhooks, CI requests, health, metrics)"

REQUIRED = ("WEBHOOK_SECRET", "FORGEJO_BASE_URL", "AR_FORGEJO_TOKEN")
DEFAULT_BIND = "127.0.0.1:8080"
MIN_CI_TOKEN_CHARS = 32
TRIGGERS = ("webhook", "ci")

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from auto_review_gateway.forges.forgejo.config import ForgejoConfig


class ConfigError(Exception):
    """A configuration problem; the message names variables, never their values."""


class ServeConfig:
    """The validated settings of ``serve`` (secrets are not shown by repr)."""

    def __init__(self, env: Mapping[str, str], listen: str | None = None) -> None:
        from auto_review_gateway.core import httpjson
        from auto_review_gateway.core.model import ReviewError
        from auto_review_gateway.forges.forgejo import config as forgejo_config
        from auto_review_gateway.forges.github import client as github
        from auto_review_gateway.web import server

        try:
            self.github = github.configured(env)
        except ReviewError as exc:
            raise ConfigError(str(exc)) from None
        required = ("WEBHOOK_SECRET",) if self.github else REQUIRED
        missing = [name for name in required if not env.get(name, "").strip()]
        if missing:
            raise ConfigError(f"missing required configuration: {', '.join(missing)}")
        self.webhook_secret: bytes = env["WEBHOOK_SECRET"].strip().encode("utf-8")
        try:
            self.forge: ForgejoConfig | github.GitHubConfig = (
                github.load_config(env) if self.github else forgejo_config.load_config(env)
            )
            if self.github and self.forge.app_id:  # type: ignore[union-attr]
                from auto_review_gateway.jobs import github_job

                # the process's client: its App key is parsed here, once, for the
                # readiness probe and the jobs too (a bad key is a config error now)
                github_job.client(self.forge)  # type: ignore[arg-type]
        except ReviewError as exc:
            raise ConfigError(str(exc)) from None
        ci = env.get("AR_CI_REVIEW_TOKEN", "").strip()
        if ci and len(ci) < MIN_CI_TOKEN_CHARS:
            raise ConfigError(
                f"AR_CI_REVIEW_TOKEN must be at least {MIN_CI_TOKEN_CHARS} characters"
            )
        if ci and not httpjson.header_safe(ci):
            raise ConfigError("AR_CI_REVIEW_TOKEN must be printable ASCII")
        self.ci_token: str | None = ci or None
        where = "--listen" if listen else "AR_GATEWAY_BIND"
        try:
            self.bind = server.parse_bind(
                listen or env.get("AR_GATEWAY_BIND", "").strip() or DEFAULT_BIND
            )
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        # what the start-up line names: the host's side of a forwarded port, if any
        self.shown_address = env.get("AUTO_REVIEW_HOST_LISTEN", "").strip() or None
        self.concurrency = _number(env, "AR_REVIEW_CONCURRENCY", 2, 1, 64, int)
        self.queue_max = _number(env, "AR_QUEUE_MAX", 100, 1, 1_000_000, int)
        self.shutdown_grace = _number(env, "AR_SHUTDOWN_GRACE", 30.0, 0.0, 3600.0, float)
        self.request_timeout = _number(
            env, "AR_REQUEST_TIMEOUT", server.DEFAULT_REQUEST_TIMEOUT, 0.1, 300.0, float
        )
        self.queue_url = env.get("AR_QUEUE_URL", "").strip() or None
        from auto_review_gateway.jobs.store import is_database_url

        if self.queue_url and not is_database_url(self.queue_url):
            raise ConfigError(
                "AR_QUEUE_URL must be a postgresql://USER:PASSWORD@HOST:PORT/DB URL"
                " (or unset: the SQLite queue in the state dir)"
            )
        self.queue_lease = _number(env, "AR_QUEUE_LEASE", 60.0, 0.5, 3600.0, float)
        self.queue_poll = _number(env, "AR_QUEUE_POLL_INTERVAL", 1.0, 0.05, 60.0, float)
        self.reconcile_interval = _number(env, "AR_RECONCILE_INTERVAL", 600.0, 0.0, 86400.0, float)
        from auto_review_gateway.jobs.reconciler import parse_repos

        try:
            self.reconcile_repos = parse_repos(env.get("AR_RECONCILE_REPOS", ""))
        except ValueError as exc:
            raise ConfigError(f"AR_RECONCILE_REPOS: {exc}") from None
        self.bot_name = env.get("AR_BOT_NAME", "").strip().lstrip("@") or "auto-review"
        if not all(c.isascii() and (c.isalnum() or c in "._-") for c in self.bot_name):
            raise ConfigError("AR_BOT_NAME must be a user name ([A-Za-z0-9_.-])")
        self.trigger = env.get("AR_TRIGGER", "").strip().lower() or "webhook"
        if self.trigger not in TRIGGERS:
            raise ConfigError("AR_TRIGGER must be webhook or ci")
        if self.trigger == "ci" and not self.ci_token:
            raise ConfigError("AR_TRIGGER=ci needs AR_CI_REVIEW_TOKEN (CI calls /reviews/ci)")
        from auto_review_gateway.core import names

        self.state_dir = names.state_dir(env)

    def secrets(self) -> tuple[str, ...]:
        """The secret values, for redaction."""
        values = [self.forge.token, self.webhook_secret.decode("utf-8", "replace")]
        if self.queue_url:
            import urllib.parse

            password = urllib.parse.urlsplit(self.queue_url).password
            values += [self.queue_url, *([password] if password else [])]
        return (*values, self.ci_token) if self.ci_token else tuple(values)

    def __repr__(self) -> str:
        return f"ServeConfig(bind={self.bind!r}, forge={self.forge!r}, ...)"


def _number(
    env: Mapping[str, str], name: str, default: float, low: float, high: float, kind: type
) -> Any:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or value != value or not low <= value <= high:
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{name} must be {what} from {low:g} to {high:g}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """``serve``'s one option; the rest of its settings are in the environment (module doc)."""
    parser.add_argument(
        "--listen",
        metavar="ADDR:PORT",
        help="where to listen, [IPV6]:PORT for IPv6 (default: AR_GATEWAY_BIND, else"
        f" {DEFAULT_BIND}); 0.0.0.0:PORT to be reached from other machines",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; return the exit status (see the module doc)."""
    from auto_review_gateway.core.model import EXIT_CONFIG

    try:
        config = ServeConfig(os.environ, args.listen)
    except ConfigError as exc:
        print(f"auto-review: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    try:
        return serve(config)
    except Exception as exc:
        from auto_review_gateway.core import httpjson

        text = f"{type(exc).__name__}: {exc}"
        for secret in config.secrets():
            text = httpjson.redact(text, secret)
        print(f"auto-review: error: {httpjson.clean_text(text, 300)}", file=sys.stderr, flush=True)
        return 1


def _reconciler(config: ServeConfig, queue: Any, log: Any) -> Any:
    """The reconciler, started, for a Forgejo gateway on the PostgreSQL store (see
    :mod:`auto_review_gateway.jobs.reconciler`); None otherwise."""
    if not config.queue_url or config.github or config.reconcile_interval <= 0:
        return None
    from auto_review_gateway.forges.forgejo.client import Forgejo
    from auto_review_gateway.jobs.reconciler import Reconciler

    forge: Any = config.forge
    reconciler = Reconciler(
        queue,
        Forgejo(forge),
        forge.repo_clone_url,
        interval=config.reconcile_interval,
        repos=config.reconcile_repos,
        log=log,
    )
    reconciler.start()
    return reconciler


def serve(config: ServeConfig) -> int:
    """Start the queue, the workers and the server; stop them on SIGTERM/SIGINT."""
    import functools
    import signal
    import threading
    import time

    from auto_review_gateway.core import metrics as metrics_module
    from auto_review_gateway.core import names
    from auto_review_gateway.core.log import log
    from auto_review_gateway.core.metrics import Metrics
    from auto_review_gateway.core.model import EXIT_DATABASE
    from auto_review_gateway.intake.endpoint import Intake
    from auto_review_gateway.jobs.history import PrHistory
    from auto_review_gateway.jobs.pg_db import DatabaseError
    from auto_review_gateway.jobs.spec import JobRequest
    from auto_review_gateway.jobs.store import open_store
    from auto_review_gateway.jobs.workers import Workers
    from auto_review_gateway.web import server as http
    from auto_review_gateway.web.endpoints import Gateway
    from auto_review_gateway.web.readiness import Readiness, forge_probe, with_database

    if config.github:
        from auto_review_gateway.jobs import github_job

        github_job.client(config.forge)  # type: ignore[arg-type]
        run_review_job = github_job.run_github_job
        abandon_review_job = github_job.abandon_github_job
    else:
        from auto_review_gateway.jobs.forgejo_job import abandon_review_job, run_review_job

    stop = threading.Event()
    signals: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():  # a second signal: do not wait for the grace period
            os.write(2, f"auto-review: signal {signum} again, exiting now\n".encode())
            os._exit(128 + signum)
        signals.append(signum)
        stop.set()

    # As PID 1 of a container a signal left at its default disposition is ignored.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if config.forge.warning():
        log(f"auto-review: {config.forge.warning()}")
    os.makedirs(config.state_dir, exist_ok=True)
    metrics = Metrics()
    metrics.set("start_time_seconds", time.time())
    metrics_module.install(metrics)  # the HTTP-out path and the LLM reviewer record into it
    try:
        queue = open_store(
            config.queue_url,
            state_dir=config.state_dir,
            db_name=names.JOBS_DB,
            # the forge's kind, not its URL: replicas may reach one forge by different
            # addresses (10.0.2.2 from a sandbox, a proxy); two forges use two databases
            forge="github" if config.github else "forgejo",
            max_pending=config.queue_max,
            lease=config.queue_lease,
            poll_interval=config.queue_poll,
            log=log,
        )
    except DatabaseError as exc:
        print(f"auto-review: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_DATABASE
    history: Any  # the per-PR history lives beside the jobs: every replica shares it
    if config.queue_url:
        from auto_review_gateway.jobs.pg_history import PgPrHistory

        history = PgPrHistory(queue)
    else:
        history = PrHistory(os.path.join(config.state_dir, names.JOBS_DB))
    workers = None
    httpd = None
    try:
        workers = Workers(
            queue,
            functools.partial(run_review_job, history=history),
            concurrency=config.concurrency,
            metrics=metrics,
            on_abandoned=abandon_review_job,
            poll_interval=config.queue_poll,
        )
        workers.start()
        reconciler = _reconciler(config, queue, log)
        intake = Intake(
            webhook_secret=config.webhook_secret,
            forge=config.forge,
            queue=queue,
            job_request=JobRequest,
            metrics=metrics,
            bot_name=config.bot_name,
            ci_token=config.ci_token,
            trigger=config.trigger,
            log=log,
        )
        try:
            readiness = Readiness(
                with_database(queue.ping, forge_probe(intake)), redact=intake.safe
            )
            httpd = http.GatewayServer(
                config.bind,
                Gateway(intake, metrics, readiness=readiness),
                request_timeout=config.request_timeout,
            )
        except OSError as exc:
            where = http.display_address(*config.bind)
            raise OSError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        loop = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
        )
        loop.start()
        host = config.shown_address or http.display_address(config.bind[0], httpd.port)
        print(f"auto-review: serving on http://{host}", flush=True)
        while not stop.wait(1.0):
            if not loop.is_alive():
                raise RuntimeError("the HTTP server loop stopped")
        name = signal.Signals(signals[0]).name if signals else "signal"
        log(f"auto-review: {name}: no longer accepting; stopping")
        httpd.shutdown()  # the accept loop ends ...
        httpd.server_close()  # ... and the listening socket is closed
        # Requests already accepted get to finish (a 202 is written after the commit).
        httpd.wait_idle(min(5.0, config.request_timeout + 1))
        if reconciler is not None:
            reconciler.stop()
        workers.stop(grace=config.shutdown_grace)
        leftover = workers.running()
        workers = None
    finally:
        if httpd is not None:
            httpd.server_close()
        if workers is not None:
            workers.stop(grace=0)
        queue.close()
        history.close()
    log("auto-review: stopped")
    if leftover:
        # Jobs still running past the grace period stay "running" in the database and
        # resume at the next start. Their threads may be inside git or SQLite: exit
        # without interpreter finalization, which is not safe with such daemon threads.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
