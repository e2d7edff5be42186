"""Shared fixtures: one real build per test session, and a private cache per test."""

from __future__ import annotations

import ast
import os
import shlex
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Runs runc, mounts tmpfs, creates users, chroots: CI runs as root, so nothing skips there.
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")

# The interpreter the single file is run with in tests: the system one, with no
# packages installed, as a user would run it.
HOST_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def find_cpython(minor: int) -> str | None:
    """A python3.<minor> that really starts (/usr/bin, PATH, pyenv; a pyenv shim is a
    script that may point nowhere), or None."""
    import glob
    import shutil

    name = f"python3.{minor}"
    candidates = [f"/usr/bin/{name}", shutil.which(name)]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/3.{minor}.*/bin/{name}")))
    for path in candidates:
        if path and os.access(path, os.X_OK):
            try:
                started = subprocess.run([path, "-c", "pass"], capture_output=True, timeout=30)
            except OSError:
                continue
            if started.returncode == 0:
                return path
    return None


def other_cpython() -> str:
    """A CPython 3.10-3.13 of another version than HOST_PYTHON, whose bytecode the single
    file (compiled for the host's python3) does not carry: under it the launcher
    compiles its code once into the cache's code dir. .ci/setup provides them (pyenv)."""
    host = subprocess.run([HOST_PYTHON, "-c", "import sys; print(sys.version_info[1])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    for minor in [m for m in (12, 13, 10, 11) if str(m) != host]:
        path = find_cpython(minor)
        if path is not None:
            return path
    pytest.fail("no CPython 3.10-3.13 besides the host's python3: .ci/setup must provide one")


def build_app(out: Path, *extra: str, level: int = 3) -> Path:
    """Run build.py for real; returns the single file."""
    env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
    cmd = [sys.executable, str(ROOT / "build.py"), "--out", str(out), "--zstd-level", str(level)]
    subprocess.run([*cmd, *extra], check=True, env=env, stdout=subprocess.DEVNULL)
    return out


@pytest.fixture(scope="session")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The single file, built once per session (AUTO_REVIEW_TEST_APP reuses a build)."""
    given = os.environ.get("AUTO_REVIEW_TEST_APP")
    if given:
        return Path(given)
    return build_app(tmp_path_factory.mktemp("dist") / "auto-review")


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh private cache root, exported as AUTO_REVIEW_CACHE_DIR."""
    path = tmp_path / "cache"
    monkeypatch.setenv("AUTO_REVIEW_CACHE_DIR", str(path))
    monkeypatch.delenv("AUTO_REVIEW_BUNDLE", raising=False)
    return path


def host_libzstd() -> str:
    """The file the dynamic loader maps for libzstd.so.1 here (symlinks resolved)."""
    code = (
        "import ctypes; ctypes.CDLL('libzstd.so.1');"
        " print(next(l.split()[-1] for l in open('/proc/self/maps') if 'libzstd' in l))"
    )
    out = subprocess.run([HOST_PYTHON, "-I", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, f"this host has no libzstd.so.1: {out.stderr}"
    return os.path.realpath(out.stdout.strip())


def without_host_libzstd() -> list[str]:
    """A command prefix that runs its command as on a host without libzstd: in a mount
    namespace of its own, /dev/null is bind-mounted over the library, so dlopen fails
    and the launcher falls back to its vendored zstandard (needs root)."""
    script = 'mount --bind /dev/null "$0" && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, host_libzstd()]


def preamble_command(app: Path) -> list[str]:
    """The command the single file's second line execs (`python3 -I -S -c BOOT`), read
    from the file itself: a test runs it with another interpreter in place of python3."""
    from buildsys.zipapp import SHEBANG

    with open(app, "rb") as fh:
        head = fh.read(len(SHEBANG))
    assert head == SHEBANG and head.startswith(b"#!/bin/sh\nexec ")
    words = shlex.split(head[len(b"#!/bin/sh\n") :].decode())
    assert words[0] == "exec" and words[-2:] == ["$0", "$@"], words
    return words[1:-2]


def run_app(
    app: Path,
    *args: str,
    env: dict[str, str] | None = None,
    python: str = HOST_PYTHON,
    timeout: float = 120,
    check: bool = False,
    prefix: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the single file with `python` (after the command `prefix`, if any) and
    capture its output."""
    return subprocess.run(
        [*(prefix or []), python, str(app), *args],
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


# A small process between the test and the single file: a child's peak RSS counts the
# pages of the process it was forked from until it execs, and pytest's are many.
_MEASURE = (
    "import resource, subprocess, sys;"
    " code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode;"
    " print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def run_app_measured(
    app: Path,
    *args: str,
    env: dict[str, str],
    timeout: float = 300,
    prefix: list[str] | None = None,
) -> tuple[int, str, float]:
    """Run the single file (after the command `prefix`, if any): (exit code, stderr, its
    peak RSS in MB)."""
    result = subprocess.run(
        [HOST_PYTHON, "-I", "-c", _MEASURE, *(prefix or []), HOST_PYTHON, str(app), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    code, rss_kib = result.stdout.split()
    return int(code), result.stderr, int(rss_kib) / 1024


def rewrite_app(
    app: Path,
    out: Path,
    *,
    payload: bytes | None = None,
    edit_manifest: Callable[[dict], None] | None = None,
    members: dict[str, bytes] | None = None,
) -> Path:
    """A copy of the single file with another payload and/or an edited embedded manifest
    (as an attacker or a broken download would produce it; the code id is kept). An
    edited module loses its bytecode (the file's is unchecked: it would still run)."""
    edited = set(members or ()) | ({"launcher/_embedded.py"} if edit_manifest else set())
    with zipfile.ZipFile(app) as src, open(out, "wb") as fh:
        fh.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(fh, "w") as dst:
            for info in src.infolist():
                if info.filename.endswith(".pyc") and info.filename[:-1] in edited:
                    continue
                data = src.read(info)
                if members and info.filename in members:
                    data = members[info.filename]
                elif info.filename == "bundle/rootfs.tar.zst" and payload is not None:
                    data = payload
                elif info.filename == "launcher/_embedded.py" and edit_manifest is not None:
                    head, rest = data.decode().split("MANIFEST = ", 1)
                    literal, tail = rest.split("\nCODE_ID = ", 1)
                    manifest = ast.literal_eval(literal)
                    edit_manifest(manifest)
                    data = f"{head}MANIFEST = {manifest!r}\nCODE_ID = {tail}".encode()
                dst.writestr(info, data)
    return out


def app_vouching_for(app: Path, out: Path, files_list: bytes) -> Path:
    """A copy of the single file whose bundle/files.tsv is `files_list`, with the
    manifest's files_digest made to match it (what a forger who rewrites both does)."""
    import hashlib

    return rewrite_app(
        app,
        out,
        members={"bundle/files.tsv": files_list},
        edit_manifest=lambda m: m.update(
            files_digest="sha256:" + hashlib.sha256(files_list).hexdigest()
        ),
    )


def legacy_v07_frame(prefix: bytes, zeros: int, window_log: int = 27) -> bytes:
    """A frame of zstd's pre-1.0 format v0.7 (magic 0xFD2FB527), which a libzstd built with
    legacy support (Debian's, for one) still decodes: `prefix` in raw blocks, then `zeros`
    (a multiple of 128 KiB) zero bytes in 5-byte compressed blocks, each 128 KiB of RLE
    literals and no sequences. Its header asks for a 2**window_log window."""
    block = 1 << 17
    assert zeros % block == 0 and 10 <= window_log <= 27
    out = (0xFD2FB527).to_bytes(4, "little") + bytes([0x00, (window_log - 10) << 3])
    for i in range(0, len(prefix), block):
        raw = prefix[i : i + block]  # block header: type 1 (raw) in bits 6-7, size in 0-18
        out += bytes([0x40 | len(raw) >> 16, len(raw) >> 8 & 255, len(raw) & 255]) + raw
    # type 0 (compressed), 5 bytes: literals header (RLE, 20-bit size), the byte, nbSeq 0
    rle = bytes([0, 0, 5, 0xF0 | block >> 16, block >> 8 & 255, block & 255, 0, 0])
    return out + rle * (zeros // block) + bytes([0xC0, 0, 0])  # type 3: the frame's end
