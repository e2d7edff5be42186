"""A private PostgreSQL 15 cluster for a test: ``initdb`` in a temporary dir, run as the
``postgres`` user (the server refuses root), listening on a loopback port and a Unix
socket in that dir, host logins by SCRAM-SHA-256 password. Debian's ``postgresql-15``
(.ci/setup installs it)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")
OWNER = "postgres"
ROLE, DATABASE = "auto_review", "auto_review"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """One cluster: :meth:`start`, :meth:`stop`, :meth:`sql`, :meth:`url` for the gateway's
    role (which owns its database and nothing else)."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="ar-pg-", dir="/tmp"))
        self.data, self.log = self.base / "data", self.base / "server.log"
        self.port = free_port()
        self.password = "pw-" + os.urandom(8).hex()
        user = pwd.getpwnam(OWNER)
        os.chown(self.base, user.pw_uid, user.pw_gid)
        pwfile = self.base / "superuser.pw"
        pwfile.write_text(os.urandom(8).hex() + "\n")
        os.chown(pwfile, user.pw_uid, user.pw_gid)
        self._as_owner(
            str(BIN / "initdb"), "-D", str(self.data), "-U", OWNER, "--pwfile", str(pwfile),
            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        self.start()
        self.sql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{self.password}'")
        self.sql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")

    def _as_owner(self, *argv: str, timeout: float = 60) -> str:
        proc = subprocess.run(
            argv, user=OWNER, group=OWNER, extra_groups=[], capture_output=True, text=True,
            timeout=timeout, cwd=self.base, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def start(self) -> None:
        """Start the server and wait until it accepts connections (pg_ctl -w)."""
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base}"
            " -c fsync=off -c synchronous_commit=off -c max_connections=60"
        )
        self._as_owner(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                       "-o", options, "-w", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: connections are cut, as in a failover)."""
        self._as_owner(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run ``statement`` as the superuser over the Unix socket; its unaligned output."""
        return self._as_owner(
            str(BIN / "psql"), "-h", str(self.base), "-p", str(self.port), "-U", OWNER,
            "-d", database, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", statement,
        ).strip()  # fmt: skip

    def url(
        self,
        host: str = "127.0.0.1",
        password: str | None = None,
        port: int = 0,
        database: str = DATABASE,
    ) -> str:
        """The gateway's AR_QUEUE_URL (the right password unless one is given)."""
        secret = self.password if password is None else password
        return f"postgresql://{ROLE}:{secret}@{host}:{port or self.port}/{database}"

    def database(self, name: str) -> str:
        """A new empty database ``name`` owned by the gateway's role; its name."""
        self.sql(f"CREATE DATABASE {name} OWNER {ROLE}")
        return name

    def enable_tls(self, cert: Path, key: Path) -> None:
        """Serve TLS with ``cert`` and ``key`` (copied in, the key 0600 as the server
        wants it); plain connections stay allowed. Reloaded, not restarted."""
        user = pwd.getpwnam(OWNER)
        for src, name in ((cert, "server.crt"), (key, "server.key")):
            dest = self.base / name
            shutil.copyfile(src, dest)
            os.chown(dest, user.pw_uid, user.pw_gid)
            os.chmod(dest, 0o600)
        self.sql(f"ALTER SYSTEM SET ssl_cert_file = '{self.base / 'server.crt'}'")
        self.sql(f"ALTER SYSTEM SET ssl_key_file = '{self.base / 'server.key'}'")
        self.sql("ALTER SYSTEM SET ssl = on")
        self.sql("SELECT pg_reload_conf()")

    def close(self) -> None:
        try:
            self.stop("immediate")
        except RuntimeError:
            pass  # already stopped
        shutil.rmtree(self.base, ignore_errors=True)
