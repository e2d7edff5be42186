"""A real git smart-HTTP server over TLS on loopback, for integration tests.

Inside the sandbox ``file://`` clones cannot work: git runs ``upload-pack``
through ``sh`` for local transports and the rootfs has no shell. Cloning over
HTTPS from a real server exercises the same path the gateway uses in
production: libcurl, TLS verification against a CA file, and git's smart-HTTP
protocol (v0 and v2).

The pieces:

* :func:`make_ca` creates a throwaway CA and a server certificate for
  ``localhost`` and ``127.0.0.1`` with the ``openssl`` command-line tool.
* :class:`GitHttpsServer` runs the real ``git http-backend`` CGI program behind
  ``http.server.ThreadingHTTPServer`` wrapped in TLS, on an ephemeral port.
* :func:`make_repo` and :func:`commit` build bare repositories with
  deterministic commits (fixed author, committer and dates), so SHAs are stable
  from run to run.
* :func:`git_env` gives a minimal environment for running git clients that
  ignore the user's and the system's configuration.

Typical use::

    certs = make_ca(tmp_path / "certs")
    sha = make_repo(tmp_path / "repos" / "demo.git", {"README": "hi\\n"})
    with GitHttpsServer(tmp_path / "repos", certs) as server:
        env = git_env(tmp_path / "home", GIT_SSL_CAINFO=str(certs.ca_cert))
        subprocess.run(["git", "clone", server.repo_url("demo"), "out"], env=env, check=True)
        assert any("git-upload-pack" in r for r in server.requests)
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

from loopback import Startable

HTTP_BACKEND = Path("/usr/lib/git-core/git-http-backend")  # Debian's; see http_backend()
DEFAULT_BRANCH = "main"
# Deterministic identity and clock for every commit made by this module.
AUTHOR_NAME = "Auto Review Test"
AUTHOR_EMAIL = "test@auto-review.invalid"
BASE_EPOCH = 1_700_000_000
DEBUG_ENV = "AUTO_REVIEW_GITSERVER_DEBUG"

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}
)
_CHUNK = 64 * 1024


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class CertFiles:
    """PEM files written by :func:`make_ca`."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    """Run the openssl CLI quietly; raise with its output on failure."""
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("the openssl command is missing: apt-get install -y openssl")
    proc = subprocess.run(
        [exe, *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed:\n{proc.stdout}{proc.stderr}")


def make_ca(
    directory: str | os.PathLike[str],
    hosts: Iterable[str] = ("localhost", "127.0.0.1"),
    days: int = 30,
) -> CertFiles:
    """Create a throwaway CA and a server certificate it signs, in ``directory``.

    The server certificate names every entry of ``hosts`` as a subjectAltName
    (IP addresses as ``IP:``, anything else as ``DNS:``). Keys are ECDSA
    P-256 (fast to make, accepted by OpenSSL and GnuTLS builds of libcurl),
    unencrypted. Returns the paths of the PEM files.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    names = list(hosts)
    sans = []
    for host in names:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            sans.append(f"DNS:{host}")
        else:
            sans.append(f"IP:{host}")
    if not sans:
        raise ValueError("make_ca needs at least one host name")
    first = names[0]
    files = CertFiles(
        ca_cert=out / "ca.pem",
        ca_key=out / "ca.key",
        server_cert=out / "server.pem",
        server_key=out / "server.key",
    )
    # One config for both requests: no prompts (-subj gives the names) and the
    # CA's extensions; the server's extensions go in at signing time.
    (out / "openssl.cnf").write_text(
        "[req]\n"
        "distinguished_name = dn\n"
        "prompt = no\n"
        "[dn]\n"
        "[ca_ext]\n"
        "basicConstraints = critical, CA:TRUE\n"
        "keyUsage = critical, keyCertSign, cRLSign\n"
        "subjectKeyIdentifier = hash\n"
    )
    (out / "server.ext").write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
        f"subjectAltName = {', '.join(sans)}\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid, issuer\n"
    )
    common = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-config", "openssl.cnf")  # fmt: skip
    _openssl(
        "req", "-x509", *common, "-extensions", "ca_ext", "-sha256", "-days", str(days),
        "-subj", "/CN=auto-review throwaway test CA", "-keyout", "ca.key", "-out", "ca.pem",
        cwd=out,
    )  # fmt: skip
    _openssl(
        "req", "-new", *common, "-subj", f"/CN={first}",
        "-keyout", "server.key", "-out", "server.csr",
        cwd=out,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", str(days), "-sha256",
        "-extfile", "server.ext",
        cwd=out,
    )  # fmt: skip
    return files


