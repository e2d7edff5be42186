"""ELF closure: what the dynamic loader of a file needs, resolved inside a root."""

from __future__ import annotations

import dataclasses
import os
import stat
import struct
from collections.abc import Iterable
from pathlib import Path

from buildsys.recipe import BuildError


@dataclasses.dataclass(frozen=True)
class ElfInfo:
    """What the dynamic loader needs from an ELF file."""

    machine: int
    interpreter: str | None
    needed: tuple[str, ...]
    runpath: tuple[str, ...]
    rpath: tuple[str, ...]


ELF_MACHINES = {62: "amd64", 183: "arm64"}


def is_elf(path: Path) -> bool:
    """True for a regular file that starts with the ELF magic."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def read_elf(path: Path) -> ElfInfo:
    """Parse PT_INTERP and the dynamic section (DT_NEEDED, RUNPATH, RPATH) of an ELF file."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF":
        raise BuildError(f"{path} is not an ELF file")
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        (machine,) = struct.unpack_from(end + "H", data, 18)
        phoff, phentsize, phnum = (
            struct.unpack_from(end + "Q", data, 32)[0],
            *struct.unpack_from(end + "HH", data, 54),
        )
        ph_fmt, dyn_fmt = end + "IIQQQQQQ", end + "qQ"
    else:
        (machine,) = struct.unpack_from(end + "H", data, 18)
        phoff, phentsize, phnum = (
            struct.unpack_from(end + "I", data, 28)[0],
            *struct.unpack_from(end + "HH", data, 42),
        )
        ph_fmt, dyn_fmt = end + "IIIIIIII", end + "iI"
    loads: list[tuple[int, int, int]] = []
    interp = None
    dynamic: tuple[int, int] | None = None
    for i in range(phnum):
        fields = struct.unpack_from(ph_fmt, data, phoff + i * phentsize)
        if is64:
            p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = fields[:6]
        else:
            p_type, p_offset, p_vaddr, _paddr, p_filesz = fields[:5]
        if p_type == 1:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == 2:
            dynamic = (p_offset, p_filesz)
        elif p_type == 3:
            interp = data[p_offset : p_offset + p_filesz].split(b"\0", 1)[0].decode()
    needed_off: list[int] = []
    runpath_off: list[int] = []
    rpath_off: list[int] = []
    strtab_vaddr = None
    if dynamic:
        size = struct.calcsize(dyn_fmt)
        for off in range(dynamic[0], dynamic[0] + dynamic[1], size):
            tag, val = struct.unpack_from(dyn_fmt, data, off)
            if tag == 0:
                break
            {1: needed_off, 29: runpath_off, 15: rpath_off}.get(tag, []).append(val)
            if tag == 5:
                strtab_vaddr = val

    def string(offset: int) -> str:
        assert strtab_vaddr is not None
        for vaddr, foff, fsz in loads:
            if vaddr <= strtab_vaddr < vaddr + fsz:
                start = foff + (strtab_vaddr - vaddr) + offset
                return data[start : data.index(b"\0", start)].decode()
        raise BuildError(f"{path}: string table outside any loaded segment")

    def paths(offsets: list[int]) -> tuple[str, ...]:
        return tuple(p for o in offsets for p in string(o).split(":") if p)

    return ElfInfo(
        machine=machine,
        interpreter=interp,
        needed=tuple(string(o) for o in needed_off),
        runpath=paths(runpath_off),
        rpath=paths(rpath_off),
    )


def resolve_in_root(root: Path, path: str, max_links: int = 40) -> str | None:
    """Resolve absolute `path` as the kernel would inside `root` (chroot semantics).

    Returns the resolved absolute in-root path of an existing non-symlink, or None
    when it does not exist, loops, or a symlink climbs above the root.
    """
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if not resolved:
                return None  # climbs above the root
            resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        try:
            st = os.lstat(candidate)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > max_links:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return "/" + "/".join(resolved)


def find_library(
    root: Path, soname: str, elf_dir: str, info: ElfInfo, search: Iterable[str]
) -> str | None:
    """Find `soname` the way ld.so does (RPATH, RUNPATH, default dirs), inside `root`.

    Returns the in-root path the loader would open (before following symlinks).
    """
    if "/" in soname:
        return soname if resolve_in_root(root, soname) else None
    dirs = [] if info.runpath else list(info.rpath)
    dirs += list(info.runpath) + list(search)
    for d in dirs:
        d = d.replace("$ORIGIN", elf_dir).replace("${ORIGIN}", elf_dir)
        candidate = os.path.normpath(os.path.join(d, soname))
        if resolve_in_root(root, candidate):
            return candidate
    return None
