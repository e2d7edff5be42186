"""One connection, one request: read it within the limits, route it to the
:class:`~auto_review_gateway.endpoints.Gateway`, answer, log it, close.

``HEAD`` is answered like ``GET`` without the body. Anything else is 404, a known path
with another method 405 (with ``Allow``), an unsupported method 501. What protects the
process from its clients here (the server's share is in :mod:`server`):

* bodies: ``Content-Length`` is required (411 without it, chunked is refused), a body over
  the server's ``max_body`` (``server.MAX_BODY_BYTES``) is refused with 413 before it is
  read (also on ``Expect: 100-continue``); an unread body is drained for at most
  LINGER_SECONDS before closing;
* errors: an unexpected exception answers 500 ``{"error": "internal error"}`` and logs
  one line (type and redacted message), never a stack trace, to the client or the log.

The access log is one line per request on stderr: client address, method, path without
the query string, status, duration. Headers and bodies are never logged.
"""

from __future__ import annotations

import json
import socket
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol

from auto_review_gateway.core import httpjson
from auto_review_gateway.core.log import log
from auto_review_gateway.intake.endpoint import Reply
from auto_review_gateway.web.endpoints import Gateway

LINGER_SECONDS = 2.0  # reading (and dropping) an unread body before closing, see _linger


class _Dropped(Exception):
    """The client went away or was dropped while sending its request."""


class Deadlines(Protocol):
    """The server's reaper of slow requests, as a handler uses it."""

    def arm(self, handler: Handler, due: float) -> None:
        """Drop ``handler``'s connection if it is still reading its request at ``due``."""
        ...

    def disarm(self, handler: Handler) -> None:
        """The request arrived (or the connection ends): no deadline any more."""
        ...


class HandlerServer(Protocol):
    """What a :class:`Handler` needs of its server; the gateway's
    :class:`~auto_review_gateway.web.server.GatewayServer` is one (declared here so that
    this module does not import the server that imports it)."""

    gateway: Gateway
    request_timeout: float
    max_body: int
    deadlines: Deadlines


class Handler(BaseHTTPRequestHandler):
    """One connection, one request: route it to the :class:`Gateway`, answer, close."""

    server: HandlerServer  # type: ignore[assignment]
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
