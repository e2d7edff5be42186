"""The gateway's HTTP server: stdlib ``http.server``, one thread per connection, each
served by :class:`~auto_review_gateway.web.handler.Handler` for one request (every
answer closes the connection); the answers come from :mod:`endpoints`.

What protects the process from its clients here (the request's share, bodies and
errors, is in :mod:`handler`):

* time: each connection gets ``request_timeout`` seconds (``AR_REQUEST_TIMEOUT``) to
  deliver its request line, headers and body, as a whole, not per read: a client that
  trickles is dropped by a reaper thread, and the same timeout bounds every socket read
  and write, so a silent client costs one thread for at most that long;
* connections: at most MAX_CONNECTIONS are served at once; the next ones get a canned
  503 at once instead of a thread.
"""

from __future__ import annotations

import socket
import socketserver
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any

from auto_review_gateway.core.log import log
from auto_review_gateway.web.endpoints import Gateway
from auto_review_gateway.web.handler import Handler

MAX_BODY_BYTES = 1024 * 1024
MAX_CONNECTIONS = 128
LISTEN_BACKLOG = 128
DEFAULT_REQUEST_TIMEOUT = 10.0
_CANNED_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 30\r\n"
    b"Retry-After: 5\r\n"
    b"Connection: close\r\n\r\n"
    b'{"error": "too many requests"}'
)


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
