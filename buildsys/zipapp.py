"""The single file: shebang + a deterministic zip of launcher, bundle and vendor."""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

from buildsys.recipe import HERE, BuildError
from buildsys.vendor import BLOB_MEMBER, vendor_entries

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def write_zip(
    fh,
    entries: Iterable[tuple[str, bytes]],
    stored: Iterable[str] = (),
    first: tuple[str, ...] = (),
) -> None:
    """A deterministic zip: sorted names (those in `first`, if given, before all, in
    that order), fixed timestamps and attributes."""
    stored = set(stored)
    rank = {name: i for i, name in enumerate(first)}
    with zipfile.ZipFile(fh, "w") as zf:
        order = sorted(entries, key=lambda entry: (rank.get(entry[0], len(rank)), entry[0]))
        for name, data in order:
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.external_attr = (0o100644 & 0xFFFF) << 16
            info.create_system = 3
            if name in stored:
                info.compress_type = zipfile.ZIP_STORED
            else:
                info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data, compresslevel=9)


BOOTSTRAP = HERE / "launcher" / "bootstrap.py"
CODE_ID_LINE = 'CODE_ID = "@CODE_ID@"\n'


def bootstrap_main(code_id: str) -> bytes:
    """launcher/bootstrap.py as the zipapp's __main__.py, its CODE_ID filled in."""
    text = BOOTSTRAP.read_text()
    if text.count(CODE_ID_LINE) != 1:
        raise BuildError(f"{BOOTSTRAP} must have the line {CODE_ID_LINE.strip()!r} exactly once")
    return text.replace(CODE_ID_LINE, f'CODE_ID = "{code_id}"\n').encode()


def launcher_entries(manifest: dict) -> tuple[str, list[tuple[str, bytes]]]:
    """(code id, launcher/*.py entries): the id names the launcher's cached copy."""
    entries = [
        (src.relative_to(HERE).as_posix(), src.read_bytes())
        for src in sorted((HERE / "launcher").rglob("*.py"))
        if src.name != "_embedded.py"
    ]
    # the whole manifest: two files with one payload but other labels must not share code
    digest = hashlib.sha256(repr(manifest).encode())
    for name, data in entries:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    code_id = digest.hexdigest()[:20]
    # The manifest as a Python literal: the warm path reads it without json.
    embedded = f"MANIFEST = {manifest!r}\nCODE_ID = {code_id!r}\n".encode()
    entries.append(("launcher/_embedded.py", embedded))
    return code_id, [*entries, *bytecode_entries(entries)]


# Compiles each source for one interpreter into an unchecked hash-based .pyc (PEP 552),
# named as zipimport looks for it: beside its .py in the zip. Unchecked, as in the code
# dir: a checked one made zipimport read, inflate and hash its source on every import
# (and import zlib for it), and the sources in a single file never change under its
# code id (which hashes them). Each is compiled under an absolute name no file has
# (zipimport keeps the name a .pyc holds): with "launcher/x.py", a traceback or a
# warning read that file in the working dir; now linecache finds no file and asks the
# zip's loader for the source.
COMPILE = """
import importlib.util, marshal, sys
flags = (0b01).to_bytes(4, "little")
out = {}
for name, source in marshal.loads(sys.stdin.buffer.read()).items():
    code = compile(source, "/<auto-review>/" + name, "exec", dont_inherit=True)
    head = importlib.util.MAGIC_NUMBER + flags + importlib.util.source_hash(source)
    out[name + "c"] = head + marshal.dumps(code)
sys.stdout.buffer.write(marshal.dumps(out))
"""


