#!/usr/bin/env python3
"""The extractor alone, on the real payload: tarfile's stream mode (how the launcher read
the payload before launcher.cache.tarstream) against our reader, with and without the
read-ahead thread and per-file hashing, and `zstd -dc | tar -x`. Medians of one run.

    python3 bench/extractor.py [--quick] [--app dist/auto-review]

Every case decompresses the same .tar.zst with python-zstandard and writes the same
tree; nothing is synced (the cold path's syncfs is measured by bench/run.py).
"""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from measure import bench_arguments  # noqa: E402  (bench/ is this script's directory)

from launcher.cache import tree  # noqa: E402
from launcher.cache.extract import Limits, extract_tar_stream  # noqa: E402
from launcher.cache.readahead import ReadAhead  # noqa: E402

LIMITS = Limits(max_members=200_000, max_file_size=8 << 30, max_total_size=8 << 30)
WINDOW = 1 << 25


def decoder(raw) -> zstandard.ZstdDecompressionReader:
    dctx = zstandard.ZstdDecompressor(max_window_size=WINDOW)
    return dctx.stream_reader(raw, read_size=1 << 20, read_across_frames=False)


def tarfile_extract(payload: Path, dest: Path) -> None:
    """What the extractor did with tarfile: stream mode over a buffered decoder, files
    created relative to a dir fd with O_EXCL, 1 MiB readinto, a sha256 per file."""
    import io

    root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    links: list[tarfile.TarInfo] = []
    try:
        with open(payload, "rb") as raw:
            stream = io.BufferedReader(decoder(raw), 1 << 20)  # type: ignore[arg-type]
            with tarfile.open(fileobj=stream, mode="r|", encoding="utf-8") as tf:
                for m in tf:
                    name = m.name[2:] if m.name.startswith("./") else m.name
                    if m.isdir():
                        if name not in (".", ""):
                            os.makedirs(os.path.join(dest, name), 0o755, exist_ok=True)
                    elif m.isreg():
                        os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
                        source = tf.extractfile(m)
                        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=root)
                        digest = hashlib.sha256()
                        try:
                            while n := source.readinto(view):  # type: ignore[union-attr]
                                digest.update(view[:n])
                                os.write(fd, view[:n])
                            os.fchmod(fd, (m.mode & 0o755) | 0o400)
                        finally:
                            os.close(fd)
                    else:
                        links.append(m)
        for m in links:
            name = m.name[2:] if m.name.startswith("./") else m.name
            if m.issym():
                os.symlink(m.linkname, name, dir_fd=root)
            elif m.islnk():
                target = m.linkname[2:] if m.linkname.startswith("./") else m.linkname
                os.link(target, name, src_dir_fd=root, dst_dir_fd=root)
    finally:
        os.close(root)


def ours(payload: Path, dest: Path, *, ahead: bool, hash_files: bool = True) -> None:
    with open(payload, "rb") as raw:
        reader = decoder(raw)
        if not ahead:
            extract_tar_stream(reader, str(dest), LIMITS, hash_files=hash_files)  # type: ignore[arg-type]
            return
        with ReadAhead(reader) as chunks:
            extract_tar_stream(chunks, str(dest), LIMITS, hash_files=hash_files)  # type: ignore[arg-type]


def gnu_tar(payload: Path, dest: Path) -> None:
    subprocess.run(f"zstd -dc {payload} | tar -x -C {dest}", shell=True, check=True)


def timed(fn: Callable[[Path], None], base: Path, rounds: int) -> list[float]:
    out = []
    for i in range(rounds):
        dest = base / f"d{i}"
        dest.mkdir()
        started = time.perf_counter()
        fn(dest)
        out.append(time.perf_counter() - started)
        tree.remove_tree(str(dest))
    return out


def main() -> int:
    args, rounds = bench_arguments(__doc__)
    with tempfile.TemporaryDirectory(prefix="ar-bench-x-") as tmp:
        base = Path(tmp)
        payload = base / "rootfs.tar.zst"
        with zipfile.ZipFile(args.app) as zf:
            payload.write_bytes(zf.read("bundle/rootfs.tar.zst"))
        cases: list[tuple[str, Callable[[Path], None]]] = [
            ("tarfile `r\\|` (before)", lambda d: tarfile_extract(payload, d)),
            ("tarstream, one thread", lambda d: ours(payload, d, ahead=False)),
            ("tarstream + read-ahead thread", lambda d: ours(payload, d, ahead=True)),
            (
                "tarstream + read-ahead, no file hashes",
                lambda d: ours(payload, d, ahead=True, hash_files=False),
            ),
            ("`zstd -dc | tar -x`", lambda d: gnu_tar(payload, d)),
        ]
        # Interleaved rounds, so that a busy neighbour slows every case alike.
        samples: dict[str, list[float]] = {name: [] for name, _ in cases}
        for _ in range(rounds):
            for name, fn in cases:
                samples[name] += timed(fn, base, 1)
    before = statistics.median(samples[cases[0][0]])
    tar = statistics.median(samples[cases[-1][0]])
    with zipfile.ZipFile(args.app) as zf:
        size = zf.getinfo("bundle/rootfs.tar.zst").file_size
    print(
        f"extractor alone, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, payload"
        f" {size / 1e6:.1f} MB zstd, {rounds} rounds, median (min-max)\n"
    )
    print("| case | time | vs tarfile | vs `zstd -dc \\| tar -x` |")
    print("| --- | --- | --- | --- |")
    for name, _ in cases:
        s = samples[name]
        med = statistics.median(s)
        cell = f"{med * 1000:.1f} ms ({min(s) * 1000:.1f}-{max(s) * 1000:.1f})"
        print(f"| {name} | {cell} | {med / before:.2f}x | {med / tar:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
