#!/usr/bin/env python3
"""Inspect a real rootfs tree (the Nix check, and a test against the host build).

    check-rootfs.py ROOTFS [--app SINGLE_FILE] [--src SRC]

Every rule comes from payload/rootfs.toml's [contract] (read through buildsys, the
same code the build uses), never from a copy here:
  - every `required` path resolves inside the tree (chroot semantics);
  - no file or symlink anywhere has a `forbidden` name;
  - every symlink resolves inside the tree (none dangles or climbs out);
  - every ELF's interpreter and DT_NEEDED libraries are found inside the tree, and a
    required executable that is a script has its #! interpreter inside too;
  - with --app: the single file's manifest digest is the sha256 of its payload, the
    payload decompresses to a tar whose sha256 is the manifest's diff_id, and this tree
    packs (buildsys.tarball.write_tar, the manifest's date) to exactly that diff_id.
Exit 0 when clean; 1 with one line per problem otherwise.
"""

from __future__ import annotations

import argparse
import calendar
import hashlib
import json
import os
import stat
import struct
import sys
import time
import zipfile
from pathlib import Path


def load_buildsys(src: Path):
    """buildsys from the source tree: one implementation of the contract."""
    sys.path.insert(0, str(src))
    import buildsys.elf
    import buildsys.recipe
    import buildsys.tarball

    return buildsys


def check_tree(buildsys, root: Path, recipe) -> list[str]:
    problems: list[str] = []
    for inroot in recipe.required:
        if buildsys.elf.resolve_in_root(root, inroot) is None:
            problems.append(f"required path {inroot} does not resolve inside the rootfs")
    forbidden = recipe.forbidden
    elves: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            inroot = "/" + os.path.relpath(path, root)
            st = os.lstat(path)
            if name in forbidden and not stat.S_ISDIR(st.st_mode):
                problems.append(f"forbidden name {inroot}")
            if stat.S_ISLNK(st.st_mode):
                if buildsys.elf.resolve_in_root(root, inroot) is None:
                    target = os.readlink(path)
                    problems.append(f"symlink {inroot} -> {target} escapes or dangles")
            elif stat.S_ISREG(st.st_mode) and buildsys.elf.is_elf(Path(path)):
                elves.append(inroot)
    infos = {}
    for inroot in elves:
        try:
            infos[inroot] = buildsys.elf.read_elf(root / inroot.lstrip("/"))
        except (buildsys.recipe.BuildError, struct.error, ValueError, IndexError) as exc:
            problems.append(f"ELF {inroot} cannot be parsed: {exc}")
    # The loader's own directory is its default search path (the Nix glibc case); the
    # recipe's [elf] search covers the Debian layout.
    search = list(recipe.section("elf")["search"])
    for info in infos.values():
        if info.interpreter and os.path.dirname(info.interpreter) not in search:
            search.insert(0, os.path.dirname(info.interpreter))
    for inroot, info in sorted(infos.items()):
        if info.interpreter and buildsys.elf.resolve_in_root(root, info.interpreter) is None:
            problems.append(f"ELF {inroot}: interpreter {info.interpreter} not inside")
        for soname in info.needed:
            found = buildsys.elf.find_library(root, soname, os.path.dirname(inroot), info, search)
            if found is None:
                problems.append(f"ELF {inroot}: needed {soname} not inside")
    for inroot in recipe.required:
        real = buildsys.elf.resolve_in_root(root, inroot)
        path = root / (real or "/").lstrip("/")
        if real and path.is_file() and not buildsys.elf.is_elf(path):
            with open(path, "rb") as fh:
                head = fh.read(256)
            if head.startswith(b"#!"):
                interp = head[2:].split(b"\n", 1)[0].split()[0].decode(errors="replace")
                if buildsys.elf.resolve_in_root(root, interp) is None:
                    problems.append(f"script {inroot}: interpreter {interp} not inside")
    return problems


def check_app(buildsys, root: Path, app: Path) -> list[str]:
    import zstandard

    problems: list[str] = []
    with zipfile.ZipFile(app) as zf:
        manifest = json.loads(zf.read("bundle/bundle.json"))
        payload = zf.read("bundle/rootfs.tar.zst")
    if "sha256:" + hashlib.sha256(payload).hexdigest() != manifest["digest"]:
        problems.append("manifest digest != sha256 of bundle/rootfs.tar.zst")
    tar = zstandard.ZstdDecompressor().decompressobj().decompress(payload)
    if "sha256:" + hashlib.sha256(tar).hexdigest() != manifest["diff_id"]:
        problems.append("manifest diff_id != sha256 of the decompressed payload")
    epoch = calendar.timegm(time.strptime(manifest["created"], "%Y-%m-%dT%H:%M:%SZ"))
    owners = buildsys.tarball.state_owner(buildsys.recipe.Recipe.load())
    packed, _count = buildsys.tarball.write_tar(root, epoch, owners)
    if "sha256:" + hashlib.sha256(packed).hexdigest() != manifest["diff_id"]:
        problems.append("this rootfs does not pack to the manifest's diff_id")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rootfs", type=Path)
    parser.add_argument("--app", type=Path, help="the single file built from this rootfs")
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args(argv)
    buildsys = load_buildsys(args.src)
    recipe = buildsys.recipe.Recipe.load(args.src / "payload" / "rootfs.toml")
    problems = check_tree(buildsys, args.rootfs, recipe)
    if args.app:
        problems += check_app(buildsys, args.rootfs, args.app)
    for problem in problems:
        print(f"check-rootfs: {problem}", file=sys.stderr)
    print(f"check-rootfs: {args.rootfs}: {'FAIL' if problems else 'ok'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