def bytecode_entries(sources: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Bytecode of the launcher for the host's python3 (the interpreter the docs and the
    unit run it with), so that a run under it compiles nothing: zipimport loads a .pyc
    whose magic matches and falls back to the source otherwise (where the launcher
    compiles its code once into the cache: launcher.cache.code). PYTHONHASHSEED=0: set
    constants marshal in one order, so the file stays reproducible."""
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    result = subprocess.run(
        [python, "-I", "-S", "-c", COMPILE],
        input=marshal.dumps(dict(sources)),
        env={"PYTHONHASHSEED": "0", "PATH": os.defpath},
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(
            f"{python} could not compile the launcher: {result.stderr.decode()[-500:]}"
        )
    return sorted(marshal.loads(result.stdout).items())


PAYLOAD_MEMBER = "bundle/rootfs.tar.zst"
FILES_MEMBER = "bundle/files.tsv"
SBOM_MEMBER = "bundle/sbom.spdx.json"


def zipapp_entries(
    manifest: dict, payload: bytes, files_tsv: bytes, machine: str
) -> list[tuple[str, bytes]]:
    """Every member of the single file but the SBOM (which describes them)."""
    code_id, entries = launcher_entries(manifest)
    main = ("__main__.py", bootstrap_main(code_id))
    entries += [main, *bytecode_entries([main])]  # every start runs it: compiled once, here
    manifest_json = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    entries.append(("bundle/bundle.json", manifest_json))
    entries.append((FILES_MEMBER, files_tsv))
    entries.append((PAYLOAD_MEMBER, payload))
    entries += vendor_entries(machine)
    return entries


# What `python3 FILE` does for a zipapp, without runpy: runpy and what it imports
# (importlib.util, contextlib, collections, functools) cost every start about 4 ms, a
# third of the warm path (bench: `cache prepare`, 17.7 ms of CPU through runpy, 13.7 ms
# this way). __main__ gets the loader and file runpy would give it (launcher.embedded
# finds the single file through them). A file that is no whole zip says so in one line.
# The path is made absolute without normpath: "dir/../file" is the kernel's (which the
# shell just ran) only when dir is no symlink. An old python3 (RHEL 8's 3.6 cannot even
# compile __main__) is told the version it needs, not to download the file again.
BOOT = """import os, sys, zipimport
if sys.version_info < (3, 10):
    sys.exit("auto-review: needs Python 3.10 or newer -- run it with python3.10+")
a = sys.argv[1]; del sys.argv[0]
a = a if a[:1] == "/" else os.path.join(os.getcwd(), a)
try:
    l = zipimport.zipimporter(a); c = l.get_code("__main__")
except Exception as e:
    w = "auto-review: %r is not a whole auto-review file (%s) -- download it again\\n"
    sys.stderr.write(w % (a, e))
    sys.exit(65)
m = sys.modules["__main__"]; m.__file__ = a + "/__main__.py"; m.__loader__ = l
sys.path.insert(0, a); exec(c, m.__dict__)"""

# -I: PYTHONPATH, PYTHONSTARTUP and the other PYTHON* variables of whoever runs the file
# cannot load code into the launcher, nor can the user's site dir or the working dir
# (with -c, too: under -I no directory is put in front of sys.path). -S: no site module
# and no .pth file of the host's site-packages runs at each start (the launcher needs
# none of them: its dependencies are in the file). Two flags need `env -S` on a #! line,
# which busybox's env and coreutils before 8.30 lack; a /bin/sh line that execs python3
# works everywhere (as PEX's --sh-boot does). The shell reads no further than that
# command, and zipimport skips these bytes before the zip.
if "'" in BOOT:  # it is single-quoted for the shell
    raise BuildError("the zipapp's BOOT code may not hold a single quote")
SHEBANG = f'#!/bin/sh\nexec python3 -I -S -c \'{BOOT}\' "$0" "$@"\n'.encode()


def write_zipapp(out: Path, entries: list[tuple[str, bytes]]) -> None:
    """Write the single file: shebang + deterministic zip, atomically, mode 0755."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(SHEBANG)
        # the payload first, its local header right after the shebang, and the file
        # list right after it, both stored: a cold start finds each with one pread and
        # never imports zipfile (launcher/embedded.py)
        # bytecode stored, not deflated: every start imports it from here (no code dir
        # is made for the interpreter it was compiled for), and zipimport would inflate
        # each module (and import zlib) every time; +0.3 MB for 1.3 ms a warm start
        bytecode = {name for name, _data in entries if name.endswith(".pyc")}
        stored = {PAYLOAD_MEMBER, FILES_MEMBER, BLOB_MEMBER, *bytecode}
        write_zip(fh, entries, stored=stored, first=(PAYLOAD_MEMBER, FILES_MEMBER))
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)
