#!/usr/bin/env python3
"""Build the single file: payload/ + host binaries -> minimal rootfs -> tar -> zstd -> zipapp.

    python3 build.py                      # host mode: rootfs from this machine's binaries
    python3 build.py --rootfs DIR         # pack a prepared rootfs (the Nix build uses this)
    python3 build.py --out PATH --version 1.2.3 --zstd-level 19

Every step is deterministic: two builds from the same inputs give byte-identical
output. The launcher never imports this module; tests do (ELF closure, contract).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from launcher.manifest import validate  # the contract the launcher reads back

HERE = Path(__file__).resolve().parent
PAYLOAD = HERE / "payload"
RECIPE = PAYLOAD / "rootfs.toml"
DEFAULT_OUT = HERE / "dist" / "auto-review"
WHEEL_CACHE = HERE / "build" / "wheels"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
VENDOR_ABIS = ("310", "311", "312", "313")
DEFAULT_ZSTD_LEVEL = 19
ZSTD_WINDOW_LOG = 24  # 16 MiB: 5% smaller than 8 MiB, 8 MiB more decoder memory; cap is 2**25
ZSTD_THREADS = 2  # fixed: zstd output is identical for any fixed worker count >= 1


class BuildError(Exception):
    """A build input is missing or wrong; the message names it."""


# --------------------------------------------------------------------------- recipe


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The parsed payload/rootfs.toml."""

    data: dict

    @classmethod
    def load(cls, path: Path = RECIPE) -> Recipe:
        """Read and parse the recipe, with a one-line error on failure."""
        try:
            with open(path, "rb") as fh:
                return cls(tomllib.load(fh))
        except OSError as exc:
            raise BuildError(f"cannot read recipe {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise BuildError(f"recipe {path} is not valid TOML: {exc}") from exc

    def section(self, name: str) -> dict:
        """A required table of the recipe."""
        try:
            return self.data[name]
        except KeyError:
            raise BuildError(f"recipe {RECIPE.name} has no [{name}] table") from None

    @property
    def required(self) -> list[str]:
        return list(self.section("contract")["required"])

    @property
    def forbidden(self) -> frozenset[str]:
        return frozenset(self.section("contract")["forbidden"])


# --------------------------------------------------------------------------- ELF


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


# --------------------------------------------------------------------------- staging


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


# --------------------------------------------------------------------------- python


MODULE_SCAN = r"""
import json, sys
from modulefinder import ModuleFinder
gateway, extra, exclude = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
finder = ModuleFinder(path=[gateway] + sys.path[1:], excludes=exclude)
finder.run_script(gateway + "/__main__.py")
for name in extra:
    finder.import_hook(name)
out = {}
for name, mod in finder.modules.items():
    if mod.__file__:
        out[name] = [mod.__file__, bool(mod.__path__)]
json.dump({"modules": out, "stdlib": sys.path[1:]}, sys.stdout)
"""


def scan_python_modules(python: str, gateway: Path, recipe: Recipe) -> dict[str, Path]:
    """Stdlib module files the gateway needs, computed by the target interpreter.

    Returns {module file (host path): stdlib dir it lives under}.
    """
    section = recipe.section("python")
    proc = subprocess.run(
        [
            *(python, "-I", "-S", "-c", MODULE_SCAN, str(gateway)),
            json.dumps(section.get("extra", [])),
            json.dumps(section.get("exclude", [])),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BuildError(f"module scan with {python} failed: {proc.stderr.strip()[-300:]}")
    result = json.loads(proc.stdout)
    stdlib_dirs = [Path(p) for p in result["stdlib"] if p]
    files: dict[str, Path] = {}
    for file, _is_pkg in result["modules"].values():
        path = Path(file)
        for d in stdlib_dirs:
            if path.is_relative_to(d) and path.exists():
                files[str(path)] = d
                break
    return files


COMPILE = r"""
import json, py_compile, sys
for src, cfile, dfile in json.load(sys.stdin):
    py_compile.compile(src, cfile=cfile, dfile=dfile, doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
"""


def compile_pycs(python: str, jobs: list[tuple[str, str, str]]) -> None:
    """Compile (source, pyc path, displayed path) triples with the target interpreter.

    Unchecked-hash pycs carry no timestamps (reproducible) and are never rewritten:
    the root is read-only in the sandbox.
    """
    if not jobs:
        return
    proc = subprocess.run(
        [python, "-I", "-S", "-c", COMPILE],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BuildError(f"byte-compiling with {python} failed: {proc.stderr.strip()[-300:]}")


def python_tag(python: str) -> str:
    """The cache tag of the target interpreter, e.g. cpython-311."""
    return subprocess.run(
        [python, "-I", "-S", "-c", "import sys; print(sys.implementation.cache_tag)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def add_python(stage: Stage, python: str, recipe: Recipe, gateway: Path) -> int:
    """Ship the stdlib modules the gateway imports, as sourceless bytecode, and the
    extension modules (whose libraries join the ELF closure).

    `os.pyc` beside where `os.py` would be: Python 3.11+ accepts it as the stdlib
    landmark and imports it without a source. Tracebacks keep file and line; the
    sources would add 0.5 MB to the single file.
    """
    jobs = []
    modules = scan_python_modules(python, gateway, recipe)
    for file in sorted(modules):
        if file.endswith(".py"):
            parent = stage.add_host_path(os.path.dirname(file))
            inroot = f"{parent}/{os.path.basename(file)}"
            jobs.append((file, str(stage.root / (inroot.lstrip("/") + "c")), inroot))
        else:
            stage.add_host_path(file)
    compile_pycs(python, jobs)
    return len(modules)


def prepare_gateway_tree(dest: Path, python: str, recipe: Recipe) -> Path:
    """payload/gateway plus the pure-Python packages the recipe vendors into it
    (their .py files only, from the wheel for the target interpreter's ABI)."""
    section = recipe.section("gateway")
    shutil.copytree(PAYLOAD / section["source"], dest, ignore=shutil.ignore_patterns("__pycache__"))
    abi = python_tag(python).removeprefix("cpython-")
    pins = pinned_requirements("gateway")
    for dist, modules in sorted(section.get("vendor", {}).items()):
        if dist not in pins:
            raise BuildError(f"recipe vendors {dist} but pyproject's gateway extra does not pin it")
        with zipfile.ZipFile(fetch_wheel(dist, pins[dist], abi, os.uname().machine)) as whl:
            for member in sorted(whl.namelist()):
                if member.split("/", 1)[0] in modules and member.endswith(".py"):
                    target = dest / member
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(whl.read(member))
    return dest


def build_gateway_pyz(stage: Stage, python: str, recipe: Recipe, source: Path) -> None:
    """Pack the gateway tree into a deterministic zip with precompiled pycs."""
    install = recipe.section("gateway")["install"]
    with tempfile.TemporaryDirectory() as tmp:
        sources = sorted(p for p in source.rglob("*.py") if "__pycache__" not in p.parts)
        jobs = []
        for src in sources:
            rel = src.relative_to(source).as_posix()
            pyc = Path(tmp) / (rel[:-3] + ".pyc")
            pyc.parent.mkdir(parents=True, exist_ok=True)
            jobs.append((str(src), str(pyc), f"{install}/{rel}"))
        compile_pycs(python, jobs)
        entries = [(src.relative_to(source).as_posix(), src.read_bytes()) for src in sources]
        entries += [(Path(j[1]).relative_to(tmp).as_posix(), Path(j[1]).read_bytes()) for j in jobs]
        buf = io.BytesIO()
        write_zip(buf, entries)
        stage.write(install, buf.getvalue(), 0o644)


# --------------------------------------------------------------------------- assemble


def assemble_host_rootfs(root: Path, recipe: Recipe) -> dict:
    """Build the rootfs in `root` from this machine's binaries. Returns build facts."""
    stage = Stage(root)
    static = recipe.section("static")
    for name in static.get("etc", []):
        src = PAYLOAD / "etc" / name
        if not src.is_file():
            raise BuildError(f"missing static file payload/etc/{name}")
        stage.write(f"/etc/{name}", src.read_bytes(), 0o644)
    for inroot, spec in recipe.section("mountpoints").items():
        if spec["kind"] == "dir":
            stage.mkdirs(inroot)
            os.chmod(stage.root / inroot.lstrip("/"), spec["mode"])
        else:
            stage.write(inroot, b"", spec["mode"])
    for role, host_path in recipe.section("executables").items():
        if not os.path.exists(host_path):
            raise BuildError(f"missing executable for role {role!r}: {host_path}")
        stage.add_host_path(host_path)
    for inroot, host_path in recipe.data.get("files", {}).items():
        if not os.path.isfile(host_path):
            raise BuildError(f"missing data file {host_path} (for {inroot})")
        stage.write(inroot, Path(host_path).read_bytes(), 0o644)
    python = recipe.section("executables")[recipe.section("python")["interpreter"]]
    with tempfile.TemporaryDirectory() as tmp:
        gateway = prepare_gateway_tree(Path(tmp) / "gateway", python, recipe)
        modules = add_python(stage, python, recipe, gateway)
        build_gateway_pyz(stage, python, recipe, gateway)
    search = recipe.section("elf")["search"]
    elves = stage.add_elf_closure(search)
    stage.relativize_symlinks()
    return {"python_modules": modules, "elf_files": elves}


def check_rootfs(root: Path, recipe: Recipe) -> None:
    """Refuse a rootfs that misses a required path or contains a forbidden name."""
    for inroot in recipe.required:
        if resolve_in_root(root, inroot) is None:
            raise BuildError(f"rootfs {root} lacks required path {inroot}")
    forbidden = recipe.forbidden
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if name in forbidden and not os.path.isdir(os.path.join(dirpath, name)):
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                raise BuildError(f"rootfs contains forbidden file /{rel}")


# --------------------------------------------------------------------------- tar


def walk_sorted(root: Path, rel: str = "") -> Iterator[str]:
    """Relative paths under root, depth first: a directory, then its contents in byte order."""
    for name in sorted(os.listdir(root / rel if rel else root)):
        child = f"{rel}/{name}" if rel else name
        yield child
        if (root / child).is_dir() and not (root / child).is_symlink():
            yield from walk_sorted(root, child)


def write_tar(root: Path, mtime: int) -> tuple[bytes, int]:
    """A deterministic tar of `root`: sorted, uid/gid 0, no names, fixed mtime,
    no setuid/setgid, hardlinks as links. Returns (tar bytes, member count)."""
    buf = io.BytesIO()
    seen: dict[tuple[int, int], str] = {}
    count = 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in walk_sorted(root):
            path = root / rel
            st = os.lstat(path)
            info = tarfile.TarInfo(rel)
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = stat.S_IMODE(st.st_mode) & ~0o6000
            data = None
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
            elif stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
                info.mode = 0o777
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in seen:
                    info.type = tarfile.LNKTYPE
                    info.linkname = seen[key]
                else:
                    seen[key] = rel
                    info.size = st.st_size
                    data = open(path, "rb")  # noqa: SIM115 - closed below
            else:
                raise BuildError(f"unsupported file type in rootfs: /{rel}")
            try:
                tar.addfile(info, data)
            finally:
                if data:
                    data.close()
            count += 1
    return buf.getvalue(), count


def compress(data: bytes, level: int) -> bytes:
    """zstd with explicit parameters, so the output depends only on the input and level."""
    import zstandard

    params = zstandard.ZstdCompressionParameters.from_level(
        level,
        window_log=ZSTD_WINDOW_LOG,
        threads=ZSTD_THREADS,
        write_checksum=True,
        write_content_size=True,
        write_dict_id=False,
    )
    return zstandard.ZstdCompressor(compression_params=params).compress(data)


# --------------------------------------------------------------------------- zipapp


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


def pinned_requirements(extra: str | None = None) -> dict[str, str]:
    """name -> version of the launcher's runtime deps (or of an extra), from pyproject.toml."""
    with open(HERE / "pyproject.toml", "rb") as fh:
        project = tomllib.load(fh)["project"]
    deps = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return dict(d.split("==", 1) for d in deps)


def fetch_wheel(name: str, version: str, abi: str | None, machine: str) -> Path:
    """A wheel from the local cache, downloaded with pip on first use."""
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    stem = name.lower().replace("-", "_")  # wheel file names use the normalized name
    pattern = f"{stem}-{version}-" + (f"cp{abi}-cp{abi}-*{machine}*.whl" if abi else "py3-*.whl")
    hits = sorted(WHEEL_CACHE.glob(pattern))
    if hits:
        return hits[0]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    cmd += ["-d", str(WHEEL_CACHE), f"{name}=={version}"]
    if abi:
        cmd += ["--python-version", abi, "--implementation", "cp", "--abi", f"cp{abi}"]
        cmd += ["--platform", f"manylinux2014_{machine}", "--platform", f"manylinux_2_17_{machine}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    hits = sorted(WHEEL_CACHE.glob(pattern))
    if proc.returncode != 0 or not hits:
        raise BuildError(
            f"cannot fetch wheel {name}=={version} (cp{abi or '-'}, {machine}): "
            f"{proc.stderr.strip().splitlines()[-1:] or 'no match'}"
        )
    return hits[0]


def strip_so(data: bytes) -> bytes:
    """Strip a shared object's symbols (binutils), deterministically."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mod.so"
        path.write_bytes(data)
        subprocess.run(["strip", "--strip-unneeded", str(path)], check=True)
        return path.read_bytes()


def vendor_entries(machine: str) -> list[tuple[str, bytes]]:
    """_vendor/zstandard: the package init and its C module for each CPython ABI, stripped.

    The launcher's only third-party code. A C extension cannot be imported from a
    zip: the launcher extracts the one matching its interpreter into the cache.
    """
    entries: list[tuple[str, bytes]] = []
    version = pinned_requirements()["zstandard"]
    for abi in VENDOR_ABIS:
        with zipfile.ZipFile(fetch_wheel("zstandard", version, abi, machine)) as whl:
            for member in whl.namelist():
                base = member.rsplit("/", 1)[-1]
                if member == "zstandard/__init__.py" or base.startswith("backend_c."):
                    data = whl.read(member)
                    if base.endswith(".so"):
                        data = strip_so(data)
                    entries.append((f"_vendor/{member}", data))
    return sorted(dict(entries).items())


LAUNCHER_MAIN = (HERE / "launcher" / "bootstrap.py").read_text()


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


# --------------------------------------------------------------------------- manifest


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH, else the last commit time, else an error."""
    if "SOURCE_DATE_EPOCH" in os.environ:
        return int(os.environ["SOURCE_DATE_EPOCH"])
    proc = subprocess.run(
        ["git", "-C", str(HERE), "log", "-1", "--format=%ct"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode == 0 and proc.stdout.strip():
        return int(proc.stdout.strip())
    raise BuildError("no SOURCE_DATE_EPOCH and no git history: set SOURCE_DATE_EPOCH")


def project_version() -> str:
    with open(HERE / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]["version"]


def lookup_user(name: str) -> tuple[int, int]:
    """uid/gid of a user from payload/etc/passwd."""
    for line in (PAYLOAD / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2]), int(fields[3])
    raise BuildError(f"user {name!r} is not in payload/etc/passwd")


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
    return dict(validate(manifest))


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


# --------------------------------------------------------------------------- main


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
