#!/usr/bin/env python3
"""Build the single file: payload/ + host binaries -> minimal rootfs -> tar -> zstd -> zipapp.

    python3 build.py                      # host mode: rootfs from this machine's binaries
    python3 build.py --rootfs DIR         # pack a prepared rootfs (the Nix build uses this)
    python3 build.py --out PATH --version 1.2.3 --zstd-level 20

Every step is deterministic: two builds from the same inputs give byte-identical
output. The steps live in buildsys/, one module per job; this file only runs them.
The launcher never imports build code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

from buildsys.manifest import make_manifest, tree_facts
from buildsys.provenance import build_provenance
from buildsys.recipe import (
    DEFAULT_OUT,
    RECIPE,
    BuildError,
    Recipe,
    project_version,
    source_date_epoch,
)
from buildsys.release import SYSTEMD_UNIT, sign, write_atomic, write_sums
from buildsys.sbom import build_sbom
from buildsys.stage import assemble_host_rootfs, check_rootfs
from buildsys.tarball import compress, files_list, state_owner, write_tar
from buildsys.zipapp import SBOM_MEMBER, write_zipapp, zipapp_entries

# 20, not 19: 26 KB smaller for the same 16 MiB window (decoder memory is the window)
DEFAULT_ZSTD_LEVEL = 20


def build(
    out: Path,
    version: str,
    level: int,
    rootfs: Path | None,
    recipe: Recipe,
    sign_key: Path | None = None,
) -> dict:
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
        tar, count = write_tar(root, epoch, state_owner(recipe))
    facts["file_count"] = count
    facts["level"] = level
    files_tsv = files_list(tar)
    facts["files_digest"] = "sha256:" + hashlib.sha256(files_tsv).hexdigest()
    payload = compress(tar, level)
    manifest = make_manifest(recipe, version, epoch, tar, payload, facts)
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(manifest["arch"], manifest["arch"])
    entries = zipapp_entries(manifest, payload, files_tsv, machine)
    sbom = build_sbom(recipe, manifest, tar, entries)
    write_zipapp(out, [*entries, (SBOM_MEMBER, sbom)])
    command = ["python3", "build.py", "--version", version, "--zstd-level", str(level)]
    if rootfs is not None:
        command += ["--rootfs", "ROOTFS"]  # a prepared tree; its content is the SBOM's
    release = write_release(out, sbom, command, manifest, sign_key)
    return {
        "out": str(out),
        "size": out.stat().st_size,
        "seconds": round(time.monotonic() - started, 1),
        **{k: manifest[k] for k in ("version", "digest", "diff_id", "file_count")},
        "tar_size": len(tar),
        "compressed_size": len(payload),
        "release": release,
    }


def write_release(
    out: Path, sbom: bytes, command: list[str], manifest: dict, sign_key: Path | None
) -> list[str]:
    """The release files beside the single file; returns their paths."""
    directory = out.parent
    sbom_path = directory / f"{out.name}.spdx.json"
    write_atomic(sbom_path, sbom)
    unit_path = directory / SYSTEMD_UNIT.name  # what README's operator steps install
    write_atomic(unit_path, SYSTEMD_UNIT.read_bytes())
    provenance_path = directory / f"{out.name}.provenance.json"
    subjects = {out.name: out, sbom_path.name: sbom_path}  # what the build made
    write_atomic(provenance_path, build_provenance(subjects, command, {}, manifest))
    names = [out.name, sbom_path.name, unit_path.name, provenance_path.name]
    sums = write_sums(directory, names)
    written = [str(p) for p in (sbom_path, unit_path, provenance_path, sums)]
    if sign_key is not None:
        written.append(str(sign(sums, sign_key)))
    else:  # a signature left from an earlier build would not match these sums
        sums.with_name(sums.name + ".sig").unlink(missing_ok=True)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output file")
    parser.add_argument("--rootfs", type=Path, help="pack this prepared rootfs directory")
    parser.add_argument("--version", default=None, help="bundle version (default: pyproject)")
    parser.add_argument("--zstd-level", type=int, default=DEFAULT_ZSTD_LEVEL, choices=range(1, 23))
    parser.add_argument(
        "--sign", type=Path, metavar="KEY", help="sign SHA256SUMS with this OpenSSH private key"
    )
    parser.add_argument("--recipe", type=Path, default=RECIPE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        recipe = Recipe.load(args.recipe)
        summary = build(
            args.out,
            args.version or project_version(),
            args.zstd_level,
            args.rootfs,
            recipe,
            args.sign,
        )
    except BuildError as exc:
        print(f"build.py: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
