#!/usr/bin/env python3
"""The Nix side of the rootfs: build.py's own assembly, fed with Nix store paths.

    assemble-rootfs.py assemble --src SRC --out DIR --wheels DIR \
        --exe git=/nix/store/...-git/bin/git ... --file /etc/ssl/certs/ca-certificates.crt=PATH \
        --site /nix/store/...-python3.11-cryptography-X/lib/python3.11/site-packages ... \
        --dlopen /nix/store/...-openssl-X/lib/ossl-modules/legacy.so
    assemble-rootfs.py normalize DIR      # modes after a copy out of the (0555) store

`assemble` runs buildsys.stage.assemble_host_rootfs on a copy of payload/rootfs.toml whose
[executables] and [files] point at store paths: every chosen file and its ELF closure
land at their /nix/store/... paths inside DIR (never whole closures: those carry bash
and coreutils). Then each role's FHS path from the recipe (/usr/bin/git, ...) becomes
a relative symlink to its store copy. Nothing here lists a file by hand: roles, static
files, mount points and the gateway all come from the recipe.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys
from pathlib import Path


def load_buildsys(src: Path):
    """buildsys from the source tree (one implementation for host and Nix builds)."""
    sys.path.insert(0, str(src))
    import buildsys.elf
    import buildsys.recipe
    import buildsys.stage
    import buildsys.stagedir
    import buildsys.wheels

    return buildsys


def pairs(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, path = value.partition("=")
        if not sep:
            raise SystemExit(f"assemble-rootfs: expected KEY=PATH, got {value!r}")
        out[key] = path
    return out


def break_hardlinks(root: Path) -> None:
    """Copy hardlinked files apart: whether two store files share an inode depends on
    the builder's auto-optimise-store, which must not change the tar."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                tmp = path + ".unlink"
                shutil.copyfile(path, tmp)
                os.chmod(tmp, stat.S_IMODE(st.st_mode))
                os.replace(tmp, path)


def assemble(args: argparse.Namespace) -> int:
    buildsys = load_buildsys(args.src)
    buildsys.wheels.WHEEL_CACHE = args.wheels  # pre-fetched (nix/wheels.nix): pip never runs
    recipe = buildsys.recipe.Recipe.load(args.src / "payload" / "rootfs.toml")
    exes, files = pairs(args.exe), pairs(args.file)
    fhs = recipe.section("executables")
    if set(exes) != set(fhs):
        raise SystemExit(f"assemble-rootfs: roles {sorted(exes)} != recipe's {sorted(fhs)}")
    if set(files) != set(recipe.data.get("files", {})):
        raise SystemExit("assemble-rootfs: --file entries differ from the recipe's [files]")
    # The store loader's default directory (glibc's lib, where the interpreter lives)
    # stands in for the Debian multiarch dirs of the recipe's [elf] search list.
    search = []
    for path in exes.values():
        info = buildsys.elf.read_elf(Path(os.path.realpath(path)))
        if info.interpreter and os.path.dirname(info.interpreter) not in search:
            search.append(os.path.dirname(info.interpreter))
    data = dict(recipe.data)
    data["executables"] = exes
    data["files"] = files
    # the store's dlopen'ed libraries (OpenSSL's legacy provider) replace the FHS paths
    data["elf"] = {
        "search": search + list(recipe.section("elf")["search"]),
        "dlopen": {os.uname().machine: args.dlopen},
    }
    # the store site dirs of the native packages (the store python's own has none)
    data["python"] = {**recipe.section("python"), "site_dirs": args.site}
    args.out.mkdir()
    try:
        facts = buildsys.stage.assemble_host_rootfs(args.out, buildsys.recipe.Recipe(data))
    except buildsys.recipe.BuildError as exc:
        print(f"assemble-rootfs: {exc}", file=sys.stderr)
        return 1
    stage = buildsys.stagedir.Stage(args.out)
    for role, inroot in sorted(fhs.items()):
        stage.mkdirs(os.path.dirname(inroot))
        os.symlink(exes[role], stage.root / inroot.lstrip("/"))
    stage.relativize_symlinks()
    break_hardlinks(args.out)
    buildsys.stage.check_rootfs(args.out, recipe)
    print(f"assemble-rootfs: {facts}")
    return 0


def normalize(args: argparse.Namespace) -> int:
    """The Nix store keeps only r-x/r--: restore what the host build writes
    (dirs 0755, files 0644/0755, mount points as the recipe says)."""
    buildsys = load_buildsys(args.src)
    recipe = buildsys.recipe.Recipe.load(args.src / "payload" / "rootfs.toml")
    root = args.dir
    for dirpath, _dirs, files in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                os.chmod(path, 0o755 if st.st_mode & 0o100 else 0o644)
    for inroot, spec in recipe.section("mountpoints").items():
        os.chmod(root / inroot.lstrip("/"), spec["mode"])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    src_default = Path(__file__).resolve().parent.parent
    a = sub.add_parser("assemble")
    a.add_argument("--src", type=Path, default=src_default)
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--wheels", type=Path, required=True)
    a.add_argument("--exe", action="append", default=[], metavar="ROLE=PATH")
    a.add_argument("--file", action="append", default=[], metavar="INROOT=PATH")
    a.add_argument("--site", action="append", default=[], metavar="DIR")
    a.add_argument("--dlopen", action="append", default=[], metavar="PATH")
    n = sub.add_parser("normalize")
    n.add_argument("--src", type=Path, default=src_default)
    n.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    return assemble(args) if args.cmd == "assemble" else normalize(args)


if __name__ == "__main__":
    sys.exit(main())
