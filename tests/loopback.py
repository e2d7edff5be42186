"""The lifecycle the loopback stand-in servers share: an HTTP server on an ephemeral
127.0.0.1 port (TLS when given a context), served from a background thread."""

from __future__ import annotations

import os
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TypeVar

S = TypeVar("S", bound="Startable")


class Startable:
    """`with server:` starts it and stops it; subclasses define start() and stop()."""

    def start(self: S) -> S:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LoopbackServer(Startable):
    """Use as a context manager, or call :meth:`start` / :meth:`stop`."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # readable after each request a subclass records (tests/changes.py waits on it)
        self.changed_fd, self._changed_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def notify_change(self) -> None:
        """Wake whoever waits in tests/changes.py for this stand-in's state."""
        try:
            os.write(self._changed_w, b"!")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def handler(self) -> type[BaseHTTPRequestHandler]:
        """The request handler class bound to this server's state."""
        raise NotImplementedError

    def start(self: S) -> S:
        """Bind an ephemeral loopback port and serve in a background thread."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        server.daemon_threads = True
        server.block_on_close = False  # a stalled handler must not hold up stop()
        if self._ssl_context is not None:
            server.socket = self._ssl_context.wrap_socket(server.socket, server_side=True)
        self._server = server
        # a short poll interval: stop() waits for the serve loop to notice shutdown()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        """The bound port (only while started)."""
        assert self._server is not None, "not started"
        return self._server.server_address[1]

    @property
    def scheme(self) -> str:
        return "https" if self._ssl_context is not None else "http"


def serve_git(handler: BaseHTTPRequestHandler, git_root: str | None, method: str,
              body: bytes) -> int:  # fmt: skip
    """Answer one smart-HTTP request through ``git http-backend`` (CGI) over the bare
    repositories under `git_root`, as a forge stand-in serves clones; the status sent."""
    path, _, query = handler.path.partition("?")
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "GIT_PROJECT_ROOT": git_root or "",
        "GIT_HTTP_EXPORT_ALL": "1",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": git_root or "/",
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "CONTENT_TYPE": handler.headers.get("Content-Type", ""),
        "CONTENT_LENGTH": str(len(body)),
        "REMOTE_ADDR": handler.client_address[0],
        "GATEWAY_INTERFACE": "CGI/1.1",
    }
    for name, header in (("HTTP_CONTENT_ENCODING", "Content-Encoding"),
                         ("HTTP_GIT_PROTOCOL", "Git-Protocol")):  # fmt: skip
        if handler.headers.get(header):
            env[name] = handler.headers[header]
    proc = subprocess.run(
        ["git", "http-backend"], input=body, capture_output=True, env=env, timeout=60
    )
    head, _, payload = proc.stdout.partition(b"\r\n\r\n")
    status, headers = 200, []
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.split()[0])
        elif name:
            headers.append((name.strip(), value.strip()))
    handler.send_response(status)
    for name, value in headers:
        if name.lower() not in ("content-length", "transfer-encoding"):
            handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)
    return status


def deliver(url: str, headers: dict[str, str], raw: bytes) -> tuple[int, bytes]:
    """POST a webhook delivery as a forge does (plain HTTP or TLS with the process's CA
    file, no redirects followed); ``(status, body)``, status 0 when nothing answered."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=raw, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""
