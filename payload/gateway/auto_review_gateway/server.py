"""The gateway's HTTP server: stdlib ``http.server``, one thread per connection.

Endpoints (every answer is JSON except /metrics; every answer closes the connection):

========================  ======  =====================================================
``/healthz``              GET     200 ``{"status": "ok"}`` while the process serves
``/readyz``               GET     200 when the forge answers ``GET /api/v1/version``
                                  (cached for READY_TTL seconds), else 503 with the reason
``/version``              GET     200 ``{"version": ...}``
``/metrics``              GET     200 Prometheus text format 0.0.4
``/info``                 GET     200 ``{"version", "bundle_digest", "isolation", "queue"}``
``/jobs``                 GET     200 ``{"jobs": [...]}``: the newest jobs with their state,
                                  attempts and last error (secrets redacted)
``/webhooks/forgejo``     POST    see :mod:`auto_review_gateway.forgejo_webhooks`
``/reviews/ci``           POST    see :mod:`auto_review_gateway.ci`
========================  ======  =====================================================

``HEAD`` is answered like ``GET`` without the body. Anything else is 404, a known path
with another method 405 (with ``Allow``), an unsupported method 501. What protects the
process from its clients:

* bodies: ``Content-Length`` is required (411 without it, chunked is refused), a body over
  MAX_BODY_BYTES is refused with 413 before it is read (also on ``Expect: 100-continue``);
* time: each connection gets ``request_timeout`` seconds (``AR_REQUEST_TIMEOUT``) to
  deliver its request line, headers and body, as a whole, not per read: a client that
  trickles is dropped by a reaper thread, and the same timeout bounds every socket read
  and write, so a silent client costs one thread for at most that long;
* connections: at most MAX_CONNECTIONS are served at once; the next ones get a canned
  503 at once instead of a thread;
* errors: an unexpected exception answers 500 ``{"error": "internal error"}`` and logs
  one line (type and redacted message), never a stack trace, to the client or the log.

The access log is one line per request on stderr: client address, method, path without
the query string, status, duration. Headers and bodies are never logged.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from auto_review_gateway import __version__, forgejo_webhooks, httpjson
from auto_review_gateway.intake import Intake, Reply

MAX_BODY_BYTES = 1024 * 1024
MAX_CONNECTIONS = 128
LISTEN_BACKLOG = 128
DEFAULT_REQUEST_TIMEOUT = 10.0
READY_TTL = 5.0
READY_PROBE_TIMEOUT = 3.0
LINGER_SECONDS = 2.0  # reading (and dropping) an unread body before closing, see _linger
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_CANNED_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 30\r\n"
    b"Retry-After: 5\r\n"
    b"Connection: close\r\n\r\n"
    b'{"error": "too many requests"}'
)

_log_lock = threading.Lock()


def log(line: str) -> None:
    """Write one line to stderr (whole lines, even from many threads)."""
    with _log_lock:
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` -> ``(host, port)``; ValueError if malformed."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep or not host:
            raise ValueError("an IPv6 address is written [ADDRESS]:PORT")
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host or ":" in host:
            raise ValueError("expected HOST:PORT or [IPV6]:PORT")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("the port must be a number from 0 to 65535")
    return host, int(port)


def display_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Readiness:
    """Whether the forge answers, probed at most once every ``ttl`` seconds.

    ``probe`` raises on failure; its message becomes the reason (secrets redacted by
    ``redact``). Concurrent callers wait for the one probe in flight.
    """

    def __init__(
        self,
        probe: Callable[[], None],
        *,
        ttl: float = READY_TTL,
        redact: Callable[[str], str] = lambda text: httpjson.clean_text(text, 300),
    ) -> None:
        self._probe = probe
        self._ttl = ttl
        self._redact = redact
        self._lock = threading.Lock()
        self._result: tuple[bool, str] | None = None
        self._at = 0.0

    def check(self) -> tuple[bool, str]:
        """``(ready, reason)``, from the cache when it is fresh."""
        with self._lock:
            now = time.monotonic()
            if self._result is not None and now - self._at < self._ttl:
                return self._result
            try:
                self._probe()
                result = (True, "the forge answers")
            except Exception as exc:
                result = (False, self._redact(str(exc)) or type(exc).__name__)
            self._result, self._at = result, time.monotonic()
            return result


def forge_probe(intake: Intake) -> Callable[[], None]:
    """A probe for :class:`Readiness`: ``GET <forge>/api/v1/version`` with a short timeout."""

    from auto_review_gateway import forgejo

    if getattr(intake.forge, "kind", "") == "github":
        from auto_review_gateway import github

        hub = github.GitHub(intake.forge)  # type: ignore[arg-type]
        return lambda: hub.probe(READY_PROBE_TIMEOUT)
    client = forgejo.Forgejo(intake.forge, retry=None)

    def probe() -> None:
        client.version(READY_PROBE_TIMEOUT)

    return probe


Route = Callable[[Mapping[str, str], bytes], Reply]


class Gateway:
    """The application: what each path and method answers. Transport-free, so it can be
    called directly; :class:`GatewayServer` feeds it HTTP requests."""

    def __init__(
        self,
        intake: Intake,
        metrics: Any,
        *,
        readiness: Readiness | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.intake = intake
        self.metrics = metrics
        self.readiness = readiness or Readiness(forge_probe(intake), redact=intake.safe)
        env = os.environ if environ is None else environ
        self.bundle_digest = env.get("AUTO_REVIEW_BUNDLE_DIGEST") or None
        self.isolation = env.get("AUTO_REVIEW_ISOLATION") or "unknown"
        self.routes: dict[str, dict[str, Route]] = {
            "/healthz": {"GET": self.healthz},
            "/readyz": {"GET": self.readyz},
            "/version": {"GET": self.version},
            "/metrics": {"GET": self.metrics_text},
            "/info": {"GET": self.info},
            "/jobs": {"GET": self.jobs},
            "/webhooks/forgejo": {"POST": self.webhook},
            "/reviews/ci": {"POST": self.ci},
        }
        if getattr(intake.forge, "kind", "") == "github":  # one forge per gateway
            del self.routes["/webhooks/forgejo"]
            self.routes["/webhooks/github"] = {"POST": self.github_webhook}

    def healthz(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """The process is up and serving."""
        return Reply(200, {"status": "ok"})

    def readyz(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """200 if the forge answered recently, else 503 with why."""
        ready, reason = self.readiness.check()
        if ready:
            return Reply(200, {"status": "ready"})
        return Reply(503, {"status": "not ready", "reason": reason}, {"Retry-After": "5"})

    def version(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """The gateway's version."""
        return Reply(200, {"version": __version__})

    def metrics_text(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """Prometheus text, with the queue depth read now."""
        try:
            self.metrics.set("queue_depth", self.intake.queue.depth())
            retrying = getattr(self.intake.queue, "retrying", None)
            if retrying is not None:
                self.metrics.set("jobs_waiting_retry", retrying())
        except Exception as exc:
            log(f"auto-review: reading the queue depth failed: {type(exc).__name__}")
        return Reply(200, self.metrics.render(), content_type=METRICS_CONTENT_TYPE)

    def info(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """Version, bundle digest, isolation and the queue's counts."""
        try:
            counts: Any = self.intake.queue.counts()
        except Exception as exc:
            log(f"auto-review: reading the queue counts failed: {type(exc).__name__}")
            counts = None
        return Reply(
            200,
            {
                "version": __version__,
                "bundle_digest": self.bundle_digest,
                "isolation": self.isolation,
                "queue": counts,
            },
        )

    def jobs(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """The newest jobs: id, PR, state, attempts, last error, times."""
        recent = getattr(self.intake.queue, "recent", None)
        if recent is None:
            return Reply(404, {"error": "not found"})
        try:
            rows = recent()
        except Exception as exc:
            log(f"auto-review: reading the jobs failed: {type(exc).__name__}")
            return Reply(503, {"error": "the job queue is unavailable"}, {"Retry-After": "5"})
        for row in rows:
            if row.get("error"):
                row["error"] = self.intake.safe(str(row["error"]))
        return Reply(200, {"jobs": rows})

    def webhook(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """``POST /webhooks/forgejo``."""
        return forgejo_webhooks.handle(self.intake, headers, body)

    def github_webhook(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """``POST /webhooks/github``."""
        from auto_review_gateway import github_webhooks

        return github_webhooks.handle(self.intake, headers, body)

    def ci(self, headers: Mapping[str, str], body: bytes) -> Reply:
        """``POST /reviews/ci``."""
        from auto_review_gateway import ci

        return ci.handle_ci(self.intake, headers, body)


class _Deadlines:
    """Drops connections that have not delivered their whole request in time."""

    def __init__(self, tick: float) -> None:
        self._lock = threading.Lock()
        self._due: dict[Handler, float] = {}
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="http-deadlines", daemon=True)
        self._thread.start()

    def arm(self, handler: Handler, due: float) -> None:
        """Drop ``handler``'s connection at ``due`` (monotonic time) unless disarmed."""
        with self._lock:
            self._due[handler] = due

    def disarm(self, handler: Handler) -> None:
        """The request has arrived (or the connection ended): no deadline."""
        with self._lock:
            self._due.pop(handler, None)

    def stop(self) -> None:
        """End the reaper thread."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            now = time.monotonic()
            with self._lock:
                late = [h for h, due in self._due.items() if due <= now]
                for handler in late:
                    del self._due[handler]
            for handler in late:
                handler.drop()


class GatewayServer(ThreadingHTTPServer):
    """A threading HTTP server for :class:`Gateway` (IPv4 or IPv6, no reverse DNS)."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        gateway: Gateway,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_body: int = MAX_BODY_BYTES,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.gateway = gateway
        self.request_timeout = request_timeout
        self.max_body = max_body
        self._slots = threading.BoundedSemaphore(max_connections)
        self._active = 0
        self._idle = threading.Condition()
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.deadlines = _Deadlines(tick=max(0.05, min(1.0, request_timeout / 4)))
        try:
            super().__init__(address, Handler)
        except BaseException:
            self.deadlines.stop()
            raise

    def server_bind(self) -> None:
        """Bind without HTTPServer's getfqdn(): a reverse DNS lookup can hang in a sandbox."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    @property
    def port(self) -> int:
        """The port listened on (the real one when bound to port 0)."""
        return int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve in a new thread, or answer a canned 503 when all slots are taken."""
        if not self._slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(_CANNED_503)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        with self._idle:
            self._active += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Handle one connection, then give its slot back."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        self._slots.release()
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no connection is being served; False if still busy at ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._active > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, never a traceback (the default prints one to stderr)."""
        kind = sys.exc_info()[0]
        name = kind.__name__ if kind else "error"
        host = client_address[0] if client_address else "-"
        log(f"auto-review: http {host}: connection error: {name}")

    def server_close(self) -> None:
        """Close the listening socket and stop the deadline reaper."""
        self.deadlines.stop()
        super().server_close()


class _Dropped(Exception):
    """The client went away or was dropped while sending its request."""


class Handler(BaseHTTPRequestHandler):
    """One connection, one request: route it to the :class:`Gateway`, answer, close."""

    server: GatewayServer
    protocol_version = "HTTP/1.1"
    server_version = "auto-review"

    def version_string(self) -> str:
        """The Server header: the name only."""
        return self.server_version

    # ------------------------------------------------------------------ connection

    def setup(self) -> None:
        """Apply the timeout and start the request's clock."""
        self.timeout = self.server.request_timeout
        self.dropped = False
        self.started = time.monotonic()
        self.status: int | None = None
        self.reason: str | None = None
        self.unread_body = False
        self.replied = False
        self.command = ""
        self.path = ""
        self.raw_requestline = b""
        super().setup()
        self.server.deadlines.arm(self, self.started + self.server.request_timeout)

    def handle(self) -> None:
        """Serve exactly one request (no keep-alive)."""
        self.close_connection = True
        self.handle_one_request()

    def finish(self) -> None:
        """Drain an unread body, write the access-log line, close."""
        self.server.deadlines.disarm(self)
        if self.unread_body and not self.dropped:
            self._linger()
        try:
            super().finish()
        except OSError:
            pass
        self._access_log()

    def drop(self) -> None:
        """Called by the reaper: the request did not arrive in time; cut the connection."""
        self.dropped = True
        self.reason = f"dropped: request incomplete after {self.server.request_timeout:g}s"
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _linger(self) -> None:
        """After answering without reading the body: stop sending, then read and drop what
        the client still sends (bounded in bytes and time), so that closing does not reset
        the connection before the client has read the answer."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            budget = 4 * self.server.max_body
            while budget > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.connection.settimeout(left)
                chunk = self.connection.recv(min(65536, budget))
                if not chunk:
                    break
                budget -= len(chunk)
        except OSError:
            pass

    def _access_log(self) -> None:
        if not self.raw_requestline and self.status is None and self.reason is None:
            return  # connected and closed without a word (a port check)
        ms = int((time.monotonic() - self.started) * 1000)
        path = self.path.split("?", 1)[0].split("#", 1)[0] if self.path else "-"
        path = httpjson.clean_text(path, 200).replace(" ", "%20") or "-"
        method = self.command if self.command and self.command.isalpha() else "-"
        status = str(self.status) if self.status is not None else "-"
        extra = f" ({self.reason})" if self.reason else ""
        client = self.client_address[0]
        log(f"auto-review: http {client} {method[:10]} {path} {status} {ms}ms{extra}")

    # ------------------------------------------------------------------ answering

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Remember the status for the access log (written once the answer is sent)."""
        try:
            self.status = int(code)
        except (TypeError, ValueError):
            self.status = None

    def log_error(self, format: str, *args: Any) -> None:
        """The base class's error notes (they may quote the request): keep a fixed reason."""
        if format.startswith("Request timed out"):
            self.reason = "timed out"

    def log_message(self, format: str, *args: Any) -> None:
        """Everything goes through the access log instead."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """A JSON error that never echoes the request (the default HTML page does)."""
        self.close_connection = True
        if self.dropped or self.replied:
            return
        try:
            phrase = HTTPStatus(code).phrase.lower()
        except ValueError:
            phrase = "error"
        self._reply(Reply(code, {"error": phrase}))

    def _reply(self, reply: Reply) -> None:
        if reply.content_type == "application/json":
            data = json.dumps(reply.body).encode("utf-8")
        else:
            data = str(reply.body).encode("utf-8")
        self.replied = True
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    # ------------------------------------------------------------------ reading

    def _content_length(self) -> int | Reply | None:
        """The declared body length, None if there is none, or the error to answer."""
        if self.headers.get("Transfer-Encoding") is not None:
            return Reply(411, {"error": "a Content-Length is required (no chunked bodies)"})
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return None
        if len(set(values)) != 1 or not values[0].strip().isdigit():
            return Reply(400, {"error": "invalid Content-Length"})
        return int(values[0].strip())

    def handle_expect_100(self) -> bool:
        """Refuse an oversized body before the client sends it."""
        length = self._content_length()
        if isinstance(length, int) and length > self.server.max_body:
            self.unread_body = True
            self._reply(Reply(413, {"error": f"body larger than {self.server.max_body} bytes"}))
            return False
        return super().handle_expect_100()

    def _read_body(self) -> bytes | Reply:
        length = self._content_length()
        if length is None:
            return Reply(411, {"error": "a Content-Length is required"})
        if isinstance(length, Reply):
            self.unread_body = True
            return length
        if length > self.server.max_body:
            self.unread_body = True
            return Reply(413, {"error": f"body larger than {self.server.max_body} bytes"})
        chunks: list[bytes] = []
        left = length
        try:
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    raise _Dropped("the client closed the connection mid-body")
                chunks.append(chunk)
                left -= len(chunk)
        except (TimeoutError, OSError) as exc:
            raise _Dropped(type(exc).__name__) from None
        if self.dropped:
            raise _Dropped("dropped")
        return b"".join(chunks)

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self) -> None:
        if self.dropped:
            return
        try:
            reply = self._route()
        except _Dropped as exc:
            self.close_connection = True
            if not self.dropped:
                self.reason = f"dropped: {exc}"
            return
        except Exception as exc:
            intake = self.server.gateway.intake
            log(
                f"auto-review: internal error on {self.command} {self.path.split('?', 1)[0]}: "
                f"{type(exc).__name__}: {intake.safe(str(exc))}"
            )
            reply = Reply(500, {"error": "internal error"})
        if self.dropped:
            return
        self._reply(reply)

    def _route(self) -> Reply:
        path = self.path.split("?", 1)[0]
        methods = self.server.gateway.routes.get(path)
        if self.command != "POST":
            self.server.deadlines.disarm(self)
            if self._content_length() not in (None, 0):
                self.unread_body = True
        if methods is None:
            if self.command == "POST":
                self.unread_body = True
            return Reply(404, {"error": "not found"})
        route = methods.get("GET" if self.command == "HEAD" else self.command)
        if route is None:
            if self.command == "POST":
                self.unread_body = True
            allow = ", ".join(sorted(methods))
            return Reply(405, {"error": "method not allowed"}, {"Allow": allow})
        body = b""
        if self.command == "POST":
            read = self._read_body()
            self.server.deadlines.disarm(self)
            if isinstance(read, Reply):
                return read
            body = read
        return route(self.headers, body)

    do_GET = _dispatch
    do_POST = _dispatch
    do_HEAD = _dispatch
    do_PUT = _dispatch
    do_DELETE = _dispatch
    do_PATCH = _dispatch
    do_OPTIONS = _dispatch
