"""``AUTO_REVIEW_CA_FILE`` where no launcher binds it in: bare runs and the container image.

In the sandbox the launcher appends the operator's CA file to the rootfs's bundle
and binds the result over it, and the variable never reaches the gateway. In a
bare run (``--bare``) and in the exported image the gateway is started directly,
so it does the same here: the combined bundle (the current ``SSL_CERT_FILE``
plus the operator's certificates) is written to a private temporary file that
``SSL_CERT_FILE`` (Python's ssl) and ``GIT_SSL_CAINFO`` (git) then name.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays out of every gateway start
    from typing import NoReturn

DEFAULT_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"
EXIT_CONFIG = 78  # EX_CONFIG, as the launcher's bad settings
PEM_MARK = b"-----BEGIN CERTIFICATE-----"
MAX_BYTES = 16 << 20


def _fail(message: str, fix: str) -> NoReturn:
    sys.stderr.write(f"auto-review: {message} -- {fix}\n")
    raise SystemExit(EXIT_CONFIG)


def _read_bounded(path: str) -> bytes:
    """A regular file of at most MAX_BYTES (boundedfile), else exit 78."""
    from auto_review_gateway.core.boundedfile import FileRefused, read_regular_file

    try:
        return read_regular_file(path, MAX_BYTES)
    except FileRefused as exc:
        _fail(f"AUTO_REVIEW_CA_FILE={path}{exc}", "point it at a PEM file")


def apply_extra_ca() -> str | None:
    """Merge ``AUTO_REVIEW_CA_FILE`` into the trust store of this process and its children.

    Returns the combined bundle's path (None when the variable is unset); a file
    that is missing or holds no certificate ends the process with exit 78.
    """
    extra = os.environ.get("AUTO_REVIEW_CA_FILE", "").strip()
    if not extra:
        return None
    pem = _read_bounded(extra)
    if PEM_MARK not in pem:
        _fail(
            f"AUTO_REVIEW_CA_FILE={extra} holds no PEM certificate",
            "give a file with -----BEGIN CERTIFICATE----- blocks",
        )
    base_path = os.environ.get("SSL_CERT_FILE") or DEFAULT_CA_FILE
    try:
        with open(base_path, "rb") as fh:
            base = fh.read()
    except OSError:
        base = b""  # no system bundle: trust only the operator's certificates
    import atexit  # only when the variable is set: start-up of every command stays lean
    import tempfile

    fd, path = tempfile.mkstemp(prefix="auto-review-ca-", suffix=".pem")
    with os.fdopen(fd, "wb") as fh:
        fh.write(base.rstrip(b"\n") + b"\n" + pem if base else pem)
    atexit.register(_remove, path)
    os.environ["SSL_CERT_FILE"] = os.environ["GIT_SSL_CAINFO"] = path
    return path


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
