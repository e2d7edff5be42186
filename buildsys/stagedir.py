"""The rootfs under construction: a directory that host paths are copied into at the
same place, with their symlink chains, hardlinks and ELF closure.

Imports only elf and recipe: target, native and stdlib name Stage in their type hints,
and stage (which assembles the whole rootfs) imports them.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from buildsys.elf import find_library, is_elf, read_elf
from buildsys.recipe import BuildError


class Stage:
    """The rootfs under construction: host paths copied in with their symlink chains."""

    def __init__(self, root: Path, host_root: Path = Path("/")) -> None:
        self.root = root
        self.host_root = host_root
        self.elf_queue: list[str] = []
        self._inodes: dict[tuple[int, int], str] = {}

    def _dest(self, inroot: str) -> Path:
        return self.root / inroot.lstrip("/")

    def mkdirs(self, inroot: str, mode: int = 0o755) -> None:
        """Create an in-root directory and its parents (existing ones kept)."""
        cur = self.root
        for part in [p for p in inroot.split("/") if p]:
            cur = cur / part
            if not os.path.lexists(cur):
                cur.mkdir(mode=mode)
                os.chmod(cur, mode)

    def write(self, inroot: str, data: bytes, mode: int = 0o644) -> None:
        """Write a file at an in-root path."""
        self.mkdirs(os.path.dirname(inroot))
        dest = self._dest(inroot)
        dest.write_bytes(data)
        os.chmod(dest, mode)

    def add_host_path(self, path: str, depth: int = 0) -> str:
        """Copy a host path into the rootfs at the same place, reproducing every symlink
        on the way. Returns the in-root path of the final regular file or directory."""
        if depth > 40:
            raise BuildError(f"too many symlinks resolving {path}")
        parts = [p for p in path.split("/") if p and p != "."]
        cur = "/"
        for i, part in enumerate(parts):
            if part == "..":
                cur = os.path.dirname(cur.rstrip("/")) or "/"
                continue
            nxt = os.path.join(cur, part)
            host = self.host_root / nxt.lstrip("/")
            try:
                st = os.lstat(host)
            except FileNotFoundError:
                raise BuildError(f"missing host file {nxt} (needed for {path})") from None
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(host)
                dest = self._dest(nxt)
                if not os.path.lexists(dest):
                    self.mkdirs(cur)
                    os.symlink(target, dest)
                base = "/" if target.startswith("/") else cur
                rest = "/".join(parts[i + 1 :])
                return self.add_host_path(os.path.join(base, target, rest), depth + 1)
            if stat.S_ISDIR(st.st_mode):
                self.mkdirs(nxt)
            elif i == len(parts) - 1 and stat.S_ISREG(st.st_mode):
                self._copy_file(host, nxt, st)
            else:
                raise BuildError(f"unsupported host file type at {nxt}")
            cur = nxt
        return cur

    def _copy_file(self, host: Path, inroot: str, st: os.stat_result) -> None:
        dest = self._dest(inroot)
        if os.path.lexists(dest):
            return
        self.mkdirs(os.path.dirname(inroot))
        first = self._inodes.get((st.st_dev, st.st_ino))
        if first is not None:
            os.link(self._dest(first), dest)  # keep host hardlinks as hardlinks
            return
        self._inodes[(st.st_dev, st.st_ino)] = inroot
        shutil.copyfile(host, dest)
        os.chmod(dest, stat.S_IMODE(st.st_mode) & 0o755)
        if is_elf(dest):
            self.elf_queue.append(inroot)

    def add_elf_closure(self, search: list[str]) -> int:
        """Copy the interpreter and needed libraries of every queued ELF, transitively."""
        done: set[str] = set()
        while self.elf_queue:
            inroot = self.elf_queue.pop()
            if inroot in done:
                continue
            done.add(inroot)
            info = read_elf(self._dest(inroot))
            if info.interpreter:
                self.add_host_path(info.interpreter)
            elf_dir = os.path.dirname(inroot)
            for soname in info.needed:
                found = find_library(self.host_root, soname, elf_dir, info, search)
                if found is None:
                    raise BuildError(f"library {soname} needed by {inroot} not found on host")
                self.add_host_path(found)
        return len(done)

    def relativize_symlinks(self) -> None:
        """Rewrite absolute symlinks as relative ones, so none points at the host."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                link = Path(dirpath) / name
                if not link.is_symlink():
                    continue
                target = os.readlink(link)
                if target.startswith("/"):
                    inroot_dir = "/" + str(Path(dirpath).relative_to(self.root))
                    rel = os.path.relpath(target, inroot_dir if inroot_dir != "/." else "/")
                    link.unlink()
                    os.symlink(rel, link)
