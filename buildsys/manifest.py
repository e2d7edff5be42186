"""The manifest: the contract between build and launcher, from the rootfs's facts."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path

from buildsys.elf import ELF_MACHINES, read_elf, resolve_in_root
from buildsys.recipe import BuildError, Recipe, lookup_user
from buildsys.tarball import ZSTD_WINDOW_LOG
from launcher.manifest import validate


def make_manifest(
    recipe: Recipe, version: str, epoch: int, tar: bytes, payload: bytes, facts: dict
) -> dict:
    """The contract between build and launcher (and the OCI image config's source)."""
    process = recipe.section("process")
    uid, gid = lookup_user(process["user"])
    manifest = {
        "schema": 1,
        "name": recipe.section("bundle")["name"],
        "version": version,
        "digest": "sha256:" + hashlib.sha256(payload).hexdigest(),
        "diff_id": "sha256:" + hashlib.sha256(tar).hexdigest(),
        "compressed_size": len(payload),
        "tar_size": len(tar),
        "unpacked_size": facts["unpacked_size"],
        "file_count": facts["file_count"],
        "files_digest": facts["files_digest"],
        "largest_file": facts["largest_file"],
        "arch": facts["arch"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)),
        "zstd": {"level": facts["level"], "window_log": ZSTD_WINDOW_LOG},
        "process": {
            "args": list(process["args"]),
            "env": list(process["env"]),
            "cwd": process["cwd"],
            "user": {"name": process["user"], "uid": uid, "gid": gid},
        },
        "mounts": [dict(m) for m in recipe.data.get("mounts", [])],
    }
    return dict(validate(manifest))  # the launcher reads it back through the same contract


def tree_facts(root: Path, recipe: Recipe) -> dict:
    """Sizes and the architecture of a rootfs, for the manifest and the extraction caps."""
    total = largest = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
                largest = max(largest, st.st_size)
    python = recipe.section("process")["args"][0]
    real = resolve_in_root(root, python)
    if real is None:
        raise BuildError(f"rootfs lacks the entrypoint {python}")
    machine = read_elf(root / real.lstrip("/")).machine
    return {
        "unpacked_size": total,
        "largest_file": largest,
        "arch": ELF_MACHINES.get(machine, f"elf-{machine}"),
    }
