"""Deterministic tar of a rootfs, and its zstd compression with fixed parameters."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

from buildsys.recipe import BuildError

ZSTD_WINDOW_LOG = 24  # 16 MiB: 5% smaller than 8 MiB, 8 MiB more decoder memory; cap is 2**25
ZSTD_THREADS = 2  # fixed: zstd output is identical for any fixed worker count >= 1


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
