#!/usr/bin/env python3
"""Build the single file: payload/ + host binaries -> minimal rootfs -> tar -> zstd -> zipapp.

    python3 build.py                      # host mode: rootfs from this machine's binaries
    python3 build.py --rootfs DIR         # pack a prepared rootfs (the Nix build uses this)
    python3 build.py --out PATH --version 1.2.3 --zstd-level 19

Every step is deterministic: two builds from the same inputs give byte-identical
output. The steps live in buildsys/, one module per job; this file only runs them.
The launcher never imports build code.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from buildsys.manifest import make_manifest, tree_facts
from buildsys.recipe import (
    DEFAULT_OUT,
    RECIPE,
    BuildError,
    Recipe,
    project_version,
    source_date_epoch,
)
from buildsys.stage import assemble_host_rootfs, check_rootfs
from buildsys.tarball import compress, write_tar
from buildsys.zipapp import build_zipapp

DEFAULT_ZSTD_LEVEL = 19


def build(out: Path, version: str, level: int, rootfs: Path | None, recipe: Recipe) -> dict:
    """Run the whole build and return a summary of what was produced."""
    started = time.monotonic()
    epoch = source_date_epoch()
    with tempfile.TemporaryDirectory(prefix="auto-review-build-") as tmp:
        facts: dict = {}
        if rootfs is None:
            root = Path(tmp) / "rootfs"
            root.mkdir()
            facts |= assemble_host_rootfs(root, recipe)
        else:
            if not rootfs.is_dir():
                raise BuildError(f"--rootfs {rootfs} is not a directory")
            root = rootfs
        check_rootfs(root, recipe)
        facts |= tree_facts(root, recipe)
        tar, count = write_tar(root, epoch)
    facts["file_count"] = count
    facts["level"] = level
    payload = compress(tar, level)
    manifest = make_manifest(recipe, version, epoch, tar, payload, facts)
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(manifest["arch"], manifest["arch"])
    build_zipapp(out, manifest, payload, machine)
    return {
        "out": str(out),
        "size": out.stat().st_size,
        "seconds": round(time.monotonic() - started, 1),
        **{k: manifest[k] for k in ("version", "digest", "diff_id", "file_count")},
        "tar_size": len(tar),
        "compressed_size": len(payload),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output file")
    parser.add_argument("--rootfs", type=Path, help="pack this prepared rootfs directory")
    parser.add_argument("--version", default=None, help="bundle version (default: pyproject)")
    parser.add_argument("--zstd-level", type=int, default=DEFAULT_ZSTD_LEVEL, choices=range(1, 23))
    parser.add_argument("--recipe", type=Path, default=RECIPE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        recipe = Recipe.load(args.recipe)
        summary = build(
            args.out, args.version or project_version(), args.zstd_level, args.rootfs, recipe
        )
    except BuildError as exc:
        print(f"build.py: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
