"""What an attacker (or a slip) puts in the gateway's way: files where a PEM file is
expected (reads of them must be bounded, never hang, and end in one line), and a server of
another origin that a forge's redirect sends git to (it records what it was sent)."""

from __future__ import annotations

import os
import ssl
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from loopback import LoopbackServer, serve_git


def fifo_and_oversized(tmp_path: Path, head: bytes, size: int) -> tuple[Path, Path]:
    """A FIFO nobody writes to (a blocking open would wait forever) and a sparse file of
    `size` bytes that starts like the real thing."""
    fifo = tmp_path / "hostile.fifo"
    os.mkfifo(fifo)
    big = tmp_path / "hostile-big.pem"
    with open(big, "wb") as fh:
        fh.write(head)
        fh.truncate(size)
    return fifo, big


class RecordingGitServer(LoopbackServer):
    """Another origin: serves the bare repositories under ``git_root`` to anyone (no
    token wanted) and records every request with its headers, so a test can show what a
    redirected client sent it. ``ssl_context`` serves HTTPS."""

    def __init__(self, git_root: str | os.PathLike[str], ssl_context: ssl.SSLContext) -> None:
        super().__init__(ssl_context)
        self.git_root = os.fspath(git_root)
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # method, path, headers
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """``https://127.0.0.1:<port>``: another origin than any other loopback stand-in."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with fake._lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    fake.requests.append((method, self.path, headers))
                serve_git(self, fake.git_root, method, body)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

        return Handler


def redirect(handler: BaseHTTPRequestHandler, origin: str) -> None:
    """Answer ``handler``'s request with a 302 to the same path on ``origin``."""
    handler.send_response(302)
    handler.send_header("Location", origin + handler.path)
    handler.send_header("Content-Length", "0")
    handler.end_headers()
