"""The single file: shebang + a deterministic zip of launcher, bundle and vendor."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

from buildsys.recipe import HERE
from buildsys.wheels import vendor_entries

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def write_zip(fh, entries: Iterable[tuple[str, bytes]], stored: Iterable[str] = ()) -> None:
    """A deterministic zip: sorted names, fixed timestamps and attributes."""
    stored = set(stored)
    with zipfile.ZipFile(fh, "w") as zf:
        for name, data in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.external_attr = (0o100644 & 0xFFFF) << 16
            info.create_system = 3
            if name in stored:
                info.compress_type = zipfile.ZIP_STORED
            else:
                info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data, compresslevel=9)


LAUNCHER_MAIN = """\
\"\"\"auto-review: the single file. Runs the launcher from inside this zipapp.\"\"\"
import os
import sys

if sys.version_info < (3, 10):
    sys.exit("auto-review: needs Python 3.10 or newer -- run it with python3.10+")
CODE_ID = "@CODE_ID@"


def cached_code():
    \"\"\"The launcher's code unpacked in the cache (with .pyc), if every level is ours.

    zipimport compiles each module on every start; the cached copy does not. Same
    root as launcher.layout.cache_root; a mismatch only means running from the zip.
    \"\"\"
    path = os.environ.get("AUTO_REVIEW_CACHE_DIR")
    if not path:
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
        base = xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "auto-review")
    for part in ("v1", "code", CODE_ID, None):
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if st.st_uid != os.geteuid() or st.st_mode & 0o170022 != 0o040000:
            return None  # not a real directory of ours, or writable by others
        if part:
            path = os.path.join(path, part)
    return path if os.path.exists(os.path.join(path, ".complete")) else None


code = cached_code()
if code:
    sys.path.insert(0, code)
from launcher.cli import main  # noqa: E402

sys.exit(main())
"""


def launcher_entries(manifest: dict) -> tuple[str, list[tuple[str, bytes]]]:
    """(code id, launcher/*.py entries): the id names the launcher's cached copy."""
    entries = [
        (src.relative_to(HERE).as_posix(), src.read_bytes())
        for src in sorted((HERE / "launcher").rglob("*.py"))
        if src.name != "_embedded.py"
    ]
    digest = hashlib.sha256(manifest["digest"].encode())
    for name, data in entries:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    code_id = digest.hexdigest()[:20]
    # The manifest as a Python literal: the warm path reads it without json.
    embedded = f"MANIFEST = {manifest!r}\nCODE_ID = {code_id!r}\n".encode()
    return code_id, [*entries, ("launcher/_embedded.py", embedded)]


def build_zipapp(out: Path, manifest: dict, payload: bytes, machine: str) -> None:
    """Write the single file: shebang + deterministic zip."""
    code_id, entries = launcher_entries(manifest)
    entries.append(("__main__.py", LAUNCHER_MAIN.replace("@CODE_ID@", code_id).encode()))
    manifest_json = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    entries.append(("bundle/bundle.json", manifest_json))
    entries.append(("bundle/rootfs.tar.zst", payload))
    entries += vendor_entries(machine)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(b"#!/usr/bin/env python3\n")
        write_zip(fh, entries, stored={"bundle/rootfs.tar.zst"})
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)