# --------------------------------------------------------------------------- git helpers


def git_env(home: str | os.PathLike[str] | None = None, **extra: str) -> dict[str, str]:
    """A minimal environment for running git, blind to user and system config.

    Only PATH is inherited from this process, so variables such as
    ``GIT_SSL_NO_VERIFY``, ``SSL_CERT_FILE`` or ``GIT_DIR`` cannot leak in.
    With ``home`` the directory is created (empty) and used as HOME; without,
    the global config is ``/dev/null``. ``extra`` is added last.
    """
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
    }
    if home is None:
        env["HOME"] = os.devnull
        env["GIT_CONFIG_GLOBAL"] = os.devnull
    else:
        Path(home).mkdir(parents=True, exist_ok=True)
        env["HOME"] = str(home)
    env.update(extra)
    return env


def _git(
    *args: str,
    git_dir: Path | None = None,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run git and return its stripped stdout; raise with stderr on failure."""
    cmd = ["git"]
    if git_dir is not None:
        cmd += ["--git-dir", str(git_dir)]
    proc = subprocess.run(
        [*cmd, *args],
        input=input,
        capture_output=True,
        env=dict(env) if env is not None else git_env(),
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"git {' '.join(args)} failed ({proc.returncode}):\n"
            + proc.stderr.decode(errors="replace")
        )
    return proc.stdout.decode().strip()


def _as_bytes(content: bytes | str) -> bytes:
    return content.encode() if isinstance(content, str) else bytes(content)


def commit(
    path: str | os.PathLike[str],
    files: Mapping[str, bytes | str | None],
    message: str = "update",
    *,
    branch: str = DEFAULT_BRANCH,
) -> str:
    """Add one commit to ``branch`` of the bare repository at ``path``; return its SHA.

    The new tree is the branch's current tree (empty for a new branch) with
    ``files`` applied: a value writes that file (str is UTF-8 encoded, mode
    100644), ``None`` deletes it. Author, committer and date are fixed (the
    date advances one minute per commit in the branch's history), so the same
    calls always give the same SHAs. Works without a work tree, through
    ``git fast-import``.
    """
    git_dir = Path(path)
    ref = f"refs/heads/{branch}"
    try:
        parent = _git("rev-parse", "--verify", "-q", f"{ref}^{{commit}}", git_dir=git_dir)
    except RuntimeError:
        parent = ""
    depth = int(_git("rev-list", "--count", parent, git_dir=git_dir)) if parent else 0
    when = f"{BASE_EPOCH + 60 * depth} +0000"
    ident = f"{AUTHOR_NAME} <{AUTHOR_EMAIL}> {when}"
    msg = _as_bytes(message)
    if not msg.endswith(b"\n"):
        msg += b"\n"
    stream = [
        f"commit {ref}\n".encode(),
        f"author {ident}\ncommitter {ident}\n".encode(),
        f"data {len(msg)}\n".encode() + msg,
    ]
    if parent:
        stream.append(f"from {parent}\n".encode())
    for name in sorted(files):
        if not name or name.startswith(("/", '"')) or any(c in name for c in "\n\r\0"):
            raise ValueError(f"unsupported file name {name!r}")
        content = files[name]
        if content is None:
            stream.append(f"D {name}\n".encode())
        else:
            data = _as_bytes(content)
            stream.append(f"M 100644 inline {name}\ndata {len(data)}\n".encode() + data + b"\n")
    stream.append(b"done\n")
    _git("fast-import", "--quiet", "--done", git_dir=git_dir, input=b"".join(stream))
    return _git("rev-parse", ref, git_dir=git_dir)


def make_repo(
    path: str | os.PathLike[str],
    files: Mapping[str, bytes | str],
    message: str = "initial commit",
    *,
    config: Mapping[str, str] | None = None,
    branch: str = DEFAULT_BRANCH,
) -> str:
    """Create a bare repository at ``path`` with one commit of ``files``; return its SHA.

    ``path`` should be ``<repos_root>/<name>.git`` for :class:`GitHttpsServer`
    to serve it as ``<url>/<name>.git``. HEAD points at ``branch``. ``config``
    entries are written to the repository's own config (for example
    ``{"uploadpack.allowAnySHA1InWant": "true"}``).
    """
    git_dir = Path(path)
    git_dir.parent.mkdir(parents=True, exist_ok=True)
    _git("init", "--quiet", "--bare", f"--initial-branch={branch}", str(git_dir))
    for key, value in (config or {}).items():
        _git("config", key, value, git_dir=git_dir)
    return commit(git_dir, files, message, branch=branch)


# --------------------------------------------------------------------------- server


def http_backend() -> Path:
    """Path of the ``git-http-backend`` CGI program of the git on PATH."""
    try:
        exec_path = subprocess.run(
            ["git", "--exec-path"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return HTTP_BACKEND
    candidate = Path(exec_path) / "git-http-backend"
    return candidate if os.access(candidate, os.X_OK) else HTTP_BACKEND


@dataclass
class RequestRecord:
    """One HTTP request the server answered (filled in before the response is sent)."""

    method: str
    path: str
    git_protocol: str | None = None
    content_encoding: str | None = None
    chunked: bool = False
    body_size: int = 0
    status: int | None = None
    stderr: str = ""

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


class _BadRequest(Exception):
    """The request body could not be read."""


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that reports to its GitHttpsServer and tracks connections."""

    daemon_threads = True
    owner: GitHttpsServer

    def server_bind(self) -> None:
        # HTTPServer.server_bind also resolves the FQDN of the address, which
        # can stall on a machine without DNS; nothing here needs it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self.owner._lock:
            self.owner._connections.add(request)
        return True

    def shutdown_request(self, request: Any) -> None:
        with self.owner._lock:
            self.owner._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        text = f"{client_address}: {exc!r}"
        with self.owner._lock:
            if isinstance(exc, ssl.SSLError):
                self.owner.tls_errors.append(text)
            else:
                self.owner.errors.append(text)
        if self.owner.debug:
            traceback.print_exc()


class _Handler(BaseHTTPRequestHandler):
    """Serves one connection: TLS handshake, then HTTP/1.1 requests run through http-backend."""

    protocol_version = "HTTP/1.1"
    server_version = "auto-review-test-gitserver/1"
    timeout = 60
    server: _Server

    def setup(self) -> None:
        # The listening socket does not handshake in accept() (that would stall
        # the accept loop on a slow client): do it here, in this connection's thread.
        self.request.settimeout(self.timeout)
        self.request.do_handshake()
        with self.server.owner._lock:
            self.server.owner.tls_handshakes += 1
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.owner.debug:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._run_backend()

    def do_POST(self) -> None:
        self._run_backend()

    # -- request body

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            line = self.rfile.readline(1024)
            if not line.endswith(b"\n"):
                raise _BadRequest("truncated chunk size line")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest(f"bad chunk size line {line!r}") from None
            if size < 0:
                raise _BadRequest("negative chunk size")
            if size == 0:
                break
            data = self.rfile.read(size)
            if len(data) != size or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise _BadRequest("truncated chunk")
            parts.append(data)
        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
            pass  # trailers, ignored
        return b"".join(parts)

    def _read_body(self, record: RequestRecord) -> bytes:
        encoding = self.headers.get("Transfer-Encoding", "")
        if encoding:
            if encoding.strip().lower() != "chunked":
                raise _BadRequest(f"unsupported Transfer-Encoding {encoding!r}")
            record.chunked = True
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            raise _BadRequest(f"bad Content-Length {length!r}") from None
        if size < 0:
            raise _BadRequest("negative Content-Length")
        body = self.rfile.read(size)
        if len(body) != size:
            raise _BadRequest("truncated body")
        return body

    # -- CGI

    def _cgi_env(self, path: str, query: str, body: bytes) -> dict[str, str]:
        owner = self.server.owner
        env = dict(owner._base_env)
        env.update(
            {
                "GATEWAY_INTERFACE": "CGI/1.1",
                "SERVER_PROTOCOL": self.request_version,
                "SERVER_SOFTWARE": self.server_version,
                "SERVER_NAME": owner.host,
                "SERVER_PORT": str(owner.port),
                "REQUEST_METHOD": self.command,
                "REQUEST_URI": self.path,
                "SCRIPT_NAME": "",
                "PATH_INFO": unquote(path),
                "QUERY_STRING": query,
                "REMOTE_ADDR": self.client_address[0],
                "REMOTE_PORT": str(self.client_address[1]),
            }
        )
        if self.command == "POST" or body:
            env["CONTENT_LENGTH"] = str(len(body))
        headers = {
            "CONTENT_TYPE": "Content-Type",
            "HTTP_CONTENT_ENCODING": "Content-Encoding",
            "HTTP_GIT_PROTOCOL": "Git-Protocol",
            "HTTP_ACCEPT": "Accept",
            "HTTP_USER_AGENT": "User-Agent",
        }
        for name, header in headers.items():
            value = self.headers.get(header)
            if value is not None:
                env[name] = value
        return env

    def _send_plain(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _run_backend(self) -> None:
        owner = self.server.owner
        path, _, query = self.path.partition("?")
        record = RequestRecord(
            method=self.command,
            path=self.path,
            git_protocol=self.headers.get("Git-Protocol"),
            content_encoding=self.headers.get("Content-Encoding"),
        )
        owner._record(record)
        try:
            body = self._read_body(record)
        except _BadRequest as exc:
            record.status = 400
            self.close_connection = True
            self._send_plain(400, f"{exc}\n")
            return
        record.body_size = len(body)

        with tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(
                [str(owner.backend)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                env=self._cgi_env(path, query, body),
                cwd=owner.repos_root,
            )
            assert proc.stdin is not None and proc.stdout is not None
            feeder = threading.Thread(target=_feed, args=(proc.stdin, body), daemon=True)
            feeder.start()
            try:
                self._relay(proc.stdout, record)
            except BaseException:
                proc.kill()
                self.close_connection = True
                raise
            finally:
                proc.stdout.close()
                proc.wait()
                feeder.join()
                errors.seek(0)
                record.stderr = errors.read().decode(errors="replace")
                if owner.debug and record.stderr:
                    sys.stderr.write(record.stderr)

    def _relay(self, out: IO[bytes], record: RequestRecord) -> None:
        """Parse the CGI response headers from ``out`` and stream the body to the client."""
        status, reason = 200, None
        headers: list[tuple[str, str]] = []
        length: int | None = None
        while True:
            line = out.readline(65536)
            if not line:
                record.status = 502
                self.close_connection = True
                self._send_plain(502, "git http-backend gave no response headers\n")
                return
            line = line.rstrip(b"\r\n")
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip(), value.strip()
            if name.lower() == "status":
                code, _, reason = value.partition(" ")
                status = int(code)
            elif name.lower() == "content-length":
                length = int(value)
            elif name.lower() not in _HOP_BY_HOP:
                headers.append((name, value))
        record.status = status
        self.send_response(status, reason or None)
        for name, value in headers:
            self.send_header(name, value)
        if length is not None:
            self.send_header("Content-Length", str(length))
            self.end_headers()
            remaining = length
            while remaining > 0:
                data = out.read(min(remaining, _CHUNK))
                if not data:
                    self.close_connection = True
                    return
                self.wfile.write(data)
                remaining -= len(data)
        else:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            read1 = getattr(out, "read1", out.read)
            while data := read1(_CHUNK):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _feed(pipe: IO[bytes], body: bytes) -> None:
    """Write the request body to the CGI's stdin, then close it."""
    try:
        if body:
            pipe.write(body)
    except (BrokenPipeError, ValueError):
        pass  # the backend answered without reading everything (an error response)
    finally:
        try:
            pipe.close()
        except BrokenPipeError:
            pass


class GitHttpsServer(Startable):
    """``git http-backend`` served over HTTPS on loopback, in a background thread.

    Serves every bare repository under ``repos_root`` (``<repos_root>/<name>.git``
    as ``<url>/<name>.git``), for fetch and clone, protocol v0 and v2. Pushes
    are refused unless ``push=True``. ``config`` is extra git configuration
    given to every request (through ``GIT_CONFIG_COUNT``), on top of each
    repository's own. Use as a context manager, or call :meth:`start` and
    :meth:`stop`.

    Every request is logged, before its response is sent, in :attr:`requests`
    (``"METHOD /path?query"``) and :attr:`records` (:class:`RequestRecord`).
    Completed TLS handshakes are counted in :attr:`tls_handshakes` (a client
    that rejects the certificate may still complete one, then hang up), failed
    ones are logged in :attr:`tls_errors`, handler errors in :attr:`errors`.
    Nothing is printed unless ``debug`` is true (default: the environment
    variable ``AUTO_REVIEW_GITSERVER_DEBUG`` is set and not empty). A subclass may
    serve with another ``handler_class`` (tests/hostilegit.py does).
    """

    handler_class: type[BaseHTTPRequestHandler] = _Handler

    def __init__(
        self,
        repos_root: str | os.PathLike[str],
        certs: CertFiles,
        *,
        host: str = "127.0.0.1",
        hostname: str = "localhost",
        push: bool = False,
        config: Mapping[str, str] | None = None,
        debug: bool | None = None,
    ) -> None:
        """Prepare the server; nothing listens until :meth:`start`."""
        self.backend = http_backend()
        if not os.access(self.backend, os.X_OK):
            raise RuntimeError(f"{self.backend} is missing: apt-get install -y git")
        self.repos_root = Path(repos_root).resolve()
        self.certs = certs
        self.host = host
        self.hostname = hostname
        self.debug = bool(os.environ.get(DEBUG_ENV)) if debug is None else debug
        self.requests: list[str] = []
        self.records: list[RequestRecord] = []
        self.tls_errors: list[str] = []
        self.tls_handshakes = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._home: tempfile.TemporaryDirectory[str] | None = None
        settings = dict(config or {})
        if push:
            settings["http.receivepack"] = "true"
        self._config = settings
        self._base_env: dict[str, str] = {}

    # -- lifecycle

    def start(self) -> GitHttpsServer:
        """Bind an ephemeral port on ``host``, wrap it in TLS and serve in a thread."""
        if self._server is not None:
            raise RuntimeError("server already started")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certs.server_cert, self.certs.server_key)
        context.set_alpn_protocols(["http/1.1"])
        self._home = tempfile.TemporaryDirectory(prefix="gitserver-home-")
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": self._home.name,
            "LC_ALL": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_PROJECT_ROOT": str(self.repos_root),
            "GIT_HTTP_EXPORT_ALL": "1",
        }
        if self._config:
            env["GIT_CONFIG_COUNT"] = str(len(self._config))
            for i, (key, value) in enumerate(self._config.items()):
                env[f"GIT_CONFIG_KEY_{i}"] = key
                env[f"GIT_CONFIG_VALUE_{i}"] = value
        self._base_env = env

        server = _Server((self.host, 0), self.handler_class, bind_and_activate=True)
        server.owner = self
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"gitserver:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections and free the port. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._home is not None:
            self._home.cleanup()
            self._home = None

    # -- addresses

    @property
    def port(self) -> int:
        """The TCP port the server listens on (only while started)."""
        if self._server is None:
            raise RuntimeError("server not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``https://localhost:43121`` (the host name is in the certificate)."""
        return f"https://{self.hostname}:{self.port}"

    def repo_url(self, name: str) -> str:
        """URL of ``<repos_root>/<name>.git`` (``name`` may already end in ``.git``)."""
        if not name.endswith(".git"):
            name += ".git"
        return f"{self.url}/{name}"

    # -- log

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.records.append(record)
            self.requests.append(str(record))

    def clear_log(self) -> None:
        """Forget the requests and errors logged so far."""
        with self._lock:
            self.requests.clear()
            self.records.clear()
            self.tls_errors.clear()
            self.tls_handshakes = 0
            self.errors.clear()
