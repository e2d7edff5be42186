"""Release files beside the single file: SHA256SUMS, its ssh-keygen signature, and the
systemd unit.

SHA256SUMS is in `sha256sum -c` format (hex, two spaces, name) with names relative to
the release directory. `--sign KEY` signs it with `ssh-keygen -Y sign` in our
namespace; README's "Verify the download" checks the signature, then the sums.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from buildsys.recipe import HERE, BuildError

SUMS = "SHA256SUMS"
# ssh-keygen -Y namespaces keep a release signature from being valid for anything else
# (a git commit, a login): the verifier names the same string.
NAMESPACE = "auto-review-release@v1"
# The systemd unit ships beside the single file (and in SHA256SUMS): installing the
# service must not need the source tree.
SYSTEMD_UNIT = HERE / "deploy" / "systemd" / "auto-review.service"


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file through a temporary name, so a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_sums(directory: Path, names: list[str]) -> Path:
    """SHA256SUMS over `names` (files in `directory`), sorted by name."""
    lines = []
    for name in sorted(names):
        digest = hashlib.sha256((directory / name).read_bytes()).hexdigest()
        lines.append(f"{digest}  {name}\n")
    path = directory / SUMS
    write_atomic(path, "".join(lines).encode())
    return path


def sign(sums: Path, key: Path) -> Path:
    """`ssh-keygen -Y sign` of SHA256SUMS with an OpenSSH private key: SHA256SUMS.sig."""
    if not key.is_file():
        raise BuildError(f"--sign {key}: no such key file (an OpenSSH private key)")
    sig = sums.with_name(sums.name + ".sig")
    sig.unlink(missing_ok=True)  # ssh-keygen refuses to overwrite
    try:
        proc = subprocess.run(
            ["ssh-keygen", "-Y", "sign", "-q", "-f", str(key), "-n", NAMESPACE, str(sums)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except OSError as exc:
        raise BuildError(f"--sign needs ssh-keygen (openssh-client): {exc.strerror}") from None
    if proc.returncode != 0 or not sig.is_file():
        detail = (proc.stderr.strip().splitlines() or ["no signature written"])[-1]
        raise BuildError(f"--sign {key}: ssh-keygen failed: {detail}")
    return sig
