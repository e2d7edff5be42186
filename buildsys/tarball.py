"""Deterministic tar of a rootfs, and its zstd compression with fixed parameters."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path

from buildsys.recipe import BuildError, Recipe, lookup_user

ZSTD_WINDOW_LOG = 24  # 16 MiB: 5% smaller than 8 MiB, 8 MiB more decoder memory; cap is 2**25
ZSTD_THREADS = 2  # fixed: zstd output is identical for any fixed worker count >= 1


def walk_sorted(root: Path, rel: str = "") -> Iterator[str]:
    """Relative paths under root, depth first: a directory, then its contents in byte order."""
    for name in sorted(os.listdir(root / rel if rel else root)):
        child = f"{rel}/{name}" if rel else name
        yield child
        if (root / child).is_dir() and not (root / child).is_symlink():
            yield from walk_sorted(root, child)


def write_tar(
    root: Path, mtime: int, owners: dict[str, tuple[int, int, int]] | None = None
) -> tuple[bytes, int]:
    """A deterministic tar of `root`: sorted, uid/gid 0, no names, fixed mtime,
    no setuid/setgid, hardlinks as links. Returns (tar bytes, member count).

    `owners` gives single members another (uid, gid, mode): the state dir belongs to
    the gateway's user in the layer, so that a container tool's fresh volume on it is
    writable by that user (the launcher's extractor ignores owners)."""
    owners = owners or {}
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
            if rel in owners:
                info.uid, info.gid, info.mode = owners[rel]
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


def state_owner(recipe: Recipe) -> dict[str, tuple[int, int, int]]:
    """The state mount point as the process user's, 0700 (see write_tar's `owners`)."""
    user = lookup_user(recipe.section("process")["user"])
    return {
        m["destination"].lstrip("/"): (*user, 0o700)
        for m in recipe.data.get("mounts", [])
        if m.get("role") == "state"
    }


def unpacked_mode(kind: str, mode: int) -> int:
    """The permission bits the launcher gives an entry when it unpacks
    (launcher/cache/extract.py: files owner-readable, no setuid/setgid or group/other
    write; directories owner rwx, world-writable only with the sticky bit).
    tests/test_release.py holds the two equal by comparing this list with the one a
    real unpack writes."""
    if kind == "dir":
        return (mode & 0o1777) | 0o700 if mode & 0o1000 else (mode & 0o755) | 0o700
    if kind == "symlink":
        return 0
    return (mode & 0o755) | 0o400


def files_list(tar: bytes) -> bytes:
    """files.tsv of a tar: `kind mode(octal) size sha256-or-target path`, tab-separated,
    one line per member in tar order; the format the launcher writes at unpack time."""
    lines: list[str] = []
    files: dict[str, tuple[int, int, str]] = {}
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as tf:
        for member in tf:
            if member.isreg():
                data = tf.extractfile(member)
                assert data is not None
                mode = unpacked_mode("file", member.mode)
                info = files[member.name] = (mode, member.size, sha256(data.read()).hexdigest())
                kind = "file"
            elif member.islnk():
                info, kind = files[member.linkname], "hardlink"
            elif member.issym():
                info, kind = (0, 0, member.linkname), "symlink"
            elif member.isdir():
                info, kind = (unpacked_mode("dir", member.mode), 0, ""), "dir"
            else:
                raise BuildError(f"unsupported member type in the tar: {member.name}")
            mode, size, digest = info
            lines.append(f"{kind}\t{mode:o}\t{size}\t{digest}\t{member.name}\n")
    return "".join(lines).encode("utf-8", "surrogateescape")
